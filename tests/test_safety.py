"""Safety filter logic: limits, rate limit, ramp, e-stop latch, watchdog, bad input (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from dexstack.hardware.profiles import PANDA
from dexstack.hardware.safety import SafetyFilter
from dexstack.trajectory import ActionChunk

HOME = np.asarray(PANDA.home)
NAMES = PANDA.joint_names


def chunk_from(points, dt: float = 0.1, stamp: float = 10.0, names=NAMES) -> ActionChunk:
    return ActionChunk.uniform(names, np.atleast_2d(np.asarray(points, dtype=np.float64)), dt, stamp)


def enabled_filter(**kwargs) -> SafetyFilter:
    return SafetyFilter(PANDA, start_enabled=True, **kwargs)


def test_clamps_every_point_to_position_limits():
    measured = HOME.copy()
    measured[[0, 5, 7]] = [2.5, 0.3, 0.02]  # near the limits: a plausible first step reaches past them
    target = measured.copy()
    target[0] = 3.2  # above 2.8973
    target[5] = -0.2  # below -0.0175
    target[7] = 0.05  # finger above 0.04 m
    # Slow enough (2 s per point) that only the clamp changes anything.
    out, reasons = enabled_filter().filter(chunk_from([target, target], dt=2.0), measured, now=10.0)
    assert out is not None
    expected = target.copy()
    expected[[0, 5, 7]] = [PANDA.upper[0], PANDA.lower[5], PANDA.upper[7]]
    np.testing.assert_allclose(out.positions, [expected, expected])
    assert np.all(out.positions >= PANDA.lower) and np.all(out.positions <= PANDA.upper)
    assert len(reasons) == 1 and "clamped" in reasons[0]
    for joint in ("panda_joint1", "panda_joint6", "panda_finger_joint1"):
        assert joint in reasons[0]


def test_rate_limit_reduces_a_1_rad_step_in_0_1_s_to_vmax_times_dt():
    target = HOME.copy()
    target[0] += 1.0
    target[4] -= 1.0
    out, reasons = enabled_filter().filter(chunk_from([target], dt=0.1, stamp=10.0), HOME, now=10.0)
    assert out is not None
    np.testing.assert_allclose(out.positions[0, 0], HOME[0] + PANDA.vmax[0] * 0.1)
    np.testing.assert_allclose(out.positions[0, 4], HOME[4] - PANDA.vmax[4] * 0.1)
    np.testing.assert_allclose(out.positions[0, [1, 2, 3, 5, 6, 7]], HOME[[1, 2, 3, 5, 6, 7]])
    assert any("rate-limited" in r and "panda_joint1" in r and "panda_joint5" in r for r in reasons)


def test_fingers_may_lead_by_their_tracking_lead_the_arm_may_not():
    """A finger stopped by an object is commanded past it to grip (up to its lead); the arm gets
    only vmax * dt, and the lead is for the first point alone."""
    from dexstack.hardware.profiles import ADROIT

    f = SafetyFilter(ADROIT, start_enabled=True)
    measured = np.zeros(ADROIT.n_joints)
    target = measured.copy()
    target[0] = 0.2  # arm slide: 0.2 m in 0.1 s, limit 0.5 m/s
    finger = ADROIT.joint_names.index("FFJ1")
    target[finger] = 1.2  # 1.2 rad past the measured position
    chunk = ActionChunk(ADROIT.joint_names, np.stack([target, target + 0.0]), np.array([0.1, 0.2]), 10.0)
    out, reasons = f.filter(chunk, measured, now=10.0)
    assert out.positions[0, 0] == pytest.approx(0.05)  # 0.5 m/s * 0.1 s
    assert out.positions[0, finger] == pytest.approx(1.2)  # within 3 rad/s * 0.1 s + 1.6 rad
    assert any(r.startswith("rate-limited") and "ARTx" in r and "FFJ1" not in r for r in reasons)
    far = target.copy()
    far[finger] = 1.5
    out, _ = f.filter(ActionChunk(ADROIT.joint_names, far[None], np.array([0.1]), 10.0), measured, now=10.0)
    assert out.positions[0, finger] == pytest.approx(1.5)
    out, _ = f.filter(
        ActionChunk(ADROIT.joint_names, np.stack([measured, far]), np.array([0.1, 0.2]), 10.0), measured, now=10.0
    )
    assert out.positions[1, finger] == pytest.approx(0.3)  # a later point: vmax * dt only


def test_rate_limit_applies_between_consecutive_points_and_keeps_stamp_and_times():
    targets = np.repeat(HOME[None], 5, axis=0)
    targets[:, 1] = HOME[1] + np.array([0.1, 0.2, 1.2, 1.3, 1.4])  # one jump of 1 rad between points 2 and 3
    out, _ = enabled_filter().filter(chunk_from(targets, dt=0.1, stamp=10.0), HOME, now=10.0)
    steps = np.abs(np.diff(np.vstack([HOME, out.positions]), axis=0))
    assert np.all(steps <= PANDA.vmax * 0.1 + 1e-12)
    assert out.stamp == 10.0
    np.testing.assert_allclose(out.times, [0.1, 0.2, 0.3, 0.4, 0.5])


def test_reorders_to_profile_joint_order():
    perm = list(reversed(range(len(NAMES))))
    target = HOME + 0.01
    chunk = ActionChunk.uniform([NAMES[i] for i in perm], target[perm][None], 1.0, 10.0)
    out, reasons = enabled_filter().filter(chunk, HOME, now=10.0)
    assert out.joint_names == NAMES
    np.testing.assert_allclose(out.positions[0], np.clip(target, PANDA.lower, PANDA.upper))
    assert reasons == ["clamped to position limits: panda_finger_joint1"]  # home finger is at its 0.04 limit


def test_late_chunk_gets_no_motion_for_time_already_passed():
    # Stamp 0.25 s ago: the first two points are past, the third is due 0.05 s from now.
    target = HOME.copy()
    target[0] += 1.0
    out, _ = enabled_filter().filter(chunk_from([target] * 3, dt=0.1, stamp=9.75), HOME, now=10.0)
    np.testing.assert_allclose(out.positions[:2, 0], HOME[0])
    np.testing.assert_allclose(out.positions[2, 0], HOME[0] + PANDA.vmax[0] * 0.05)


def test_ramp_scale_after_enable():
    f = SafetyFilter(PANDA, ramp_time_s=2.0)
    assert f.ramp_scale(5.0) == 0.0  # disabled
    ok, _ = f.enable(5.0)
    assert ok
    assert f.ramp_scale(5.0) == 0.0
    assert f.ramp_scale(6.0) == pytest.approx(0.5)
    assert f.ramp_scale(7.0) == 1.0
    assert f.ramp_scale(100.0) == 1.0
    target = HOME.copy()
    target[0] += 1.0
    at_start, _ = f.filter(chunk_from([target], dt=0.1, stamp=5.0), HOME, now=5.0)
    np.testing.assert_allclose(at_start.positions[0], HOME)  # scale 0: no motion at all
    halfway, _ = f.filter(chunk_from([target], dt=0.1, stamp=6.0), HOME, now=6.0)
    np.testing.assert_allclose(halfway.positions[0, 0], HOME[0] + 0.5 * PANDA.vmax[0] * 0.1)
    full, _ = f.filter(chunk_from([target], dt=0.1, stamp=7.0), HOME, now=7.0)
    # From where the controller is commanding (the previous output), not the stale measurement.
    np.testing.assert_allclose(full.positions[0, 0], halfway.positions[0, 0] + PANDA.vmax[0] * 0.1)


def test_disabled_filter_holds_every_command():
    f = SafetyFilter(PANDA)
    out, reasons = f.filter(chunk_from([HOME]), HOME, now=10.0)
    assert out is None and reasons == ["disabled"]
    f.enable(10.0)
    f.disable(11.0)
    out, reasons = f.filter(chunk_from([HOME], stamp=11.0), HOME, now=11.0)
    assert out is None and reasons == ["disabled"]
    assert f.stats.held == 2


def test_estop_latches_until_reset_and_enable():
    f = enabled_filter()
    f.estop(1.0)
    assert f.filter(chunk_from([HOME]), HOME, now=1.0) == (None, ["stop latched: e-stop pressed"])
    f.estop(2.0, pressed=False)  # releasing the button alone does not unlatch
    assert f.filter(chunk_from([HOME]), HOME, now=2.0)[0] is None
    ok, message = f.enable(2.0)
    assert not ok and "reset_estop" in message
    ok, _ = f.reset_estop()
    assert ok and not f.estop_latched
    out, reasons = f.filter(chunk_from([HOME]), HOME, now=3.0)
    assert out is None and reasons == ["disabled"]  # reset alone does not re-enable
    assert f.enable(3.0)[0]
    out, _ = f.filter(chunk_from([HOME], dt=1.0, stamp=3.0), HOME, now=3.0)
    assert out is not None


def test_reset_refused_while_estop_still_pressed():
    f = enabled_filter()
    f.estop(1.0)
    ok, message = f.reset_estop()
    assert not ok and "still pressed" in message
    assert f.estop_latched


def test_watchdog_trips_on_stale_state_and_stopped_commands():
    f = enabled_filter(state_timeout_s=0.2, command_timeout_s=1.0)
    assert f.check(10.0, last_state_time=9.9, last_command_time=9.5) is None
    assert "stale" in f.check(10.0, last_state_time=9.7, last_command_time=9.9)
    assert "no joint states" in f.check(10.0, last_state_time=None, last_command_time=9.9)
    assert "commands stopped" in f.check(10.0, last_state_time=9.95, last_command_time=8.9)
    assert f.check(10.0, last_state_time=9.95, last_command_time=None) is None  # never commanded: nothing to stop
    f.disable(10.0)
    assert f.check(10.0, last_state_time=9.95, last_command_time=8.0) is None  # disabled: silence is expected


def test_command_timeout_counts_from_enable():
    f = SafetyFilter(PANDA, command_timeout_s=1.0)
    f.enable(20.0)
    assert f.check(20.5, last_state_time=20.45, last_command_time=5.0) is None
    assert "commands stopped" in f.check(21.2, last_state_time=21.15, last_command_time=5.0)


def test_nan_chunk_and_bad_measurement_give_holds():
    f = enabled_filter()
    chunk = chunk_from([HOME, HOME])
    chunk.positions[1, 2] = np.nan  # ActionChunk checks at construction; its array is still mutable
    out, reasons = f.filter(chunk, HOME, now=10.0)
    assert out is None and "non-finite" in reasons[0]
    out, reasons = f.reject("chunk contains non-finite values")
    assert out is None and reasons[0].startswith("bad input")
    assert f.stats.bad_input == 2 and f.stats.held == 2
    q = HOME.copy()
    q[3] = np.inf
    assert f.filter(chunk_from([HOME]), q, now=10.0)[0] is None
    assert f.filter(chunk_from([HOME]), None, now=10.0) == (None, ["no joint states received"])
    out, reasons = f.filter(chunk_from([HOME]), HOME, now=10.0, measured_time=9.5)
    assert out is None and "stale" in reasons[0]


def test_wrong_joint_names_give_hold():
    f = enabled_filter()
    names = (*NAMES[:-1], "panda_finger_joint2")
    out, reasons = f.filter(chunk_from([HOME], names=names), HOME, now=10.0)
    assert out is None and "do not match" in reasons[0] and "panda_finger_joint2" in reasons[0]
    assert f.last_hold_reason == reasons[0]


def test_clock_jumping_back_restarts_the_ramp_instead_of_freezing():
    f = SafetyFilter(PANDA, ramp_time_s=2.0)
    f.enable(50.0)
    target = HOME.copy()
    target[0] += 1.0
    f.filter(chunk_from([target], stamp=1.0), HOME, now=1.0)  # sim restarted: time 50 -> 1
    assert f.ramp_scale(2.0) == pytest.approx(0.5)
