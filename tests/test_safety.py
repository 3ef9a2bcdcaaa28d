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
    """No arrival margin unless asked: the arithmetic below is that of the limit itself."""
    return SafetyFilter(PANDA, start_enabled=True, **({"arrival_margin_s": 0.0} | kwargs))


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

    f = SafetyFilter(ADROIT, start_enabled=True, arrival_margin_s=0.0)
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
    f = SafetyFilter(PANDA, ramp_time_s=2.0, arrival_margin_s=0.0)
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


# --- holds a stock JointTrajectoryController accepts (issue 12 row 1) ----------------------
def assert_jtc_stop(hold: ActionChunk, now: float, at: np.ndarray) -> None:
    """The properties ros2_controllers' validate_trajectory_msg checks, and that it stops at `at`:
    points, all profile joints, finite, increasing positive times, a stamped start ending after now."""
    assert hold is not None and hold.joint_names == NAMES and len(hold.times) >= 1
    assert np.all(np.isfinite(hold.positions)) and np.all(hold.times > 0) and np.all(np.diff(hold.times) > 0)
    assert hold.stamp is None or hold.stamp + hold.times[-1] > now
    np.testing.assert_allclose(hold.positions[-1], at)


def test_hold_is_one_point_at_the_commanded_position_ending_after_now():
    f = enabled_filter()
    assert f.hold(10.0) is None  # nothing known, nothing commanded: nothing to send
    f.observe(HOME, 9.99)
    assert_jtc_stop(f.hold(10.0), 10.0, HOME)  # never commanded: the measurement
    target = HOME.copy()
    target[0] += 0.2
    out, _ = f.filter(chunk_from([target], dt=1.0, stamp=10.0), HOME, now=10.0)
    # Halfway through that chunk the controller commands HOME + 0.1: an e-stop holds there.
    hold = f.hold(10.5)
    assert hold.stamp is None  # "start now" (header stamp 0): no clock skew can make JTC reject it
    assert_jtc_stop(hold, 10.5, HOME + (target - HOME) / 2)
    # A hold answering a chunk stamped 80 ms ago keeps that stamp and still ends in the future.
    answer = f.hold(11.0, stamp=10.92)
    assert answer.stamp == 10.92
    assert_jtc_stop(answer, 11.0, HOME + (target - HOME) / 2)
    np.testing.assert_allclose(f.commanded(20.0), HOME + (target - HOME) / 2)  # and the mirror stays there


def test_rate_limit_starts_where_the_controller_is_commanding_not_at_the_old_measurement():
    """Row 4: an observation 80 ms old at full speed lags the command; the next chunk is limited
    from the command, so the arm never moves faster than the limit at the seam."""
    f = enabled_filter()
    v = PANDA.vmax[0]
    for k in range(20):
        now = 10.0 + 0.1 * k
        stale = f.commanded(now - 0.08) if k else HOME  # what the robot measured 80 ms ago
        target = (f.commanded(now) if k else HOME).copy()
        target[0] += 0.5  # asks for 2.3x the limit every tick
        out, _ = f.filter(chunk_from([target], dt=0.1, stamp=now - 0.08), stale, now=now)
        assert out is not None
    # What the controller executes (it starts each chunk from its command at arrival):
    speeds = np.abs(np.diff([f.commanded(10.0 + 0.01 * i)[0] for i in range(200)])) / 0.01
    assert speeds.max() <= v * 1.0 + 1e-6


def old_rate_limit(f: SafetyFilter, target, times, stamp, start_q, now, scale):
    """The per-point loop the filter used before it was vectorised (reference for equality)."""
    vmax = f.profile.vmax * scale
    lead = f.profile.lead * scale
    start = now if stamp is None else stamp
    t_prev = max(start, now)
    q_prev = start_q
    out = np.empty_like(target)
    slowed = np.zeros(target.shape[1], dtype=bool)
    max_ratio = 0.0
    for i, due in enumerate(start + times):
        dt = max(due - t_prev, 0.0)
        step = target[i] - q_prev
        allowed = vmax * dt + (lead if i == 0 else 0.0)
        too_fast = np.abs(step) > allowed + 1e-9
        if too_fast.any():
            slowed |= too_fast
            ratio = np.abs(step[too_fast]) / np.maximum(allowed[too_fast], 1e-9)
            max_ratio = max(max_ratio, float(ratio.max()))
        q_prev = np.where(too_fast, q_prev + np.clip(step, -allowed, allowed), target[i])
        out[i] = q_prev
        t_prev = max(t_prev, due)
    return np.clip(out, f.profile.lower, f.profile.upper), max_ratio, slowed


@pytest.mark.parametrize("profile_name", ["panda", "adroit"])
def test_vectorised_rate_limit_equals_the_per_point_loop(profile_name):
    """Random chunks, in range and far out of it, late and early: bit-identical outputs."""
    from dexstack.hardware.profiles import get_profile

    profile = get_profile(profile_name)
    f = SafetyFilter(profile, start_enabled=True)
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 40))
        span = profile.upper - profile.lower
        start_q = profile.lower + rng.uniform(0.2, 0.8, profile.n_joints) * span
        speed = rng.choice([0.2, 0.9, 3.0])  # fraction of vmax per step: in range, near the limit, too fast
        dt = rng.uniform(0.005, 0.2)
        steps = rng.uniform(-1, 1, (n, profile.n_joints)) * profile.vmax * dt * speed
        target = np.clip(start_q + np.cumsum(steps, axis=0), profile.lower, profile.upper)
        times = dt * np.arange(1, n + 1)
        stamp, now = 10.0, 10.0 + rng.choice([0.0, 0.03, dt * 2.5])
        scale = float(rng.choice([1.0, 0.4]))
        new = f._rate_limit(target, times, stamp, start_q, now, scale)
        old = old_rate_limit(f, target, times, stamp, start_q, now, scale)
        np.testing.assert_array_equal(new[0], old[0], err_msg=f"trial {trial}")
        assert new[1] == old[1] and np.array_equal(new[2], old[2])
        if speed == 0.2 and now == stamp:
            np.testing.assert_array_equal(new[0], target)  # in range: untouched


# --- responsiveness and plausibility (rows 3, 6) -------------------------------------------
def test_too_long_chunks_are_refused_as_bad_input():
    from dexstack import contract

    f = enabled_filter()
    n = contract.MAX_CHUNK_POINTS + 1
    out, reasons = f.filter(ActionChunk.uniform(NAMES, np.repeat(HOME[None], n, 0), 0.001, 10.0), HOME, now=10.0)
    assert out is None and reasons[0].startswith("bad input") and str(contract.MAX_CHUNK_POINTS) in reasons[0]
    out, reasons = f.filter(chunk_from([HOME, HOME], dt=contract.MAX_CHUNK_HORIZON_S * 0.6), HOME, now=10.0)
    assert out is None and "exceeds" in reasons[0]
    assert f.stats.bad_input == 2


def test_implausible_first_point_is_refused_not_clamped():
    f = enabled_filter()
    target = HOME + 100.0  # the +100 rad policy
    out, reasons = f.filter(chunk_from([target]), HOME, now=10.0)
    assert out is None and "implausible" in reasons[0] and reasons[0].startswith("bad input")
    assert f.stats.bad_input == 1 and f.stats.passed == 0
    near = HOME.copy()
    near[0] += 0.9  # within the 1 rad bound: rate-limited as usual
    out, _ = f.filter(chunk_from([near]), HOME, now=10.0)
    assert out is not None


def test_hot_swap_ramps_in_again():
    f = enabled_filter(ramp_time_s=2.0)
    assert f.ramp_scale(5.0) == 1.0
    f.restart_ramp(5.0)
    assert f.ramp_scale(5.0) == 0.0 and f.ramp_scale(6.0) == pytest.approx(0.5)
    f.disable(7.0)
    f.restart_ramp(7.0)
    assert not f.enabled  # a swap never enables


# --- e-stop heartbeat, velocity monitor, watchdog horizon (rows 2, 4, 5) --------------------
def test_heartbeat_loss_latches_and_blocks_reset_until_heartbeats_return():
    f = enabled_filter(estop_heartbeat_timeout=0.2)
    assert f.heartbeat_check(100.0) is None  # the first check starts the clock
    f.estop(10.0, pressed=False, wall_time=100.1)
    assert f.heartbeat_check(100.25) is None
    reason = f.heartbeat_check(100.35)
    assert reason is not None and "heartbeat lost" in reason
    f.latch(10.3, reason)
    assert f.filter(chunk_from([HOME]), HOME, now=10.3)[1][0].startswith("stop latched: e-stop heartbeat lost")
    ok, message = f.reset_estop(wall_time=100.4)
    assert not ok and "heartbeat" in message
    f.estop(10.4, pressed=False, wall_time=100.45)
    assert f.reset_estop(wall_time=100.5)[0]
    assert enabled_filter().heartbeat_check(1e9) is None  # timeout 0: no heartbeat required


def test_velocity_monitor_latches_on_sustained_overspeed_only():
    f = enabled_filter(velocity_margin=1.5, velocity_sustain_s=0.05)
    q = HOME.copy()
    f.observe(q, 1.0)
    jump = q.copy()
    jump[0] += 0.5  # one sample at 50 rad/s (a sim reset teleport): not sustained
    assert f.observe(jump, 1.01) is None and f.observe(jump, 1.02) is None
    assert not f.estop_latched
    f.observe(HOME, 1.2)  # a reset 0.18 s later: one difference over a gap is no sustained speed
    assert not f.estop_latched
    q = HOME.copy()
    for k in range(1, 10):  # 2 x vmax for 90 ms
        q = q.copy()
        q[0] += 2.0 * PANDA.vmax[0] * 0.01
        reason = f.observe(q, 1.2 + 0.01 * k)
        if reason:
            break
    assert reason is not None and "panda_joint1" in reason and f.estop_latched and not f.enabled
    assert 0.05 <= 0.01 * k <= 0.07
    g = enabled_filter(velocity_margin=1.5, velocity_sustain_s=0.05)
    for k in range(50):  # 1.4 x vmax: under the margin
        g.observe(HOME + np.eye(8)[1] * 1.4 * PANDA.vmax[1] * 0.01 * k, 1.0 + 0.01 * k)
    assert not g.estop_latched


def test_command_timeout_follows_the_horizon_of_the_last_chunk():
    f = enabled_filter(command_timeout_s=1.0, min_command_timeout_s=0.25)
    f.filter(chunk_from([HOME] * 10, dt=0.1, stamp=10.0), HOME, now=10.0)  # 1 s horizon
    assert f.check(10.45, 10.44, 10.0) is None
    assert "commands stopped" in f.check(10.55, 10.54, 10.0)  # half the horizon: before it runs out
    f.filter(chunk_from([HOME], dt=0.1, stamp=20.0), HOME, now=20.0)  # one point: the minimum applies
    assert f.check(20.2, 20.19, 20.0) is None
    assert "commands stopped" in f.check(20.3, 20.29, 20.0)
    f.filter(chunk_from([HOME] * 40, dt=0.1, stamp=30.0), HOME, now=30.0)  # 4 s: command_timeout_s caps it
    assert "commands stopped" in f.check(31.1, 31.09, 30.0)


def test_wall_clock_silence_is_stale_even_when_the_node_clock_stopped():
    f = enabled_filter(wall_state_timeout_s=2.0)
    assert f.check(5.0, 5.0, 5.0, wall_silence=1.9) is None
    assert "wall-clock" in f.check(5.0, 5.0, 5.0, wall_silence=2.1)


def test_state_buffer_matches_stamps_else_latest():
    from dexstack.hardware.safety import StateBuffer

    b = StateBuffer(size=3)
    assert b.lookup(1.0) == (None, None) and b.newest_stamp is None
    for i in range(5):
        b.add(float(i), np.full(2, i), 10.0 + i)
    assert b.newest_stamp == 4.0
    assert b.lookup(3.0)[1] == 13.0 and b.lookup(None)[1] == 14.0
    assert b.lookup(0.0)[1] == 14.0  # evicted: the latest


def test_joint_positions_refuses_duplicate_and_missing_names():
    from dexstack.ros_nodes.common import joint_positions, joint_state_msg

    msg = joint_state_msg([*NAMES, NAMES[0]], [*HOME, 9.0])
    with pytest.raises(ValueError, match="panda_joint1"):
        joint_positions(msg, NAMES)
    with pytest.raises(KeyError, match="panda_finger_joint1"):
        joint_positions(joint_state_msg(NAMES[:-1], HOME[:-1]), NAMES)


def test_manifest_chunk_horizon_is_bounded():
    from dexstack import contract
    from dexstack.manifest import ManifestError, _check_outputs

    ok = {"kind": "joint_position_chunk", "joint_names": list(NAMES), "chunk_length": 8, "dt": 0.1}
    _check_outputs(ok)
    with pytest.raises(ManifestError, match="exceeds"):
        _check_outputs(ok | {"chunk_length": 100, "dt": contract.MAX_CHUNK_HORIZON_S / 50})
    with pytest.raises(ManifestError, match="exceeds"):
        _check_outputs(ok | {"chunk_length": contract.MAX_CHUNK_POINTS + 1, "dt": 0.001})


def test_arrival_margin_keeps_the_seam_under_the_limit_for_any_latency_within_it():
    """The controller starts a chunk from its command at arrival; the filter starts the limit
    from the command `arrival_margin_s` later, so every arrival up to then is within vmax."""
    f = enabled_filter(arrival_margin_s=0.02)
    v = PANDA.vmax[0]
    moving = HOME.copy()
    moving[0] += 0.5
    f.filter(chunk_from([moving], dt=0.5 / v, stamp=10.0), HOME, now=10.0)  # at full speed for 0.23 s
    back = f.commanded(10.1).copy()
    back[0] -= 0.5  # reverse at once, from an observation 80 ms old: first point due 20 ms after now
    latencies = np.linspace(0.0, 0.02, 9)
    before = [f.commanded(10.1 + latency)[0] for latency in latencies]  # what the controller runs until then
    out, _ = f.filter(chunk_from([back, back], dt=0.1, stamp=10.02), f.commanded(10.02), now=10.1)
    due = 10.02 + out.times
    for latency, q_arrival in zip(latencies, before, strict=True):
        arrival = 10.1 + latency
        knots = [(arrival, q_arrival)] + [(t, q) for t, q in zip(due, out.positions[:, 0], strict=True) if t > arrival]
        speeds = [abs(qb - qa) / (tb - ta) for (ta, qa), (tb, qb) in zip(knots, knots[1:], strict=False)]
        assert max(speeds) <= v * (1 + 1e-9), f"latency {latency}: {max(speeds) / v:.2f}x the limit"


def test_the_mirror_starts_at_the_measurement_not_at_the_first_chunk():
    f = enabled_filter()
    target = HOME.copy()
    target[0] += 0.4
    f.filter(chunk_from([target, target], dt=1.0, stamp=10.0), HOME, now=10.0)
    np.testing.assert_allclose(f.commanded(10.0), HOME)
    np.testing.assert_allclose(f.commanded(10.5)[0], HOME[0] + 0.2)


def test_no_arrival_margin_when_the_controller_clock_waits_for_the_answer():
    """Lockstep: the chunk answers an observation stamped `now`, the sim's clock waits for the
    answer, so the whole first interval may be used (in-process and through-ROS results agree)."""
    f = enabled_filter(arrival_margin_s=0.05)
    target = HOME.copy()
    target[0] += 1.0
    out, _ = f.filter(chunk_from([target], dt=0.1, stamp=10.0), HOME, now=10.0)
    np.testing.assert_allclose(out.positions[0, 0], HOME[0] + PANDA.vmax[0] * 0.1)
    start = f.commanded(20.06)[0]
    out, _ = f.filter(chunk_from([target], dt=0.1, stamp=20.0), HOME, now=20.01)  # 10 ms old: margin applies
    np.testing.assert_allclose(out.positions[0, 0], start + PANDA.vmax[0] * 0.04)


def test_take_trajectory_reads_only_the_header_of_an_oversized_message():
    """The node refuses a huge chunk from its CDR header without building its points."""
    from rclpy.serialization import serialize_message
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from dexstack.ros_nodes.common import take_trajectory

    rng = np.random.default_rng(3)
    for _ in range(100):
        msg = JointTrajectory()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(rng.integers(-5, 2**31 - 1)), int(rng.integers(0, 10**9))
        msg.header.frame_id = "f" * int(rng.integers(0, 7))
        msg.joint_names = ["j" * int(rng.integers(1, 9)) for _ in range(int(rng.integers(0, 5)))]
        n = int(rng.integers(0, 12))
        msg.points = [JointTrajectoryPoint(positions=list(rng.normal(size=int(rng.integers(0, 4))))) for _ in range(n)]
        raw = serialize_message(msg)
        full, problem = take_trajectory(raw, 100)
        assert problem is None and full == msg
        if n:
            head, problem = take_trajectory(raw, n - 1)
            assert f"{n} points" in problem and head.header == msg.header and not head.points


# --- property-based: whatever the policy sends, the output is safe ------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_floats = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.floats(-4.0, 4.0)


@settings(max_examples=200, deadline=None)
@given(
    positions=st.lists(st.lists(_floats, min_size=8, max_size=8), min_size=1, max_size=12),
    dt=st.floats(0.001, 0.5),
    age=st.floats(0.0, 0.2),
    scale_time=st.floats(0.0, 3.0),
)
def test_any_chunk_gives_a_hold_or_a_finite_in_limit_rate_limited_command(positions, dt, age, scale_time):
    f = SafetyFilter(PANDA, ramp_time_s=2.0)
    f.enable(10.0)
    now = 10.0 + scale_time
    f.observe(HOME, now - 0.01)  # as the node does for every joint state
    q = np.asarray(positions, dtype=np.float64)
    chunk = ActionChunk.uniform(NAMES, np.where(np.isfinite(q), q, 0.0), dt, now - age)
    chunk.positions[:] = q  # the arrays are mutable after the checks: NaN and inf get in anyway
    anchor = f.commanded(now) if f.commanded(now) is not None else HOME
    out, reasons = f.filter(chunk, HOME, now, measured_time=now)
    if out is None:
        assert reasons and f.hold(now, chunk.stamp) is not None
        return
    assert np.all(np.isfinite(out.positions))
    assert np.all(out.positions >= PANDA.lower) and np.all(out.positions <= PANDA.upper)
    # From where the controller is (arrival plus the margin) no segment is faster than allowed.
    scale = f.ramp_scale(now)
    t0 = now + (f.arrival_margin_s if age > 0 else 0.0)  # a chunk stamped now: no margin (lockstep)
    due = chunk.stamp + out.times
    later = due >= t0
    knots_t = np.concatenate([[t0], due[later]])
    knots_q = np.vstack([anchor, out.positions[later]])
    steps = np.abs(np.diff(knots_q, axis=0))
    assert np.all(steps <= PANDA.vmax * scale * np.diff(knots_t)[:, None] + PANDA.lead * scale + 1e-9)


def test_a_hold_after_the_arm_was_moved_elsewhere_stops_where_it_is():
    """A sim reset (or another controller) moves the arm away from what we commanded: a hold must
    not drive it back to our old command."""
    f = enabled_filter()
    f.observe(HOME, 9.99)
    target = HOME.copy()
    target[0] += 0.5
    f.filter(chunk_from([target], dt=1.0, stamp=10.0), HOME, now=10.0)
    f.observe(HOME, 12.0)  # reset: back at home, our mirror still says HOME + 0.5
    hold = f.hold(12.01)
    np.testing.assert_allclose(hold.positions[0], HOME)
    np.testing.assert_allclose(f.commanded(13.0), HOME)
