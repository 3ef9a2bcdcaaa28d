"""The policy manifest: what a policy version consumes and produces (BRIEF §5).

`manifest.json` is the contract between a trainer and the policy node. The node wires its
subscriptions from `inputs` (semantic kind + source topic), builds the family's runtime
from `family` and `graphs`, and interprets the runtime's output with `outputs`. The store
checks it twice: structurally (`validate_manifest`) and against the robot it will drive
(`check_against_profile`).

Schema version 1 (see docs/STORE.md for an example):

- `schema_version` (int, 1), `name` (str), `version` (str of digits; both set by the store)
- `family` (str): the runtime is `dexstack.policies.<family>.runtime.Runtime`
- `robot_profile` (str): a name in `dexstack.hardware.profiles.PROFILES`
- `graphs` ({role: file}): ONNX graphs in the version directory, e.g. {"policy": "policy.onnx"}
- `inputs` (list): each {name, kind, source, shape, dtype, [names], [normalization]}; `name`
  is the observation key the runtime reads
- `outputs`: {kind: "joint_position_chunk", joint_names, chunk_length, dt (s), [normalization]}
- `files` ({relative path: sha256 hex}): every file but manifest.json (set by the store)
- `provenance`: {code_commit, created (ISO-8601), [dataset_hash], [config], [training_time_s], ...}
- `evaluation` (dict): evaluation results, free-form
- `runtime` (dict, optional): family-specific serving settings (e.g. sampler steps)

Family "gpayn" (an actor whose action the serving side turns into joint targets,
`policies/gpayn/serving.py`) additionally has:
- input kind `vector`: {name, kind: "vector", source, shape: [n], dtype (float), read, ...}
  where `read` says how the vector is made from what the robot publishes:
  `joint_positions` (from /joint_states, with `names`, n = len(names)); `tactile` (the pads'
  WrenchStamped topics `<source>/<pad>`, with `pads` and `layout` "flags_and_forces" (n = 2 x
  pads: contact flags, then normal forces in N) or "forces" (n = pads)); `palm_pose` (n = 7,
  position m + quaternion wxyz of the palm frame, forward kinematics of /joint_states);
  `grasp_position` / `grasp_position_in_palm` (n = 3, the grasp target's position in the world
  / palm frame) and `grasp_pose` (n = 7), from /grasp/target_pose.
- rgb inputs may say `preprocess: "center_crop_resize"`: the camera's image is cropped about
  its centre to the input's aspect ratio and resized to the input's size (a policy trained on
  square renders of a 4:3 camera), so the shape may be smaller than the camera's.
- output kind `action`: {kind: "action", action_dim, dt (s: what one action step lasts),
  [names], [scales] (physical size of each element at +-1), [range] ([low, high])}; names and
  scales may be null (the serving side's defaults).
Other families keep the kinds above; a gpayn-only kind in their manifest is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from dexstack import contract

if TYPE_CHECKING:  # only for the annotation; profiles pull in numpy, which is fine but unneeded here
    from dexstack.hardware.profiles import RobotProfile

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"

INPUT_KINDS = ("joint_positions", "rgb", "depth")
OUTPUT_KINDS = ("joint_position_chunk",)
# Families whose serving side knows more kinds than the joint-chunk families (module docstring).
FAMILY_INPUT_KINDS: dict[str, tuple[str, ...]] = {"gpayn": (*INPUT_KINDS, "vector")}
FAMILY_OUTPUT_KINDS: dict[str, tuple[str, ...]] = {"gpayn": ("action",)}
# Vector reads: {read: fixed length, or None when `names` / `pads` give it}.
VECTOR_READS: dict[str, int | None] = {
    "joint_positions": None, "tactile": None, "palm_pose": 7,
    "grasp_position": 3, "grasp_position_in_palm": 3, "grasp_pose": 7,
}
TACTILE_LAYOUTS = ("flags_and_forces", "forces")
RGB_PREPROCESS = ("none", "center_crop_resize")
PREPROCESS_FAMILIES = ("gpayn",)  # families whose serving side implements `preprocess`
DTYPES = ("float32", "float64", "uint8", "uint16", "int32", "int64")
NORMALIZATION_TYPES = ("none", "mean_std", "min_max", "scale")

REQUIRED_KEYS = ("schema_version", "name", "version", "family", "robot_profile", "graphs", "inputs", "outputs",
                 "files", "provenance", "evaluation")
OPTIONAL_KEYS = ("runtime",)

# Policy names end up as directory names and in "NAME@VERSION" refs: keep them path- and ref-safe.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VERSION_RE = re.compile(r"^[1-9][0-9]*$")
FAMILY_RE = re.compile(r"^[a-z_][a-z0-9_]*$")  # a Python module name under dexstack.policies
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that is malformed or does not fit the robot; the message names the field."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read `manifest.json` (or a version directory containing one) without validating it."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: top level must be a JSON object, got {type(manifest).__name__}")
    return manifest


# --- structural validation ----------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ManifestError(message)


def _str_field(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    _require(isinstance(value, str) and value != "", f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _name_list(value: Any, where: str) -> list[str]:
    _require(isinstance(value, list) and len(value) > 0, f"{where} must be a non-empty list of strings")
    for i, item in enumerate(value):
        _require(isinstance(item, str) and item != "", f"{where}[{i}] must be a non-empty string, got {item!r}")
    duplicates = sorted({n for n in value if value.count(n) > 1})
    _require(not duplicates, f"{where} has duplicate entries: {duplicates}")
    return value


def _number_list(value: Any, length: int, where: str) -> list[float]:
    _require(isinstance(value, list) and all(_is_number(v) for v in value),
             f"{where} must be a list of finite numbers")
    _require(len(value) == length, f"{where} has {len(value)} entries, expected {length}")
    return value


def _check_relative_path(path: Any, where: str) -> None:
    _require(isinstance(path, str) and path != "", f"{where} must be a non-empty relative path, got {path!r}")
    pure = PurePosixPath(path)
    _require(not pure.is_absolute() and ".." not in pure.parts and "\\" not in path and str(pure) == path,
             f"{where}: {path!r} must be a plain relative path inside the version directory")
    _require(path != MANIFEST_FILE, f"{where}: {MANIFEST_FILE} cannot list itself")


def _check_normalization(norm: Any, width: int, where: str) -> None:
    """`width`: number of features along the last axis (stats are per feature or scalar)."""
    _require(isinstance(norm, dict), f"{where} must be an object")
    kind = norm.get("type")
    _require(kind in NORMALIZATION_TYPES, f"{where}.type is {kind!r}; expected one of {list(NORMALIZATION_TYPES)}")

    def stats(key: str) -> list[float] | float:
        _require(key in norm, f"{where}: type {kind!r} needs {key!r}")
        value = norm[key]
        if _is_number(value):
            return value
        return _number_list(value, width, f"{where}.{key}")

    if kind == "mean_std":
        stats("mean")
        std = stats("std")
        _require(all(s > 0 for s in (std if isinstance(std, list) else [std])), f"{where}.std must be > 0")
    elif kind == "min_max":
        low, high = stats("min"), stats("max")
        lows = low if isinstance(low, list) else [low] * width
        highs = high if isinstance(high, list) else [high] * width
        _require(all(h > lo for lo, h in zip(lows, highs, strict=True)), f"{where}: max must exceed min")
    elif kind == "scale":
        scale = stats("scale")
        _require(all(s != 0 for s in (scale if isinstance(scale, list) else [scale])), f"{where}.scale must be != 0")
        if "offset" in norm:
            stats("offset")


def _check_vector(spec: dict, shape: list[int], dtype: str, where: str) -> None:
    """A gpayn `vector` input: 1-D float and a known `read` whose fields fit the length."""
    _require(len(shape) == 1, f"{where}.shape must be [n] for kind 'vector', got {shape}")
    _require(dtype.startswith("float"), f"{where}.dtype must be a float type for kind 'vector', got {dtype!r}")
    read = spec.get("read")
    _require(read in VECTOR_READS, f"{where}.read is {read!r}; expected one of {list(VECTOR_READS)} "
             "(how the vector is made from the robot's topics)")
    n = shape[0]
    if read == "joint_positions":
        names = _name_list(spec.get("names"), f"{where}.names")
        _require(len(names) == n, f"{where}: {len(names)} names but shape {shape}")
    elif read == "tactile":
        pads = _name_list(spec.get("pads"), f"{where}.pads")
        layout = spec.get("layout")
        _require(layout in TACTILE_LAYOUTS, f"{where}.layout is {layout!r}; expected one of {list(TACTILE_LAYOUTS)}")
        expected = 2 * len(pads) if layout == "flags_and_forces" else len(pads)
        _require(n == expected, f"{where}: layout {layout!r} of {len(pads)} pads has {expected} values, shape is {shape}")
    else:
        _require(n == VECTOR_READS[read], f"{where}: read {read!r} has {VECTOR_READS[read]} values, shape is {shape}")


def _check_input(spec: Any, where: str, family: str = "") -> None:
    _require(isinstance(spec, dict), f"{where} must be an object")
    name = _str_field(spec, "name", where)
    where = f"{where} ({name!r})"
    kind = spec.get("kind")
    kinds = FAMILY_INPUT_KINDS.get(family, INPUT_KINDS)
    _require(kind in kinds, f"{where}.kind is {kind!r}; expected one of {list(kinds)}")
    source = _str_field(spec, "source", where)
    _require(source.startswith("/"), f"{where}.source must be an absolute topic name, got {source!r}")
    shape = spec.get("shape")
    _require(isinstance(shape, list) and len(shape) > 0 and all(_is_int(d) and d > 0 for d in shape),
             f"{where}.shape must be a non-empty list of positive integers, got {shape!r}")
    dtype = spec.get("dtype")
    _require(dtype in DTYPES, f"{where}.dtype is {dtype!r}; expected one of {list(DTYPES)}")

    if kind == "joint_positions":
        _require(len(shape) == 1, f"{where}.shape must be [n_joints] for kind 'joint_positions', got {shape}")
        names = _name_list(spec.get("names"), f"{where}.names")
        _require(len(names) == shape[0], f"{where}: {len(names)} names but shape {shape}")
        _require(dtype.startswith("float"), f"{where}.dtype must be a float type for joint positions, got {dtype!r}")
    elif kind == "rgb":
        _require(len(shape) == 3 and shape[2] == 3, f"{where}.shape must be [height, width, 3] for kind 'rgb', got {shape}")
        _require(dtype == "uint8", f"{where}.dtype must be 'uint8' for kind 'rgb', got {dtype!r}")
    elif kind == "depth":
        _require(len(shape) == 2 or (len(shape) == 3 and shape[2] == 1),
                 f"{where}.shape must be [height, width] or [height, width, 1] for kind 'depth', got {shape}")
        # Observations carry depth in metres as float32 (contract); uint16 mm only if the graph wants raw.
        _require(dtype in ("float32", "uint16"), f"{where}.dtype must be 'float32' (m) or 'uint16' (mm) for depth")
    elif kind == "vector":
        _check_vector(spec, shape, dtype, where)
    if "preprocess" in spec:
        preprocess = spec["preprocess"]
        _require(kind == "rgb" and preprocess in RGB_PREPROCESS,
                 f"{where}.preprocess is {preprocess!r}; only rgb inputs take one of {list(RGB_PREPROCESS)}")
        _require(preprocess == "none" or family in PREPROCESS_FAMILIES,
                 f"{where}.preprocess {preprocess!r} is only served for families {list(PREPROCESS_FAMILIES)}")
    if "names" in spec and kind not in ("joint_positions", "vector"):
        _name_list(spec["names"], f"{where}.names")
    if "normalization" in spec:
        width = shape[-1] if kind != "depth" else 1
        _check_normalization(spec["normalization"], width, f"{where}.normalization")


def _check_action_output(out: dict) -> None:
    """outputs of kind 'action': one action vector per step, turned into commands by the serving side."""
    dim = out.get("action_dim")
    _require(_is_int(dim) and dim > 0, f"outputs.action_dim must be a positive integer, got {dim!r}")
    dt = out.get("dt")
    _require(_is_number(dt) and dt > 0, f"outputs.dt must be a positive number of seconds, got {dt!r}")
    if out.get("names") is not None:
        names = _name_list(out["names"], "outputs.names")
        _require(len(names) == dim, f"outputs.names has {len(names)} entries, action_dim is {dim}")
    if out.get("scales") is not None:
        scales = _number_list(out["scales"], dim, "outputs.scales")
        _require(all(s > 0 for s in scales), f"outputs.scales must all be > 0, got {scales}")
    if out.get("range") is not None:
        low, high = _number_list(out["range"], 2, "outputs.range")
        _require(high > low, f"outputs.range must be [low, high] with high > low, got {out['range']}")


def _check_outputs(out: Any, family: str = "") -> None:
    where = "outputs"
    _require(isinstance(out, dict), "outputs must be an object")
    kind = out.get("kind")
    kinds = FAMILY_OUTPUT_KINDS.get(family, OUTPUT_KINDS)
    _require(kind in kinds, f"outputs.kind is {kind!r}; expected one of {list(kinds)}")
    if kind == "action":
        _check_action_output(out)
        return
    names = _name_list(out.get("joint_names"), "outputs.joint_names")
    chunk = out.get("chunk_length")
    _require(_is_int(chunk) and chunk > 0, f"outputs.chunk_length must be a positive integer, got {chunk!r}")
    dt = out.get("dt")
    _require(_is_number(dt) and dt > 0, f"outputs.dt must be a positive number of seconds, got {dt!r}")
    if "normalization" in out:
        _check_normalization(out["normalization"], len(names), f"{where}.normalization")


def _check_provenance(prov: Any) -> None:
    _require(isinstance(prov, dict), "provenance must be an object")
    _str_field(prov, "code_commit", "provenance")
    created = _str_field(prov, "created", "provenance")
    try:
        _dt.datetime.fromisoformat(created)
    except ValueError:
        raise ManifestError(f"provenance.created must be an ISO-8601 time, got {created!r}") from None
    if "dataset_hash" in prov:
        _require(isinstance(prov["dataset_hash"], str), "provenance.dataset_hash must be a string")
    if "config" in prov:
        _require(isinstance(prov["config"], dict), "provenance.config must be an object")
    if "training_time_s" in prov:
        t = prov["training_time_s"]
        _require(_is_number(t) and t >= 0, f"provenance.training_time_s must be a number >= 0, got {t!r}")


def validate_manifest(m: dict[str, Any]) -> None:
    """Check a complete (stored) manifest's structure, types, kinds and shapes.

    Raises ManifestError naming the offending field. Extra keys inside an input or the
    outputs are allowed (family-specific annotations); unknown top-level keys are not, so
    a misspelt field is caught instead of silently ignored.
    """
    _require(isinstance(m, dict), f"manifest must be a JSON object, got {type(m).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in m]
    _require(not missing, f"manifest lacks required field(s): {missing}")
    unknown = sorted(set(m) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    _require(not unknown, f"manifest has unknown field(s) {unknown}; known: {list(REQUIRED_KEYS + OPTIONAL_KEYS)}"
             " (family-specific settings go under 'runtime')")

    sv = m["schema_version"]
    _require(_is_int(sv), f"schema_version must be an integer, got {sv!r}")
    _require(sv == SCHEMA_VERSION, f"schema_version {sv} is not supported (this dexstack reads {SCHEMA_VERSION})")
    name = m["name"]
    _require(isinstance(name, str) and NAME_RE.match(name) is not None,
             f"name must match {NAME_RE.pattern} (letters, digits, '_', '.', '-'), got {name!r}")
    version = m["version"]
    _require(isinstance(version, str) and VERSION_RE.match(version) is not None,
             f"version must be a string of digits like \"3\", got {version!r}")
    family = m["family"]
    _require(isinstance(family, str) and FAMILY_RE.match(family) is not None,
             f"family must be a lower-case module name like 'bc', got {family!r}")
    _str_field(m, "robot_profile", "manifest")

    files = m["files"]
    _require(isinstance(files, dict), "files must be an object {relative path: sha256}")
    for path, digest in files.items():
        _check_relative_path(path, f"files[{path!r}]")
        _require(isinstance(digest, str) and SHA256_RE.match(digest) is not None,
                 f"files[{path!r}] must be a lower-case sha256 hex digest, got {digest!r}")

    graphs = m["graphs"]
    _require(isinstance(graphs, dict) and len(graphs) > 0, "graphs must be a non-empty object {role: file}")
    for role, path in graphs.items():
        _check_relative_path(path, f"graphs[{role!r}]")
        _require(path in files, f"graphs[{role!r}] = {path!r} is not listed in files")

    inputs = m["inputs"]
    _require(isinstance(inputs, list) and len(inputs) > 0, "inputs must be a non-empty list")
    for i, spec in enumerate(inputs):
        _check_input(spec, f"inputs[{i}]", family)
    names = [spec["name"] for spec in inputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    _require(not duplicates, f"inputs have duplicate names: {duplicates}")

    _check_outputs(m["outputs"], family)
    _check_provenance(m["provenance"])
    _require(isinstance(m["evaluation"], dict), "evaluation must be an object")
    if "runtime" in m:
        _require(isinstance(m["runtime"], dict), "runtime must be an object")


# --- fit to a robot -----------------------------------------------------------------------

def _camera_of(source: str, topic_for: Any, cameras: tuple[str, ...]) -> str | None:
    for cam in cameras:
        if topic_for(cam) == source:
            return cam
    return None


def check_against_profile(m: dict[str, Any], profile: RobotProfile) -> None:
    """Check that a (validated) manifest fits `profile`: same robot, the same joints as
    outputs, known joint names in inputs, and input sources the robot publishes with the
    image size its cameras produce. Raises ManifestError."""
    if m["robot_profile"] != profile.name:
        raise ManifestError(f"policy is for robot profile {m['robot_profile']!r}, not {profile.name!r}")
    if m["outputs"]["kind"] == "action":
        # Actions name no joints: the serving side turns each into a command for every joint.
        _check_inputs_against_profile(m, profile)
        return
    joints = list(profile.joint_names)
    joint_list = ", ".join(joints)

    out_names = m["outputs"]["joint_names"]
    for name in out_names:
        if name not in joints:
            raise ManifestError(f"output joint {name!r} is not a joint of robot profile {profile.name!r} "
                                f"(joints: {joint_list})")
    missing = [j for j in joints if j not in out_names]
    if missing:
        raise ManifestError(f"outputs.joint_names lack joint(s) {missing} of robot profile {profile.name!r}: a chunk "
                            "must command every joint")
    _check_inputs_against_profile(m, profile)


def _check_vector_source(spec: dict[str, Any], profile: RobotProfile, where: str) -> None:
    read, source = spec["read"], spec["source"]
    if read in ("joint_positions", "palm_pose"):
        if source != contract.JOINT_STATES:
            raise ManifestError(f"{where}: read {read!r} comes from {contract.JOINT_STATES!r}, not {source!r}")
        unknown = [n for n in spec.get("names", []) if n not in profile.joint_names]
        if unknown:
            raise ManifestError(f"{where}: joint(s) {unknown} are not joints of robot profile {profile.name!r} "
                                f"(joints: {', '.join(profile.joint_names)})")
    elif read == "tactile":
        unknown = [p for p in spec["pads"] if p not in profile.tactile_pads]
        if unknown:
            raise ManifestError(f"{where}: pad(s) {unknown} are not tactile pads of robot profile {profile.name!r} "
                                f"(pads: {list(profile.tactile_pads)})")
        wrong = [p for p in spec["pads"] if f"{source}/{p}" != contract.tactile_topic(p)]
        if wrong:
            raise ManifestError(f"{where}: tactile source {source!r} does not prefix the pad topics "
                                f"{[contract.tactile_topic(p) for p in wrong]}")
    elif source != contract.GRASP_TARGET_POSE:  # the grasp reads
        raise ManifestError(f"{where}: read {read!r} comes from {contract.GRASP_TARGET_POSE!r}, not {source!r}")


def _check_inputs_against_profile(m: dict[str, Any], profile: RobotProfile) -> None:
    joints = list(profile.joint_names)
    joint_list = ", ".join(joints)
    provided = {t.name for t in profile.topics()}
    cams = profile.camera_names
    for spec in m["inputs"]:
        where = f"input {spec['name']!r}"
        for name in spec.get("names", []):
            if spec["kind"] == "joint_positions" and name not in joints:
                raise ManifestError(f"{where}: joint {name!r} is not a joint of robot profile {profile.name!r} "
                                    f"(joints: {joint_list})")
        source = spec["source"]
        if spec["kind"] == "vector":
            _check_vector_source(spec, profile, where)
            continue
        if spec["kind"] == "joint_positions":
            if source != contract.JOINT_STATES:
                raise ManifestError(f"{where}: joint positions come from {contract.JOINT_STATES!r}, not {source!r}")
            continue
        topic_for = contract.camera_color_topic if spec["kind"] == "rgb" else contract.camera_depth_topic
        cam = _camera_of(source, topic_for, cams)
        if cam is None or source not in provided:
            expected = [topic_for(c) for c in cams]
            raise ManifestError(f"{where}: source {source!r} is not a {spec['kind']} topic of robot profile "
                                f"{profile.name!r} (available: {expected})")
        spec_cam = profile.camera(cam)
        height, width = spec["shape"][0], spec["shape"][1]
        if spec.get("preprocess") == "center_crop_resize":
            if height > spec_cam.height or width > spec_cam.width:
                raise ManifestError(f"{where}: expects {height}x{width} (HxW) images cropped and resized from camera "
                                    f"{cam!r} of robot profile {profile.name!r}, which publishes only "
                                    f"{spec_cam.height}x{spec_cam.width}")
            continue
        if (height, width) != (spec_cam.height, spec_cam.width):
            raise ManifestError(f"{where}: expects {height}x{width} (HxW) images but camera {cam!r} of robot profile "
                                f"{profile.name!r} publishes {spec_cam.height}x{spec_cam.width}")
