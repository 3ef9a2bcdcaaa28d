"""The policy manifest: what a policy version consumes and produces (BRIEF §5).

`manifest.json` is the contract between a trainer and the policy node. The node wires its
subscriptions from `inputs` alone (each input's kind fixes the message type, QoS and the value
the runtime gets), builds the family's runtime through the family registry
(`dexstack/families.py`), and publishes the runtime's joint chunks as `outputs` describes. The
store checks it twice: structurally (`validate_manifest`) and against the robot it will drive
(`check_against_profile`). Nothing here knows a family: family-specific settings live in the
free-form `runtime` section, which only the family's runtime reads.

Schema version 2 (see docs/STORE.md for an example):

- `schema_version` (int, 2), `name` (str), `version` (str of digits; both set by the store)
- `family` (str): a name in the family registry
- `robot_profile` (str): a name in `dexstack.hardware.profiles.PROFILES`
- `graphs` ({role: file}): ONNX graphs in the version directory, e.g. {"policy": "policy.onnx"}
- `inputs` (list): each {name, kind, source, shape, dtype, [names], [normalization], [preprocess],
  max_age_s | latched}; `name` is the observation key the runtime reads. Exactly one freshness
  rule: `max_age_s` (> 0 s: an older sample is stale and the node holds at WARN) or
  `latched: true` (kept until replaced, never stale; a new episode drops values stamped before
  it). Kinds (`INPUT_KINDS`: message type; the value the runtime gets):
  `joint_positions` (JointState; float (n,) in `names` order), `rgb` (Image rgb8, or bgr8 / rgba8 /
  bgra8 / yuv422_yuy2 / yuv422, converted; uint8 (H, W, 3)), `depth` (Image 16UC1 mm or 32FC1 m;
  float32 metres, or uint16 mm with dtype uint16; shape [H, W] or [H, W, 1]; no reading is 0),
  `segmentation` (Image mono8/mono16/16UC1/32SC1; int32 (H, W) ids), `wrench` (WrenchStamped;
  float (6,) force N then torque N m), `pose` (PoseStamped; float (7,) x y z m, then the unit
  quaternion qw qx qy qz), `text` (String; str, shape [] and dtype "str"), `vector`
  (Float64MultiArray; float (n,), optional `names`).
  Image inputs (rgb, depth, segmentation): `shape` is the resolution the model takes; a camera of
  any other (larger) resolution is centre-cropped to the shape's aspect ratio and resized to it
  (`preprocess: "center_crop_resize"`, the default: colour area-averaged, depth and ids nearest;
  `dexstack/images.py`); `preprocess: "none"` accepts only the exact size.
- `outputs`: {kind: "joint_position_chunk", joint_names, chunk_length, dt (s), [normalization]}:
  every family's runtime answers with absolute joint targets
- `files` ({relative path: sha256 hex}): every file but manifest.json (recorded by `dexstack export`; `publish` refuses files that do not match)
- `provenance`: {code_commit, created (ISO-8601), [dataset_hash], [config], [training_time_s], ...}
- `evaluation` (dict): evaluation results, free-form
- `runtime` (dict, optional): family-specific serving settings (e.g. sampler steps), free-form

Schema version 1 (inputs of kinds joint_positions / rgb / depth without a freshness field) is
still read: `upgrade_manifest` gives each input its kind's staleness limit from the contract.
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

SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)  # what this dexstack reads; version 1 is upgraded in memory
MANIFEST_FILE = "manifest.json"

# Input kind -> the ROS message type it arrives as (ros_nodes/common.py converts each).
INPUT_KINDS: dict[str, str] = {
    "joint_positions": "sensor_msgs/msg/JointState",
    "rgb": "sensor_msgs/msg/Image",
    "depth": "sensor_msgs/msg/Image",
    "segmentation": "sensor_msgs/msg/Image",
    "wrench": "geometry_msgs/msg/WrenchStamped",
    "pose": "geometry_msgs/msg/PoseStamped",
    "text": "std_msgs/msg/String",
    "vector": "std_msgs/msg/Float64MultiArray",
}
# Schema 1 knew these kinds only, with fixed staleness limits (s) that its upgrade writes out.
SCHEMA1_MAX_AGE_S: dict[str, float] = {
    "joint_positions": contract.JOINT_STATE_MAX_AGE_S,
    "rgb": contract.CAMERA_MAX_AGE_S,
    "depth": contract.CAMERA_MAX_AGE_S,
}
OUTPUT_KINDS = ("joint_position_chunk",)
IMAGE_KINDS = ("rgb", "depth", "segmentation")
# How an image input meets any camera resolution (dexstack/images.py); the first is the default.
IMAGE_PREPROCESS = ("center_crop_resize", "none")
DTYPES = ("float32", "float64", "uint8", "uint16", "int32", "int64")
TEXT_DTYPE = "str"  # the one dtype of a text input (shape [])
NORMALIZATION_TYPES = ("none", "mean_std", "min_max", "scale")

REQUIRED_KEYS = (
    "schema_version",
    "name",
    "version",
    "family",
    "robot_profile",
    "graphs",
    "inputs",
    "outputs",
    "files",
    "provenance",
    "evaluation",
)
OPTIONAL_KEYS = ("runtime",)

# Policy names end up as directory names and in "NAME@VERSION" refs: keep them path- and ref-safe.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VERSION_RE = re.compile(r"^[1-9][0-9]*$")
FAMILY_RE = re.compile(r"^[a-z_][a-z0-9_]*$")  # a registry name (dexstack/families.py)
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
    _require(isinstance(value, list) and all(_is_number(v) for v in value), f"{where} must be a list of finite numbers")
    _require(len(value) == length, f"{where} has {len(value)} entries, expected {length}")
    return value


def _check_relative_path(path: Any, where: str) -> None:
    _require(isinstance(path, str) and path != "", f"{where} must be a non-empty relative path, got {path!r}")
    pure = PurePosixPath(path)
    _require(
        not pure.is_absolute() and ".." not in pure.parts and "\\" not in path and str(pure) == path,
        f"{where}: {path!r} must be a plain relative path inside the version directory",
    )
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


def _check_freshness(spec: dict, where: str, schema_version: int) -> None:
    has_age, has_latched = "max_age_s" in spec, "latched" in spec
    if schema_version == 1:
        _require(
            not has_age and not has_latched,
            f"{where}: schema_version 1 has no 'max_age_s' / 'latched' "
            "(its kinds have fixed staleness limits); say schema_version 2",
        )
        return
    _require(
        has_age != has_latched,
        f"{where} must say exactly one of 'max_age_s' (seconds before it is stale) "
        "or 'latched': true (kept until replaced)",
    )
    if has_age:
        age = spec["max_age_s"]
        _require(_is_number(age) and age > 0, f"{where}.max_age_s must be a number of seconds > 0, got {age!r}")
    else:
        _require(spec["latched"] is True, f"{where}.latched must be true when given, got {spec['latched']!r}")


def _check_input(spec: Any, where: str, schema_version: int = SCHEMA_VERSION) -> None:
    _require(isinstance(spec, dict), f"{where} must be an object")
    name = _str_field(spec, "name", where)
    where = f"{where} ({name!r})"
    kind = spec.get("kind")
    kinds = list(SCHEMA1_MAX_AGE_S) if schema_version == 1 else list(INPUT_KINDS)
    _require(kind in kinds, f"{where}.kind is {kind!r}; expected one of {kinds}")
    source = _str_field(spec, "source", where)
    _require(source.startswith("/"), f"{where}.source must be an absolute topic name, got {source!r}")
    shape = spec.get("shape")
    dtype = spec.get("dtype")
    if kind == "text":
        _require(shape == [], f"{where}.shape must be [] for kind 'text' (one string), got {shape!r}")
        _require(dtype == TEXT_DTYPE, f"{where}.dtype must be {TEXT_DTYPE!r} for kind 'text', got {dtype!r}")
    else:
        _require(
            isinstance(shape, list) and len(shape) > 0 and all(_is_int(d) and d > 0 for d in shape),
            f"{where}.shape must be a non-empty list of positive integers, got {shape!r}",
        )
        _require(dtype in DTYPES, f"{where}.dtype is {dtype!r}; expected one of {list(DTYPES)}")
    _check_freshness(spec, where, schema_version)

    def float_vector(length: int | None, what: str) -> None:
        _require(
            len(shape) == 1 and (length is None or shape[0] == length),
            f"{where}.shape must be [{length or 'n'}] for kind {kind!r} ({what}), got {shape}",
        )
        _require(dtype.startswith("float"), f"{where}.dtype must be a float type for kind {kind!r}, got {dtype!r}")

    if kind == "joint_positions":
        float_vector(None, "one position per joint")
        names = _name_list(spec.get("names"), f"{where}.names")
        _require(len(names) == shape[0], f"{where}: {len(names)} names but shape {shape}")
    elif kind == "rgb":
        _require(
            len(shape) == 3 and shape[2] == 3, f"{where}.shape must be [height, width, 3] for kind 'rgb', got {shape}"
        )
        _require(dtype == "uint8", f"{where}.dtype must be 'uint8' for kind 'rgb', got {dtype!r}")
    elif kind == "depth":
        _require(
            len(shape) == 2 or (len(shape) == 3 and shape[2] == 1),
            f"{where}.shape must be [height, width] or [height, width, 1] for kind 'depth', got {shape}",
        )
        # Observations carry depth in metres as float32 (contract); uint16 mm only if the graph wants raw.
        _require(dtype in ("float32", "uint16"), f"{where}.dtype must be 'float32' (m) or 'uint16' (mm) for depth")
    elif kind == "segmentation":
        _require(len(shape) == 2, f"{where}.shape must be [height, width] for kind 'segmentation', got {shape}")
        _require(
            dtype == "int32", f"{where}.dtype must be 'int32' (segment ids) for kind 'segmentation', got {dtype!r}"
        )
    elif kind == "wrench":
        float_vector(6, "force x y z in N, then torque x y z in N m")
    elif kind == "pose":
        float_vector(7, "position x y z in m, then the unit quaternion qw qx qy qz")
    elif kind == "vector":
        float_vector(None, "a vector of numbers")
        if "names" in spec:
            names = _name_list(spec["names"], f"{where}.names")
            _require(len(names) == shape[0], f"{where}: {len(names)} names but shape {shape}")
    if "preprocess" in spec:
        preprocess = spec["preprocess"]
        _require(
            kind in IMAGE_KINDS and preprocess in IMAGE_PREPROCESS,
            f"{where}.preprocess is {preprocess!r}; only image inputs (rgb, depth, segmentation) take one "
            f"of {list(IMAGE_PREPROCESS)}",
        )
    if "names" in spec and kind not in ("joint_positions", "vector"):
        _name_list(spec["names"], f"{where}.names")
    if "normalization" in spec:
        _require(kind != "text", f"{where}: a text input has no normalization")
        width = shape[-1] if kind != "depth" else 1
        _check_normalization(spec["normalization"], width, f"{where}.normalization")


def _check_outputs(out: Any) -> None:
    where = "outputs"
    _require(isinstance(out, dict), "outputs must be an object")
    kind = out.get("kind")
    _require(
        kind in OUTPUT_KINDS,
        f"outputs.kind is {kind!r}; expected one of {list(OUTPUT_KINDS)} (every family "
        "answers with joint targets; a family with another action converts inside its runtime)",
    )
    names = _name_list(out.get("joint_names"), "outputs.joint_names")
    chunk = out.get("chunk_length")
    _require(_is_int(chunk) and chunk > 0, f"outputs.chunk_length must be a positive integer, got {chunk!r}")
    dt = out.get("dt")
    _require(_is_number(dt) and dt > 0, f"outputs.dt must be a positive number of seconds, got {dt!r}")
    _require(
        chunk <= contract.MAX_CHUNK_POINTS and chunk * dt <= contract.MAX_CHUNK_HORIZON_S,
        f"outputs: chunk_length {chunk} x dt {dt} s exceeds what the safety filter accepts "
        f"({contract.MAX_CHUNK_POINTS} points, {contract.MAX_CHUNK_HORIZON_S} s)",
    )
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
    _require(
        not unknown,
        f"manifest has unknown field(s) {unknown}; known: {list(REQUIRED_KEYS + OPTIONAL_KEYS)}"
        " (family-specific settings go under 'runtime')",
    )

    sv = m["schema_version"]
    _require(_is_int(sv), f"schema_version must be an integer, got {sv!r}")
    _require(
        sv in SCHEMA_VERSIONS, f"schema_version {sv} is not supported (this dexstack reads {list(SCHEMA_VERSIONS)})"
    )
    name = m["name"]
    _require(
        isinstance(name, str) and NAME_RE.match(name) is not None,
        f"name must match {NAME_RE.pattern} (letters, digits, '_', '.', '-'), got {name!r}",
    )
    version = m["version"]
    _require(
        isinstance(version, str) and VERSION_RE.match(version) is not None,
        f'version must be a string of digits like "3", got {version!r}',
    )
    family = m["family"]
    _require(
        isinstance(family, str) and FAMILY_RE.match(family) is not None,
        f"family must be a lower-case identifier like 'my_family', got {family!r}",
    )
    _str_field(m, "robot_profile", "manifest")

    files = m["files"]
    _require(isinstance(files, dict), "files must be an object {relative path: sha256}")
    for path, digest in files.items():
        _check_relative_path(path, f"files[{path!r}]")
        _require(
            isinstance(digest, str) and SHA256_RE.match(digest) is not None,
            f"files[{path!r}] must be a lower-case sha256 hex digest, got {digest!r}",
        )

    graphs = m["graphs"]
    _require(isinstance(graphs, dict) and len(graphs) > 0, "graphs must be a non-empty object {role: file}")
    for role, path in graphs.items():
        _check_relative_path(path, f"graphs[{role!r}]")
        _require(path in files, f"graphs[{role!r}] = {path!r} is not listed in files")

    inputs = m["inputs"]
    _require(isinstance(inputs, list) and len(inputs) > 0, "inputs must be a non-empty list")
    for i, spec in enumerate(inputs):
        _check_input(spec, f"inputs[{i}]", sv)
    names = [spec["name"] for spec in inputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    _require(not duplicates, f"inputs have duplicate names: {duplicates}")
    by_source: dict[str, tuple[str, bool]] = {}
    for spec in inputs:  # one subscription per topic: one message type and one QoS
        wiring = (INPUT_KINDS[spec["kind"]], spec.get("latched") is True)
        first = by_source.setdefault(spec["source"], wiring)
        _require(
            first == wiring,
            f"inputs on {spec['source']!r} disagree on their message type or 'latched' ({first} vs "
            f"{wiring}): inputs sharing a topic share its message type and QoS",
        )

    _check_outputs(m["outputs"])
    _check_provenance(m["provenance"])
    _require(isinstance(m["evaluation"], dict), "evaluation must be an object")
    if "runtime" in m:
        _require(isinstance(m["runtime"], dict), "runtime must be an object")


def upgrade_manifest(m: dict[str, Any]) -> dict[str, Any]:
    """A validated manifest in schema version 2: a schema-1 one is copied with each input given its
    kind's staleness limit (`SCHEMA1_MAX_AGE_S`); a schema-2 one is returned as it is."""
    if m["schema_version"] == SCHEMA_VERSION:
        return m
    inputs = [dict(spec, max_age_s=SCHEMA1_MAX_AGE_S[spec["kind"]]) for spec in m["inputs"]]
    return dict(m, schema_version=SCHEMA_VERSION, inputs=inputs)


# --- fit to a robot -----------------------------------------------------------------------


def check_against_profile(m: dict[str, Any], profile: RobotProfile) -> None:
    """Check that a (validated) manifest fits `profile`: same robot, the same joints as
    outputs, known joint names in inputs, and robot inputs on topics the robot publishes (at
    the image size its cameras produce). Inputs of kinds pose, text and vector come from
    other nodes (planners, operators), so any topic will do. Raises ManifestError."""
    if m["robot_profile"] != profile.name:
        raise ManifestError(f"policy is for robot profile {m['robot_profile']!r}, not {profile.name!r}")
    joints = list(profile.joint_names)
    out_names = m["outputs"]["joint_names"]
    for name in out_names:
        if name not in joints:
            raise ManifestError(
                f"output joint {name!r} is not a joint of robot profile {profile.name!r} (joints: {', '.join(joints)})"
            )
    missing = [j for j in joints if j not in out_names]
    if missing:
        raise ManifestError(
            f"outputs.joint_names lack joint(s) {missing} of robot profile {profile.name!r}: a chunk "
            "must command every joint"
        )
    for spec in m["inputs"]:
        _check_input_against_profile(spec, profile)


def _camera_topics(kind: str, profile: RobotProfile) -> dict[str, str]:
    """{topic: camera} of the profile's cameras for an image kind."""
    topic_for = {
        "rgb": contract.camera_color_topic,
        "depth": contract.camera_depth_topic,
        "segmentation": contract.camera_mask_topic,
    }[kind]
    return {topic_for(cam): cam for cam in profile.camera_names}


def _check_input_against_profile(spec: dict[str, Any], profile: RobotProfile) -> None:
    where, kind, source = f"input {spec['name']!r}", spec["kind"], spec["source"]
    if kind == "joint_positions":
        if source != contract.JOINT_STATES:
            raise ManifestError(f"{where}: joint positions come from {contract.JOINT_STATES!r}, not {source!r}")
        unknown = [n for n in spec["names"] if n not in profile.joint_names]
        if unknown:
            raise ManifestError(
                f"{where}: joint(s) {unknown} are not joints of robot profile {profile.name!r} "
                f"(joints: {', '.join(profile.joint_names)})"
            )
    elif kind == "wrench":
        topics = [t.name for t in profile.topics() if t.msg_type == INPUT_KINDS["wrench"]]
        if source not in topics:
            raise ManifestError(
                f"{where}: source {source!r} is not a wrench topic of robot profile {profile.name!r} "
                f"(available: {topics})"
            )
    elif kind in ("rgb", "depth", "segmentation"):
        cameras = _camera_topics(kind, profile)
        if source not in cameras:
            raise ManifestError(
                f"{where}: source {source!r} is not a {kind} topic of robot profile "
                f"{profile.name!r} (available: {list(cameras)})"
            )
        cam = profile.camera(cameras[source])
        height, width = spec["shape"][0], spec["shape"][1]
        if spec.get("preprocess", IMAGE_PREPROCESS[0]) != "none":
            if height > cam.height or width > cam.width:
                raise ManifestError(
                    f"{where}: expects {height}x{width} (HxW) images cropped and resized from camera "
                    f"{cam.name!r} of robot profile {profile.name!r}, which publishes only "
                    f"{cam.height}x{cam.width}"
                )
        elif (height, width) != (cam.height, cam.width):
            raise ManifestError(
                f"{where}: expects {height}x{width} (HxW) images but camera {cam.name!r} of robot "
                f"profile {profile.name!r} publishes {cam.height}x{cam.width}"
            )
