"""Manifest schema checks: structure, types, kinds, shapes, and fit to the robot profile."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from dexstack import contract
from dexstack.hardware.profiles import PANDA
from dexstack.manifest import ManifestError, check_against_profile, load_manifest, sha256_file, validate_manifest

SHA = "ab" * 32


def valid_manifest() -> dict:
    joints = list(PANDA.joint_names)
    return {
        "schema_version": 1,
        "name": "bc_pick_lift",
        "version": "3",
        "family": "bc",
        "robot_profile": "panda",
        "graphs": {"policy": "policy.onnx"},
        "inputs": [
            {"name": contract.JOINT_POSITIONS, "kind": "joint_positions", "source": contract.JOINT_STATES,
             "names": list(joints), "shape": [8], "dtype": "float32",
             "normalization": {"type": "mean_std", "mean": [0.0] * 8, "std": [1.0] * 8}},
            {"name": contract.rgb_key("scene"), "kind": "rgb", "source": contract.camera_color_topic("scene"),
             "shape": [96, 96, 3], "dtype": "uint8", "normalization": {"type": "scale", "scale": 1 / 255}},
            {"name": contract.depth_key("wrist"), "kind": "depth", "source": contract.camera_depth_topic("wrist"),
             "shape": [96, 96], "dtype": "float32", "normalization": {"type": "min_max", "min": 0.0, "max": 2.0}},
        ],
        "outputs": {"kind": "joint_position_chunk", "joint_names": joints, "chunk_length": 8, "dt": 0.1},
        "files": {"policy.onnx": SHA, "stats/norm.json": "cd" * 32},
        "provenance": {"code_commit": "c9d545f", "dataset_hash": "ef" * 32, "config": {"epochs": 3},
                       "training_time_s": 12.5, "created": "2025-01-02T03:04:05+00:00"},
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
    ("schema_version", 2, "schema_version 2 is not supported"),
    ("schema_version", "1", "schema_version must be an integer"),
    ("version", 3, "version must be a string of digits"),
    ("name", "bad/name", "name must match"),
    ("family", "BC-Policy", "family must be a lower-case module name"),
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
    assert str(info.value).startswith("output joint 'panda_jointX' is not a joint of robot profile 'panda' (joints: "
                                      "panda_joint1, panda_joint2")

    m = valid_manifest()
    m["outputs"]["joint_names"] = list(PANDA.joint_names[:7])
    with pytest.raises(ManifestError, match=r"lack joint\(s\) \['panda_finger_joint1'\]"):
        check_against_profile(m, PANDA)

    m = valid_manifest()
    m["inputs"][0]["names"][0] = "shoulder_pan_joint"
    with pytest.raises(ManifestError, match="input 'joint_positions': joint 'shoulder_pan_joint' is not a joint"):
        check_against_profile(m, PANDA)

    m = valid_manifest()
    m["robot_profile"] = "ur5e"
    with pytest.raises(ManifestError, match="policy is for robot profile 'ur5e', not 'panda'"):
        check_against_profile(m, PANDA)

    m = valid_manifest()
    m["inputs"][1]["source"] = contract.camera_color_topic("top")
    with pytest.raises(ManifestError, match=r"source '/camera/top/color/image_raw' is not a rgb topic .*"
                                            r"'/camera/wrist/color/image_raw'"):
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
