"""Manifest schema checks: structure, types, kinds, shapes, freshness, the schema-1 upgrade, and
fit to the robot profile."""

from __future__ import annotations

import ast
import copy
import hashlib
import json
from pathlib import Path

import pytest

from dexstack import contract
from dexstack.hardware.profiles import ADROIT, PANDA
from dexstack.manifest import (
    SCHEMA1_MAX_AGE_S,
    ManifestError,
    check_against_profile,
    load_manifest,
    sha256_file,
    upgrade_manifest,
    validate_manifest,
)

REPO = Path(__file__).resolve().parents[1]

SHA = "ab" * 32


def valid_manifest() -> dict:
    joints = list(PANDA.joint_names)
    return {
        "schema_version": 2,
        "name": "bc_pick_lift",
        "version": "3",
        "family": "bc",
        "robot_profile": "panda",
        "graphs": {"policy": "policy.onnx"},
        "inputs": [
            {
                "name": contract.JOINT_POSITIONS,
                "kind": "joint_positions",
                "source": contract.JOINT_STATES,
                "names": list(joints),
                "shape": [8],
                "dtype": "float32",
                "max_age_s": 0.1,
                "normalization": {"type": "mean_std", "mean": [0.0] * 8, "std": [1.0] * 8},
            },
            {
                "name": contract.rgb_key("scene"),
                "kind": "rgb",
                "source": contract.camera_color_topic("scene"),
                "shape": [96, 96, 3],
                "dtype": "uint8",
                "max_age_s": 0.25,
                "normalization": {"type": "scale", "scale": 1 / 255},
            },
            {
                "name": contract.depth_key("wrist"),
                "kind": "depth",
                "source": contract.camera_depth_topic("wrist"),
                "shape": [96, 96],
                "dtype": "float32",
                "max_age_s": 0.25,
                "normalization": {"type": "min_max", "min": 0.0, "max": 2.0},
            },
        ],
        "outputs": {"kind": "joint_position_chunk", "joint_names": joints, "chunk_length": 8, "dt": 0.1},
        "files": {"policy.onnx": SHA, "stats/norm.json": "cd" * 32},
        "provenance": {
            "code_commit": "c9d545f",
            "dataset_hash": "ef" * 32,
            "config": {"epochs": 3},
            "training_time_s": 12.5,
            "created": "2025-01-02T03:04:05+00:00",
        },
        "evaluation": {"success_rate": 0.9},
    }


def test_valid_manifest_passes_and_fits_panda() -> None:
    m = valid_manifest()
    validate_manifest(m)
    check_against_profile(m, PANDA)
    # Output joints may come in any order as long as the set is the profile's.
    m["outputs"]["joint_names"] = list(reversed(PANDA.joint_names))
    validate_manifest(m)
    check_against_profile(m, PANDA)


def _set(path: str, value):
    def mutate(m: dict) -> None:
        *parents, last = path.split(".")
        target = m
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()

STRUCTURE_CASES = [
    ("outputs", _DELETE, "lacks required field(s): ['outputs']"),
    ("ouputs", {}, "unknown field(s) ['ouputs']"),
    ("schema_version", 3, "schema_version 3 is not supported"),
    ("schema_version", "1", "schema_version must be an integer"),
    ("version", 3, "version must be a string of digits"),
    ("name", "bad/name", "name must match"),
    ("family", "BC-Policy", "family must be a lower-case identifier"),
    ("graphs.policy", "missing.onnx", "graphs['policy'] = 'missing.onnx' is not listed in files"),
    ("inputs.0.kind", "lidar", "inputs[0] ('joint_positions').kind is 'lidar'"),
    ("inputs.0.names", ["panda_joint1"], "inputs[0] ('joint_positions'): 1 names but shape [8]"),
    ("inputs.0.dtype", "float16", "inputs[0] ('joint_positions').dtype is 'float16'"),
    ("inputs.1.shape", [96, 96], "inputs[1] ('scene_rgb').shape must be [height, width, 3]"),
    ("inputs.1.dtype", "float32", "inputs[1] ('scene_rgb').dtype must be 'uint8'"),
    ("inputs.1.source", "camera/scene", "inputs[1] ('scene_rgb').source must be an absolute topic name"),
    ("inputs.2.shape", [96, 96, 3], "inputs[2] ('wrist_depth').shape must be [height, width]"),
    ("inputs.0.normalization.std", [1.0] * 7 + [0.0], "inputs[0] ('joint_positions').normalization.std must be > 0"),
    ("inputs.0.normalization.mean", [0.0] * 3, "normalization.mean has 3 entries, expected 8"),
    ("inputs.0.normalization.type", "zscore", "normalization.type is 'zscore'"),
    ("inputs.2.normalization.max", -1.0, "max must exceed min"),
    ("outputs.kind", "twist", "outputs.kind is 'twist'"),
    ("outputs.kind", "action", "outputs.kind is 'action'"),
    ("inputs.0.max_age_s", _DELETE, "inputs[0] ('joint_positions') must say exactly one of 'max_age_s'"),
    ("inputs.0.max_age_s", 0.0, "inputs[0] ('joint_positions').max_age_s must be a number of seconds > 0"),
    ("inputs.0.latched", True, "inputs[0] ('joint_positions') must say exactly one of 'max_age_s'"),
    (
        "inputs.0.preprocess",
        "center_crop_resize",
        "inputs[0] ('joint_positions').preprocess is 'center_crop_resize'; only image inputs (rgb, depth, segmentation)",
    ),
    ("inputs.2.preprocess", "nearest", "inputs[2] ('wrist_depth').preprocess is 'nearest'; only image inputs"),
    ("inputs.1.preprocess", "blur", "inputs[1] ('scene_rgb').preprocess is 'blur'"),
    ("outputs.chunk_length", 0, "outputs.chunk_length must be a positive integer"),
    ("outputs.dt", -0.1, "outputs.dt must be a positive number of seconds"),
    ("outputs.joint_names", ["panda_joint1", "panda_joint1"], "outputs.joint_names has duplicate entries"),
    ("provenance.created", "yesterday", "provenance.created must be an ISO-8601 time"),
    ("provenance.code_commit", _DELETE, "provenance.code_commit must be a non-empty string"),
    ("evaluation", [], "evaluation must be an object"),
]


@pytest.mark.parametrize(("path", "value", "message"), STRUCTURE_CASES)
def test_structural_errors_name_the_field(path: str, value, message: str) -> None:
    m = valid_manifest()
    _set(path, value)(m)
    with pytest.raises(ManifestError) as info:
        validate_manifest(m)
    assert message in str(info.value)


def test_file_entries_must_be_safe_paths_with_sha256() -> None:
    m = valid_manifest()
    m["files"]["policy.onnx"] = "XYZ"
    with pytest.raises(ManifestError, match=r"files\['policy.onnx'\] must be a lower-case sha256 hex digest"):
        validate_manifest(m)
    m = valid_manifest()
    m["files"]["../escape.onnx"] = SHA
    with pytest.raises(ManifestError, match="must be a plain relative path inside the version directory"):
        validate_manifest(m)
    m = valid_manifest()
    m["files"]["manifest.json"] = SHA
    with pytest.raises(ManifestError, match="cannot list itself"):
        validate_manifest(m)
    m = valid_manifest()
    m["inputs"].append(copy.deepcopy(m["inputs"][0]))
    with pytest.raises(ManifestError, match=r"inputs have duplicate names: \['joint_positions'\]"):
        validate_manifest(m)


def test_profile_mismatches_are_refused_with_clear_messages() -> None:
    m = valid_manifest()
    m["outputs"]["joint_names"][7] = "panda_jointX"
    with pytest.raises(ManifestError) as info:
        check_against_profile(m, PANDA)
    assert str(info.value).startswith(
        "output joint 'panda_jointX' is not a joint of robot profile 'panda' (joints: panda_joint1, panda_joint2"
    )

    m = valid_manifest()
    m["outputs"]["joint_names"] = list(PANDA.joint_names[:7])
    with pytest.raises(ManifestError, match=r"lack joint\(s\) \['panda_finger_joint1'\]"):
        check_against_profile(m, PANDA)

    m = valid_manifest()
    m["inputs"][0]["names"][0] = "shoulder_pan_joint"
    with pytest.raises(
        ManifestError, match=r"input 'joint_positions': joint\(s\) \['shoulder_pan_joint'\] are not joints"
    ):
        check_against_profile(m, PANDA)

    m = valid_manifest()
    m["robot_profile"] = "ur5e"
    with pytest.raises(ManifestError, match="policy is for robot profile 'ur5e', not 'panda'"):
        check_against_profile(m, PANDA)

    m = valid_manifest()
    m["inputs"][1]["source"] = contract.camera_color_topic("top")
    with pytest.raises(
        ManifestError,
        match=r"source '/camera/top/color/image_raw' is not a rgb topic .*"
        r"'/camera/wrist/color/image_raw'",
    ):
        check_against_profile(m, PANDA)

    m = valid_manifest()
    m["inputs"][2]["source"] = contract.camera_color_topic("wrist")  # depth input wired to a color topic
    with pytest.raises(ManifestError, match="is not a depth topic"):
        check_against_profile(m, PANDA)

    m = valid_manifest()
    m["inputs"][0]["source"] = "/robot/joints"
    with pytest.raises(ManifestError, match="joint positions come from '/joint_states', not '/robot/joints'"):
        check_against_profile(m, PANDA)

    m = valid_manifest()
    m["inputs"][1]["shape"] = [64, 64, 3]
    check_against_profile(m, PANDA)  # cropped and resized from the 96x96 camera
    m["inputs"][1]["preprocess"] = "none"
    with pytest.raises(ManifestError, match="expects 64x64 .* camera 'scene' of robot profile 'panda' publishes 96x96"):
        check_against_profile(m, PANDA)


def test_load_manifest_and_sha256(tmp_path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "manifest.json").write_text(json.dumps(valid_manifest()))
    assert load_manifest(good) == valid_manifest()  # a directory means its manifest.json

    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1,')
    with pytest.raises(ManifestError, match=r"bad.json: not valid JSON"):
        load_manifest(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ManifestError, match="top level must be a JSON object, got list"):
        load_manifest(bad)
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(tmp_path / "absent.json")

    blob = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # > 1 MiB block size
    blob.write_bytes(data)
    assert sha256_file(blob) == hashlib.sha256(data).hexdigest()


# --- the generic kinds ----------------------------------------------------------------------


def _with_input(spec: dict) -> dict:
    m = valid_manifest()
    m["inputs"].append(spec)
    return m


GOOD_KINDS = [
    {
        "name": "mask",
        "kind": "segmentation",
        "source": contract.camera_mask_topic("scene"),
        "shape": [96, 96],
        "dtype": "int32",
        "max_age_s": 0.25,
    },
    {"name": "touch", "kind": "wrench", "source": "/tactile/thumb", "shape": [6], "dtype": "float64", "max_age_s": 0.1},
    {
        "name": "target",
        "kind": "pose",
        "source": contract.GRASP_TARGET_POSE,
        "shape": [7],
        "dtype": "float64",
        "latched": True,
    },
    {
        "name": "instruction",
        "kind": "text",
        "source": contract.TASK_INSTRUCTION,
        "shape": [],
        "dtype": "str",
        "latched": True,
    },
    {
        "name": "features",
        "kind": "vector",
        "source": "/perception/features",
        "shape": [3],
        "dtype": "float32",
        "names": ["a", "b", "c"],
        "max_age_s": 0.5,
    },
    {
        "name": "square",
        "kind": "rgb",
        "source": contract.camera_color_topic("wrist"),
        "shape": [64, 64, 3],
        "dtype": "uint8",
        "max_age_s": 0.25,
        "preprocess": "center_crop_resize",
    },
]


@pytest.mark.parametrize("spec", GOOD_KINDS, ids=[s["kind"] for s in GOOD_KINDS])
def test_every_generic_kind_validates(spec: dict) -> None:
    validate_manifest(_with_input(spec))


BAD_KINDS = [
    (GOOD_KINDS[0], "shape", [96, 96, 1], "shape must be [height, width] for kind 'segmentation'"),
    (GOOD_KINDS[0], "dtype", "uint8", "dtype must be 'int32' (segment ids)"),
    (GOOD_KINDS[1], "shape", [3], "shape must be [6] for kind 'wrench'"),
    (GOOD_KINDS[2], "shape", [3], "shape must be [7] for kind 'pose'"),
    (GOOD_KINDS[2], "dtype", "int32", "dtype must be a float type for kind 'pose'"),
    (GOOD_KINDS[2], "latched", False, "latched must be true when given"),
    (GOOD_KINDS[3], "shape", [1], "shape must be [] for kind 'text'"),
    (GOOD_KINDS[3], "dtype", "uint8", "dtype must be 'str' for kind 'text'"),
    (GOOD_KINDS[4], "names", ["a"], "1 names but shape [3]"),
]


@pytest.mark.parametrize(("spec", "key", "value", "message"), BAD_KINDS)
def test_generic_kinds_check_their_shape_dtype_and_freshness(spec: dict, key: str, value, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        validate_manifest(_with_input(dict(spec, **{key: value})))


def test_inputs_sharing_a_topic_must_share_type_and_qos() -> None:
    pose = GOOD_KINDS[2]
    m = _with_input(pose)
    m["inputs"].append(dict(pose, name="again"))  # same topic, same kind and freshness: one subscription
    validate_manifest(m)
    m["inputs"][-1] = {k: v for k, v in pose.items() if k != "latched"} | {"name": "streamed", "max_age_s": 1.0}
    with pytest.raises(ManifestError, match="disagree on their message type or 'latched'"):
        validate_manifest(m)


def test_schema_1_loads_and_is_upgraded_with_the_contract_staleness_limits() -> None:
    m = valid_manifest()
    m["schema_version"] = 1
    for spec in m["inputs"]:
        del spec["max_age_s"]
    validate_manifest(m)
    upgraded = upgrade_manifest(m)
    assert upgraded["schema_version"] == 2 and m["schema_version"] == 1  # the original is left alone
    assert [s["max_age_s"] for s in upgraded["inputs"]] == [
        contract.JOINT_STATE_MAX_AGE_S,
        contract.CAMERA_MAX_AGE_S,
        contract.CAMERA_MAX_AGE_S,
    ]
    assert set(SCHEMA1_MAX_AGE_S) == {"joint_positions", "rgb", "depth"}
    validate_manifest(upgraded)
    check_against_profile(upgraded, PANDA)
    assert upgrade_manifest(upgraded) is upgraded

    m["inputs"][0]["max_age_s"] = 0.1  # schema 1 has no freshness fields
    with pytest.raises(ManifestError, match="schema_version 1 has no 'max_age_s'"):
        validate_manifest(m)
    m = valid_manifest() | {"schema_version": 1}
    m["inputs"] = [{k: v for k, v in s.items() if k != "max_age_s"} for s in m["inputs"]] + [
        {k: v for k, v in GOOD_KINDS[2].items() if k != "latched"}
    ]
    with pytest.raises(ManifestError, match=r"kind is 'pose'; expected one of \['joint_positions', 'rgb', 'depth'\]"):
        validate_manifest(m)


def test_robot_inputs_must_be_topics_of_the_profile() -> None:
    for spec in GOOD_KINDS:  # pose, text and vector come from other nodes: any topic
        if spec["kind"] != "wrench":
            check_against_profile(_with_input(spec), PANDA)
    with pytest.raises(
        ManifestError,
        match=r"'/tactile/thumb' is not a wrench topic of robot profile 'panda' "
        r"\(available: \[\]\)",
    ):
        check_against_profile(_with_input(GOOD_KINDS[1]), PANDA)
    hand = {
        "robot_profile": ADROIT.name,
        "outputs": {
            "kind": "joint_position_chunk",
            "chunk_length": 1,
            "dt": 0.05,
            "joint_names": list(ADROIT.joint_names),
        },
    }
    m = valid_manifest() | hand
    m["inputs"] = [dict(GOOD_KINDS[1])]
    check_against_profile(m, ADROIT)
    m["inputs"][0]["source"] = "/tactile/palm"
    with pytest.raises(ManifestError, match="not a wrench topic of robot profile 'adroit'"):
        check_against_profile(m, ADROIT)
    # Image inputs take any camera at least their size (centre crop + resize, dexstack/images.py),
    # or with preprocess "none" exactly their size.
    check_against_profile(_with_input(dict(GOOD_KINDS[0], shape=[48, 48])), PANDA)
    m = _with_input(dict(GOOD_KINDS[0], shape=[48, 48], preprocess="none"))
    with pytest.raises(ManifestError, match="expects 48x48 .* camera 'scene' of robot profile 'panda' publishes 96x96"):
        check_against_profile(m, PANDA)
    m = _with_input(dict(GOOD_KINDS[5], shape=[480, 480, 3]))
    with pytest.raises(ManifestError, match="cropped and resized from camera 'wrist' .* publishes only 96x96"):
        check_against_profile(m, PANDA)


FAMILY_NAMES = {"bc", "diffusion", "gpayn"}


@pytest.mark.parametrize("path", ["dexstack/manifest.py", "ros_nodes/policy_node.py"])
def test_core_serving_modules_name_no_family(path: str) -> None:
    """The manifest module and the policy node know no family: no string, name or attribute
    naming a shipped one (words inside prose strings are allowed only as whole-word-free text)."""
    tree = ast.parse((REPO / path).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            words = {w.strip("'\"`.,:;()[]{}").lower() for w in node.value.replace("/", " ").replace("_", " ").split()}
            found |= words & FAMILY_NAMES
        elif isinstance(node, ast.Name):
            found |= {node.id.lower()} & FAMILY_NAMES
        elif isinstance(node, ast.Attribute):
            found |= {node.attr.lower()} & FAMILY_NAMES
        elif isinstance(node, ast.alias):
            found |= set(node.name.lower().split(".")) & FAMILY_NAMES
    assert not found, f"{path} names policy families {sorted(found)}"
