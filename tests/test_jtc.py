"""The JTC-faithful validator (`hardware/jtc.py`) against each rule of ros2_controllers'
`JointTrajectoryController::validate_trajectory_msg` (jazzy/kilted/master; humble differs only in
order and defaults), on real trajectory_msgs messages, and its agreement with the executor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack.hardware.jtc import accept_trajectory_msg, validate_trajectory_msg
from dexstack.hardware.profiles import PANDA
from dexstack.trajectory import TrajectoryExecutor

J = list(PANDA.joint_names)
HOME = list(PANDA.home)
NOW = 100.0


def dur(s: float) -> Duration:
    ns = int(round(s * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def traj(points=((0.1, HOME),), names=J, stamp: float = 0.0, **fields) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names))
    ns = int(round(stamp * 1e9))
    msg.header.stamp = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
    for t, q in points:
        msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in q], time_from_start=dur(t), **fields))
    return msg


def check(msg, now=NOW, **kw):
    return validate_trajectory_msg(msg, J, now, **kw)


def test_ordinary_chunks_and_jtc_own_hold_are_accepted():
    assert check(traj([(0.1, HOME), (0.2, HOME)], stamp=NOW - 0.05)) is None  # stamped, ends in the future
    assert check(traj([(0.0, HOME)])) is None  # JTC's own hold: stamp 0, one point at time 0
    assert check(traj([(0.0, HOME)], stamp=NOW)) is None  # ends exactly now: not "in the past"
    assert check(traj([(0.1, HOME)], names=list(reversed(J)))) is None  # any joint order


def test_empty_trajectory_is_refused():
    assert check(traj(points=())) == "Empty trajectory received"


def test_joint_names_must_be_exactly_the_controller_joints():
    assert "don't match the controller joints" in check(traj(names=J[:-1], points=[(0.1, HOME[:-1])]))
    assert "don't match the controller joints" in check(traj(names=[], points=[(0.1, [])]))
    wrong = [*J[:-1], "elbow"]
    assert check(traj(names=wrong)) == "Incoming joint elbow doesn't match the controller's joints"


def test_duplicate_joint_names_pass_jtc_but_not_strict_mode():
    dup = [*J[:-1], J[0]]
    assert "duplicate joint names" in check(traj(names=dup))
    assert check(traj(names=dup), strict=False) is None  # JTC itself accepts it


def test_last_point_velocity_must_be_zero():
    moving = traj([(0.1, HOME), (0.2, HOME)], velocities=[0.0] * 8)
    assert check(moving) is None
    moving.points[-1].velocities[3] = 0.5
    assert check(moving).startswith(f"Velocity of last trajectory point of joint {J[3]} is not zero")
    moving.points[-1].velocities[3] = 1e-9  # below float epsilon
    assert check(moving) is None


def test_a_stamped_trajectory_ending_in_the_past_is_refused_a_zero_stamp_is_now():
    late = traj([(0.1, HOME), (0.2, HOME)], stamp=NOW - 0.5)
    assert "non-zero start time" in check(late) and "ends in the past" in check(late)
    assert check(traj([(0.1, HOME), (0.2, HOME)])) is None
    # The filter's old hold form: stamped with a past observation, time_from_start 0: a robot refuses it.
    assert "ends in the past" in check(traj([(0.0, HOME)], stamp=NOW - 0.04))


def test_times_must_strictly_increase_except_the_first_which_is_not_checked():
    assert "not strictly increasing" in check(traj([(0.2, HOME), (0.2, HOME)]))
    assert "not strictly increasing" in check(traj([(0.2, HOME), (0.1, HOME)]))
    negative_first = traj([(0.5, HOME), (0.6, HOME)])
    negative_first.points[0].time_from_start = Duration(sec=-1, nanosec=0)
    assert check(negative_first) is None


def test_point_sizes_must_match_the_joint_names():
    assert check(traj([(0.1, HOME[:-1])])).startswith("Mismatch between joint_names size (8) and positions (7)")
    assert "velocities (3)" in check(traj([(0.1, HOME)], velocities=[0.0] * 3))
    assert "accelerations (2)" in check(traj([(0.1, HOME)], accelerations=[0.0] * 2))


def test_effort_fields_are_refused_on_a_position_controller():
    assert "effort" in check(traj([(0.1, HOME)], effort=[0.0] * 8))


def test_nan_passes_jtc_but_strict_mode_refuses_it():
    bad = traj([(0.1, HOME)])
    bad.points[0].positions[2] = math.nan
    assert check(bad, strict=False) is None  # JTC has no NaN check: it would command NaN
    assert "non-finite positions at point #0" in check(bad)
    inf = traj([(0.1, HOME)])
    inf.points[0].positions[0] = math.inf
    assert "non-finite" in check(inf)


def test_negative_stamp_is_refused():
    msg = traj()
    msg.header.stamp = Time(sec=-1, nanosec=0)
    assert "negative header stamp" in check(msg)


def test_accepted_message_becomes_a_chunk_on_the_callers_clock():
    chunk, reason = accept_trajectory_msg(traj([(0.1, HOME)], stamp=NOW), J, NOW, clock_offset_s=NOW - 2.0)
    assert reason == "" and chunk.stamp == pytest.approx(2.0)
    chunk, reason = accept_trajectory_msg(traj(points=()), J, NOW)
    assert chunk is None and reason == "Empty trajectory received"


names_st = st.lists(st.sampled_from([*J, "other"]), min_size=0, max_size=9)
value_st = st.one_of(st.floats(-5, 5), st.sampled_from([math.nan, math.inf, 1e300]))


@st.composite
def messages(draw) -> JointTrajectory:
    names = draw(st.one_of(st.just(J), st.permutations(J), names_st))
    msg = JointTrajectory(joint_names=names)
    msg.header.stamp = Time(sec=draw(st.sampled_from([0, 99, 100, 101])), nanosec=draw(st.integers(0, 999_999_999)))
    t = 0.0
    for _ in range(draw(st.integers(0, 4))):
        t += draw(st.sampled_from([-0.1, 0.0, 0.05, 0.1]))
        width = draw(st.sampled_from([len(names), len(names), max(len(names) - 1, 0)]))
        positions = draw(st.lists(value_st, min_size=width, max_size=width))
        msg.points.append(JointTrajectoryPoint(positions=positions, time_from_start=dur(abs(t))))
    return msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=messages())
def test_validator_never_raises_and_the_executor_accepts_exactly_what_it_accepts(msg):
    reason = validate_trajectory_msg(msg, J, NOW)
    chunk, why = accept_trajectory_msg(msg, J, NOW)
    assert (chunk is None) == (reason is not None) and why == (reason or "")
    if chunk is None:
        return
    ex = TrajectoryExecutor(J, np.asarray(HOME), interpolate_from_desired_state=True)
    ex.set_chunk(chunk, NOW)  # would raise TrajectoryRejected on a disagreement
    assert np.all(np.isfinite(ex.sample(NOW + 0.05)))


@pytest.mark.parametrize("from_command", [True, False])
def test_sim_core_starts_a_new_trajectory_where_the_profile_says_jtc_does(from_command):
    """interpolate_from_desired_state: the last command; JTC's default: the measured position."""
    import dataclasses

    from dexstack.sim.core import SimCore
    from dexstack.trajectory import ActionChunk

    profile = dataclasses.replace(PANDA, jtc_interpolate_from_desired_state=from_command)
    core = SimCore("pick_lift", profile, render=False)
    try:
        core.reset(0)
        target = np.asarray(HOME)
        target[0] += 0.5
        core.submit(ActionChunk.uniform(J, target[None], 0.5, core.time))
        core.step(100)  # 0.2 s into a 0.5 s move: the arm lags its command
        commanded, measured = core.executor.sample(core.time), core.joint_state()[0]
        assert abs(commanded[0] - measured[0]) > 1e-3
        core.submit(ActionChunk.uniform(J, target[None], 0.5, core.time))
        np.testing.assert_allclose(core.executor.sample(core.time), commanded if from_command else measured)
    finally:
        core.close()


@pytest.fixture(scope="module")
def panda_core():
    from dexstack.sim.core import SimCore

    core = SimCore("pick_lift", PANDA, render=False)
    yield core
    core.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(msg=messages())
def test_any_message_through_the_sim_core_leaves_a_finite_in_limit_command(panda_core, msg):
    """What the sim node does with a message (`accept_trajectory_msg`, then `submit`), on the real
    physics: nothing raises, and the controls MuJoCo receives are finite and within the limits."""
    panda_core.reset(0)
    panda_core.step(5)
    chunk, _ = accept_trajectory_msg(msg, J, NOW, clock_offset_s=NOW - panda_core.time)
    if chunk is not None:
        panda_core.submit(chunk)
    panda_core.step(25)
    ctrl = panda_core.data.ctrl
    assert np.all(np.isfinite(ctrl)) and panda_core.divergence is None
    q = panda_core.executor.sample(panda_core.time - panda_core.dt)  # the last step's command
    clipped = np.clip(q, PANDA.lower, PANDA.upper)
    np.testing.assert_allclose(ctrl[panda_core._arm_act], clipped[:7])
