"""Observation assembly without ROS: staleness, finiteness, shapes, lockstep stamp matching, the
generic input kinds, rgb preprocessing and latched inputs."""

from __future__ import annotations

import numpy as np
import pytest

from dexstack import contract
from dexstack.hardware.profiles import PANDA
from dexstack.observation import NS, ObservationAssembler, check_action, check_outputs_for_profile

JOINTS = list(PANDA.joint_names)
INPUTS = [
    {
        "name": contract.JOINT_POSITIONS,
        "kind": "joint_positions",
        "source": contract.JOINT_STATES,
        "names": JOINTS,
        "shape": [len(JOINTS)],
        "dtype": "float32",
        "max_age_s": contract.JOINT_STATE_MAX_AGE_S,
    },
    {
        "name": contract.rgb_key("wrist"),
        "kind": "rgb",
        "source": contract.camera_color_topic("wrist"),
        "shape": [4, 5, 3],
        "dtype": "uint8",
        "max_age_s": contract.CAMERA_MAX_AGE_S,
    },
]
TOUCH = {
    "name": "tactile/thumb",
    "kind": "wrench",
    "source": "/tactile/thumb",
    "shape": [6],
    "dtype": "float64",
    "max_age_s": contract.JOINT_STATE_MAX_AGE_S,
}
TARGET = {
    "name": "grasp_target",
    "kind": "pose",
    "source": contract.GRASP_TARGET_POSE,
    "shape": [7],
    "dtype": "float64",
    "latched": True,
}
INSTRUCTION = {
    "name": "instruction",
    "kind": "text",
    "source": contract.TASK_INSTRUCTION,
    "shape": [],
    "dtype": "str",
    "latched": True,
}
POSE = np.array([0.1, 0.2, 0.3, 1.0, 0.0, 0.0, 0.0])
T0 = 1000 * NS  # an arbitrary clock time, integer nanoseconds


def _q(value: float = 0.1) -> np.ndarray:
    return np.full(len(JOINTS), value)


def _rgb() -> np.ndarray:
    return np.zeros((4, 5, 3), dtype=np.uint8)


def _fed(stamp_js: int, stamp_rgb: int, q: np.ndarray | None = None) -> ObservationAssembler:
    asm = ObservationAssembler(INPUTS)
    asm.add(contract.JOINT_POSITIONS, stamp_js, _q() if q is None else q)
    asm.add(contract.rgb_key("wrist"), stamp_rgb, _rgb())
    return asm


def test_fresh_inputs_give_an_observation_with_the_joint_state_stamp_and_manifest_dtype():
    asm = _fed(T0, T0 - 50_000_000)
    result = asm.latest(T0 + 20_000_000)
    assert result.hold is None
    assert result.stamp_ns == T0
    obs = result.observation
    assert obs[contract.JOINT_POSITIONS].dtype == np.float32
    np.testing.assert_allclose(obs[contract.JOINT_POSITIONS], 0.1, rtol=1e-6)
    assert obs[contract.rgb_key("wrist")].shape == (4, 5, 3)
    assert result.age_s == pytest.approx(0.07)  # the camera is the oldest input


def test_stale_joint_state_holds_with_warn_naming_topic_and_age():
    asm = _fed(T0, T0)
    now = T0 + int((contract.JOINT_STATE_MAX_AGE_S + 0.05) * NS)
    result = asm.latest(now)
    assert result.observation is None
    assert result.hold.level == "WARN"
    assert "stale" in result.hold.message and contract.JOINT_STATES in result.hold.message
    assert f"{contract.JOINT_STATE_MAX_AGE_S + 0.05:.3f} s old" in result.hold.message
    assert result.stamp_ns == T0  # the hold answers the observation it refused


def test_camera_may_be_older_than_joint_state_limit_but_not_older_than_its_own():
    asm = _fed(T0, T0 - int(0.2 * NS))
    assert asm.latest(T0).hold is None  # 0.2 s < CAMERA_MAX_AGE_S
    asm.add(contract.rgb_key("wrist"), T0 - int(0.2 * NS), _rgb())
    late = asm.latest(T0 + int(0.06 * NS))
    assert late.hold is not None and contract.camera_color_topic("wrist") in late.hold.message


def test_nan_joint_state_holds_with_error_even_when_fresh():
    q = _q()
    q[3] = np.nan
    result = _fed(T0, T0, q).latest(T0)
    assert result.observation is None
    assert result.hold.level == "ERROR"
    assert "NaN" in result.hold.message and contract.JOINT_POSITIONS in result.hold.message
    assert result.stamp_ns == T0


def test_nan_is_reported_before_staleness():
    q = _q()
    q[0] = np.inf
    result = _fed(T0, T0, q).latest(T0 + 10 * NS)
    assert result.hold.level == "ERROR"


def test_missing_input_holds_with_warn_and_clock_stamp():
    asm = ObservationAssembler(INPUTS)
    asm.add(contract.rgb_key("wrist"), T0, _rgb())
    result = asm.latest(T0 + 5)
    assert result.hold.level == "WARN"
    assert "no message yet" in result.hold.message and contract.JOINT_STATES in result.hold.message
    assert result.stamp_ns == T0 + 5


def test_wrong_shape_and_unconvertible_message_hold_with_error():
    asm = _fed(T0, T0)
    asm.add(contract.rgb_key("wrist"), T0, np.zeros((8, 8, 4), dtype=np.uint8))  # resized, still 4 channels
    result = asm.latest(T0)
    assert result.hold.level == "ERROR" and "shape (4, 5, 4), expected (4, 5, 3)" in result.hold.message
    asm.add_invalid(contract.JOINT_POSITIONS, T0 + 1, "joint_states lacks joints ['panda_joint7']")
    result = asm.latest(T0 + 1)
    assert result.hold.level == "ERROR" and "panda_joint7" in result.hold.message
    assert result.stamp_ns == T0 + 1  # never falls back to the older valid sample


def test_matched_waits_for_every_input_with_the_same_stamp():
    asm = ObservationAssembler(INPUTS)
    asm.add(contract.JOINT_POSITIONS, T0, _q())
    assert asm.take_matched(T0) is None  # camera not there yet
    asm.add(contract.rgb_key("wrist"), T0 - 1, _rgb())
    assert asm.take_matched(T0) is None  # a camera frame 1 ns off is not the same observation
    asm.add(contract.rgb_key("wrist"), T0, _rgb())
    result = asm.take_matched(T0)
    assert result is not None and result.hold is None and result.stamp_ns == T0


def test_matched_answers_each_stamp_once_and_only_newer_ones():
    asm = _fed(T0, T0)
    assert asm.take_matched(T0).stamp_ns == T0
    assert asm.take_matched(T0) is None  # already answered
    asm.add(contract.JOINT_POSITIONS, T0 + 20, _q(0.2))
    assert asm.take_matched(T0 + 20) is None  # joint state ahead, camera not yet
    asm.add(contract.rgb_key("wrist"), T0 + 20, _rgb())
    result = asm.take_matched(T0 + 20)
    assert result.stamp_ns == T0 + 20
    np.testing.assert_allclose(result.observation[contract.JOINT_POSITIONS], 0.2, rtol=1e-6)
    assert asm.take_matched(T0 + 20) is None


def test_matched_picks_the_newest_complete_set_skipping_older_ones():
    asm = ObservationAssembler(INPUTS)
    for k in range(3):
        asm.add(contract.JOINT_POSITIONS, T0 + k, _q(k))
        asm.add(contract.rgb_key("wrist"), T0 + k, _rgb())
    assert asm.take_matched(T0 + 2).stamp_ns == T0 + 2
    assert asm.take_matched(T0 + 2) is None


def test_matched_nan_set_is_answered_with_an_error_hold_at_its_stamp():
    q = _q()
    q[1] = np.nan
    result = _fed(T0, T0, q).take_matched(T0)
    assert result.hold.level == "ERROR" and result.stamp_ns == T0


def test_clock_going_backwards_starts_a_new_timeline():
    asm = _fed(T0, T0)
    assert asm.take_matched(T0) is not None
    asm.add(contract.JOINT_POSITIONS, 5, _q())  # sim reset its clock for a new episode
    asm.add(contract.rgb_key("wrist"), 5, _rgb())
    assert asm.time_jumps == 2
    result = asm.take_matched(5)
    assert result is not None and result.stamp_ns == 5 and result.hold is None


def test_carry_over_keeps_samples_and_answered_stamp_across_a_swap():
    old = _fed(T0, T0)
    assert old.take_matched(T0) is not None
    old.add(contract.JOINT_POSITIONS, T0 + 7, _q())  # half of the next set has arrived
    new = ObservationAssembler(INPUTS)
    new.carry_over_from(old)
    assert new.take_matched(T0) is None  # not answered twice
    new.add(contract.rgb_key("wrist"), T0 + 7, _rgb())
    assert new.take_matched(T0 + 7).stamp_ns == T0 + 7


def test_bad_manifest_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unsupported kind 'tactile'"):
        ObservationAssembler([{"name": "x", "kind": "tactile", "source": "/t", "shape": [3], "max_age_s": 1.0}])
    with pytest.raises(ValueError, match="needs exactly one of max_age_s or latched: true"):
        ObservationAssembler([{"name": "x", "kind": "rgb", "source": "/t", "shape": [3]}])
    with pytest.raises(ValueError, match="lacks 'source'"):
        ObservationAssembler([{"name": "x", "kind": "rgb", "shape": [3]}])
    with pytest.raises(ValueError, match="no inputs"):
        ObservationAssembler([])


def test_check_action_and_outputs():
    outputs = {"kind": "joint_position_chunk", "joint_names": JOINTS, "chunk_length": 8, "dt": 0.1}
    assert check_action(np.zeros((8, len(JOINTS))), outputs) is None
    assert "shape" in check_action(np.zeros((7, len(JOINTS))), outputs).message
    bad = np.zeros((8, len(JOINTS)))
    bad[2, 2] = np.nan
    assert check_action(bad, outputs).level == "ERROR"
    check_outputs_for_profile(outputs, PANDA.joint_names)
    with pytest.raises(ValueError, match=r"unknown \['elbow'\], missing \['panda_finger_joint1'\]"):
        check_outputs_for_profile(outputs | {"joint_names": JOINTS[:-1] + ["elbow"]}, PANDA.joint_names)


# --- generic kinds ---------------------------------------------------------------------------


def test_each_input_has_its_own_staleness_limit_from_the_manifest():
    slow = [dict(INPUTS[0], max_age_s=0.5), INPUTS[1]]
    asm = ObservationAssembler(slow)
    asm.add(contract.JOINT_POSITIONS, T0, _q())
    asm.add(contract.rgb_key("wrist"), T0 + int(0.3 * NS), _rgb())
    assert asm.latest(T0 + int(0.3 * NS)).hold is None  # 0.3 s would be stale at the contract's 0.1 s
    late = asm.latest(T0 + int(0.51 * NS))
    assert late.hold.level == "WARN" and "max 0.500 s" in late.hold.message


def test_wrench_inputs_take_part_in_lockstep_matching():
    asm = ObservationAssembler([*INPUTS, TOUCH])
    asm.add(contract.JOINT_POSITIONS, T0, _q())
    asm.add(contract.rgb_key("wrist"), T0, _rgb())
    assert asm.take_matched(T0) is None  # the pad's wrench of that stamp is missing
    asm.add("tactile/thumb", T0, np.array([0.0, 0.0, 1.5, 0.0, 0.0, 0.0]))
    result = asm.take_matched(T0)
    assert result.hold is None and result.observation["tactile/thumb"][2] == 1.5
    bad = np.zeros(6)
    bad[0] = np.nan
    asm.add("tactile/thumb", T0 + 1, bad)
    result = asm.latest(T0 + 1)
    assert result.hold.level == "ERROR" and "tactile/thumb (/tactile/thumb): contains NaN or inf" in result.hold.message


def test_text_and_segmentation_and_vector_values():
    mask = {
        "name": "mask",
        "kind": "segmentation",
        "source": contract.camera_mask_topic("wrist"),
        "shape": [4, 5],
        "dtype": "int32",
        "max_age_s": 0.25,
    }
    vec = {"name": "v", "kind": "vector", "source": "/v", "shape": [2], "dtype": "float32", "max_age_s": 0.25}
    asm = ObservationAssembler([INPUTS[0], mask, vec, INSTRUCTION])
    asm.add(contract.JOINT_POSITIONS, T0, _q())
    asm.add("mask", T0, np.full((4, 5), 255, dtype=np.int32))
    asm.add("v", T0, np.array([1.0, 2.0]))
    asm.add("instruction", T0, "pick up the red cube")
    obs = asm.latest(T0).observation
    assert obs["instruction"] == "pick up the red cube"
    assert obs["mask"].dtype == np.int32 and obs["v"].dtype == np.float32
    asm.add("v", T0 + 1, np.array([1.0, 2.0, 3.0]))
    assert "v (/v): shape (3,), expected (2,)" in asm.latest(T0 + 1).hold.message


def test_rgb_center_crop_resize_is_applied_to_the_camera_image():
    from dexstack.images import center_crop_resize

    square = dict(INPUTS[1], shape=[2, 2, 3], preprocess="center_crop_resize")
    asm = ObservationAssembler([INPUTS[0], square])
    image = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    asm.add(contract.JOINT_POSITIONS, T0, _q())
    asm.add(contract.rgb_key("wrist"), T0, image)
    served = asm.latest(T0).observation[contract.rgb_key("wrist")]
    np.testing.assert_array_equal(served, center_crop_resize(image, 2, 2))
    assert served.shape == (2, 2, 3)
    asm.add(contract.rgb_key("wrist"), T0 + 1, image[:1, :1])  # smaller than the policy's input
    hold = asm.latest(T0 + 1).hold
    assert hold.level == "ERROR" and "smaller than the policy's" in hold.message


@pytest.mark.parametrize("camera", [(480, 640), (720, 1280), (96, 96), (120, 160)])
def test_every_image_kind_meets_any_camera_resolution_by_one_rule(camera):
    """rgb, depth and segmentation inputs without a `preprocess` (the shipped Panda policies' case)
    take a camera of any larger resolution: centre crop to the model's aspect, then resize (rgb by
    area, depth and ids by nearest pixel); the model's own size passes unchanged."""
    from dexstack.images import center_crop_resize

    h, w = camera
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = rng.uniform(0.2, 2.0, (h, w)).astype(np.float32)
    ids = rng.integers(0, 4, (h, w)).astype(np.int32)
    specs = [
        INPUTS[0],
        dict(INPUTS[1], shape=[96, 96, 3]),
        {"name": "d", "kind": "depth", "source": "/d", "shape": [96, 96, 1], "dtype": "float32", "max_age_s": 1.0},
        {"name": "m", "kind": "segmentation", "source": "/m", "shape": [96, 96], "dtype": "int32", "max_age_s": 1.0},
    ]
    asm = ObservationAssembler(specs)
    asm.add(contract.JOINT_POSITIONS, T0, _q())
    asm.add(contract.rgb_key("wrist"), T0, rgb)
    asm.add("d", T0, depth[..., None])
    asm.add("m", T0, ids)
    obs = asm.latest(T0).observation
    assert obs[contract.rgb_key("wrist")].shape == (96, 96, 3) and obs["d"].shape == (96, 96, 1)
    assert obs["m"].shape == (96, 96) and obs["m"].dtype == np.int32
    np.testing.assert_array_equal(obs[contract.rgb_key("wrist")], center_crop_resize(rgb, 96, 96))
    # Nearest: every served depth and id is one the camera measured (no blended edges).
    assert set(np.unique(obs["d"])) <= set(np.unique(depth)) and set(np.unique(obs["m"])) <= set(np.unique(ids))
    if camera == (96, 96):
        np.testing.assert_array_equal(obs[contract.rgb_key("wrist")], rgb)
        np.testing.assert_array_equal(obs["d"][..., 0], depth)


def test_preprocess_none_accepts_only_the_models_size():
    exact = dict(INPUTS[1], preprocess="none")
    asm = ObservationAssembler([INPUTS[0], exact])
    asm.add(contract.JOINT_POSITIONS, T0, _q())
    asm.add(contract.rgb_key("wrist"), T0, np.zeros((8, 10, 3), dtype=np.uint8))
    hold = asm.latest(T0).hold
    assert hold.level == "ERROR" and "10x8 but this policy takes only 5x4" in hold.message
    asm.add(contract.rgb_key("wrist"), T0 + 1, _rgb())
    assert asm.latest(T0 + 1).hold is None


# --- latched inputs ----------------------------------------------------------------------------


def _with_target() -> ObservationAssembler:
    asm = ObservationAssembler([*INPUTS, TARGET])
    asm.add(contract.JOINT_POSITIONS, T0, _q())
    asm.add(contract.rgb_key("wrist"), T0, _rgb())
    return asm


def test_latched_input_never_received_holds_at_warn_naming_it_and_its_topic():
    asm = _with_target()
    for result in (asm.latest(T0), asm.take_matched(T0)):  # the lockstep stamp is answered with the hold
        assert result.observation is None and result.stamp_ns == T0
        assert result.hold.level == "WARN"
        assert result.hold.message == f"waiting for grasp_target on {contract.GRASP_TARGET_POSE}"


def test_latched_input_is_never_stale_and_not_matched_by_stamp():
    asm = _with_target()
    asm.add("grasp_target", T0 - 100 * NS, POSE)  # published once, long ago
    result = asm.take_matched(T0)
    assert result.hold is None and result.stamp_ns == T0
    np.testing.assert_array_equal(result.observation["grasp_target"], POSE)
    assert result.age_s == 0.0  # the age is the streamed inputs'
    asm.add(contract.JOINT_POSITIONS, T0 + 1, _q())
    asm.add(contract.rgb_key("wrist"), T0 + 1, _rgb())
    asm.add("grasp_target", T0 + 1, POSE * 2)  # a replacement wins
    np.testing.assert_array_equal(asm.take_matched(T0 + 1).observation["grasp_target"], POSE * 2)


def test_new_episode_drops_latched_values_planned_before_it():
    asm = _with_target()
    asm.add("grasp_target", T0, POSE)
    asm.episode_started(T0 + 1)
    assert asm.latest(T0).hold.message.startswith("waiting for grasp_target")
    asm.add("grasp_target", T0, POSE)  # a late copy of the last scene's plan is ignored
    assert asm.latest(T0).hold.message.startswith("waiting for grasp_target")
    asm.add("grasp_target", T0 + 1, POSE)  # this episode's plan
    assert asm.latest(T0).hold is None
    asm.episode_started(T0 + 1)  # the same episode announced again keeps it
    assert asm.latest(T0).hold is None


def test_clock_jumping_back_is_a_new_episode_for_latched_values():
    asm = _with_target()
    asm.add("grasp_target", T0, POSE)
    asm.add(contract.JOINT_POSITIONS, 10, _q())  # the sim restarted its clock at 10 ns
    assert asm.episode_start_ns == 10
    asm.add("grasp_target", 5, POSE)  # stamped before the new timeline began: the old scene's
    asm.add(contract.rgb_key("wrist"), 10, _rgb())
    assert asm.take_matched(10).hold is None  # stamped after the new start (T0 > 10 ns): not known to be old
    asm.episode_started(T0 + 1)
    assert asm.latest(10).hold.message.startswith("waiting for grasp_target")


def test_invalid_latched_value_holds_with_error_until_replaced():
    asm = _with_target()
    asm.add("grasp_target", T0, POSE)
    asm.add_invalid("grasp_target", T0 + 1, "orientation [0, 0, 0, 0] (wxyz) is not a rotation")
    hold = asm.latest(T0).hold
    assert hold.level == "ERROR" and "grasp_target (/grasp/target_pose): orientation" in hold.message
    asm.add("grasp_target", T0 + 2, POSE)
    assert asm.latest(T0).hold is None


def test_hot_swap_carries_latched_values_and_episode_start_over():
    old = _with_target()
    old.add("grasp_target", T0, POSE)
    old.episode_started(T0)
    new = ObservationAssembler([*INPUTS, TARGET])
    new.carry_over_from(old)
    result = new.latest(T0)
    assert result.hold is None
    np.testing.assert_array_equal(result.observation["grasp_target"], POSE)
    new.add("grasp_target", T0 - 1, POSE * 3)  # still the same episode: an older plan stays ignored
    np.testing.assert_array_equal(new.latest(T0).observation["grasp_target"], POSE)
    streamed = ObservationAssembler([*INPUTS, {k: v for k, v in TARGET.items() if k != "latched"} | {"max_age_s": 1.0}])
    streamed.carry_over_from(old)  # a streamed input of that name is not the latched one: nothing to adopt
    assert streamed.latest(T0).hold.message == f"no message yet for grasp_target ({contract.GRASP_TARGET_POSE})"
