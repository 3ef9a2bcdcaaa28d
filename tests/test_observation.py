"""Observation assembly without ROS: staleness, finiteness, shapes and lockstep stamp matching."""

from __future__ import annotations

import numpy as np
import pytest

from dexstack import contract
from dexstack.hardware.profiles import PANDA
from dexstack.observation import NS, ObservationAssembler, check_action, check_outputs_for_profile

JOINTS = list(PANDA.joint_names)
INPUTS = [
    {"name": contract.JOINT_POSITIONS, "kind": "joint_positions", "source": contract.JOINT_STATES,
     "names": JOINTS, "shape": [len(JOINTS)], "dtype": "float32"},
    {"name": contract.rgb_key("wrist"), "kind": "rgb", "source": contract.camera_color_topic("wrist"),
     "shape": [4, 5, 3], "dtype": "uint8"},
]
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
    asm.add(contract.rgb_key("wrist"), T0, np.zeros((8, 8, 3), dtype=np.uint8))
    result = asm.latest(T0)
    assert result.hold.level == "ERROR" and "expected (4, 5, 3)" in result.hold.message
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
        ObservationAssembler([{"name": "x", "kind": "tactile", "source": "/t", "shape": [3]}])
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
