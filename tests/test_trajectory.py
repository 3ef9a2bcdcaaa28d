"""JointTrajectoryController semantics of TrajectoryExecutor (no ROS, no physics).

Each expectation is what ros2_controllers' JTC does (joint_trajectory_controller.cpp
`validate_trajectory_msg`, `update`; trajectory.cpp `Trajectory::sample`)."""

import numpy as np
import pytest

from dexstack.trajectory import ActionChunk, TrajectoryExecutor, TrajectoryRejected

NAMES = ("a", "b")


def chunk(points, dt=0.1, stamp=0.0, names=NAMES):
    return ActionChunk.uniform(names, np.asarray(points, dtype=float), dt, stamp)


def executor(q0=(0.0, 0.0), from_command=True) -> TrajectoryExecutor:
    return TrajectoryExecutor(NAMES, np.asarray(q0, dtype=float), interpolate_from_desired_state=from_command)


def test_holds_initial_position_without_a_trajectory():
    ex = executor([0.5, -0.5])
    np.testing.assert_allclose(ex.sample(3.0), [0.5, -0.5])


def test_interpolates_from_current_command_to_first_point_then_between_points():
    ex = executor()
    kept = ex.set_chunk(chunk([[1.0, 2.0], [2.0, 4.0]], stamp=1.0), now=1.0)
    assert kept == 2
    np.testing.assert_allclose(ex.sample(1.05), [0.5, 1.0])
    np.testing.assert_allclose(ex.sample(1.1), [1.0, 2.0])
    np.testing.assert_allclose(ex.sample(1.15), [1.5, 3.0])
    np.testing.assert_allclose(ex.sample(5.0), [2.0, 4.0])  # holds the last point


def test_jtc_default_starts_from_the_measured_position():
    # interpolate_from_desired_state: false (JTC's default): the point before the trajectory is
    # the measured state read at the first update after arrival.
    ex = executor(from_command=False)
    with pytest.raises(ValueError, match="measured"):
        ex.set_chunk(chunk([[1.0, 1.0]], stamp=1.0), now=1.0)
    ex.set_chunk(chunk([[1.0, 1.0]], stamp=1.0), now=1.0, measured=np.array([0.4, -0.2]))
    np.testing.assert_allclose(ex.sample(1.0), [0.4, -0.2])
    np.testing.assert_allclose(ex.sample(1.05), [0.7, 0.4])


def test_past_points_are_not_replayed_the_command_joins_the_trajectory_where_it_is_now():
    ex = executor()
    # Computed from an observation stamped 1.0, arriving at 1.25: points due 1.1 and 1.2 are gone.
    # JTC samples the trajectory's own segment [1.2 -> 1.3] at 1.25: halfway from 8.0 to 3.0.
    kept = ex.set_chunk(chunk([[9.0, 9.0], [8.0, 8.0], [3.0, 3.0], [4.0, 4.0]], stamp=1.0), now=1.25)
    assert kept == 2 and ex.skipped_points == 2
    np.testing.assert_allclose(ex.sample(1.25), [5.5, 5.5])
    np.testing.assert_allclose(ex.sample(1.3), [3.0, 3.0])
    np.testing.assert_allclose(ex.sample(1.35), [3.5, 3.5])


def test_consecutive_chunks_join_without_jump_or_stop():
    ex = executor()
    ex.set_chunk(chunk([[0.1 * i, 0.0] for i in range(1, 9)], stamp=0.0), now=0.0)
    before = ex.sample(0.35)
    ex.set_chunk(chunk([[0.1 * i + 0.35, 0.0] for i in range(1, 9)], stamp=0.35), now=0.35)
    np.testing.assert_allclose(ex.sample(0.35), before)  # continuous at the switch
    samples = np.array([ex.sample(t)[0] for t in np.arange(0.35, 0.8, 0.01)])
    assert np.all(np.diff(samples) > 0)  # keeps moving: no stop


def test_a_chunk_ending_in_the_past_is_refused_and_the_previous_one_continues():
    ex = executor([0.2, 0.2])
    ex.set_chunk(chunk([[1.2, 1.2]], dt=1.0, stamp=1.0), now=1.0)
    with pytest.raises(TrajectoryRejected, match="ends in the past"):
        ex.set_chunk(chunk([[5.0, 5.0]], stamp=1.0), now=2.0)
    assert ex.rejected == 1 and ex.accepted == 1 and "ends in the past" in ex.last_rejection
    np.testing.assert_allclose(ex.sample(1.5), [0.7, 0.7])  # still the first trajectory
    np.testing.assert_allclose(ex.sample(2.5), [1.2, 1.2])


def test_zero_time_hold_jumps_to_its_point_and_stays_like_jtc_own_hold():
    ex = executor([0.0, 0.0])
    ex.set_chunk(chunk([[1.0, 1.0]], dt=1.0, stamp=0.0), now=0.0)
    here = ex.sample(0.4)
    hold = ActionChunk(NAMES, here[None], np.array([0.0]), None)  # stamp 0 = now, time_from_start 0
    assert ex.set_chunk(hold, now=0.4) == 0
    np.testing.assert_allclose(ex.sample(0.4), here)
    np.testing.assert_allclose(ex.sample(10.0), here)


def test_joint_order_follows_the_message_names():
    ex = executor()
    ex.set_chunk(chunk([[1.0, 2.0]], stamp=0.0, names=("b", "a")), now=0.0)
    np.testing.assert_allclose(ex.sample(1.0), [2.0, 1.0])


def test_bad_chunks_raise_clear_errors_and_change_nothing():
    ex = executor()
    with pytest.raises(TrajectoryRejected, match="doesn't match the controller's joints"):
        ex.set_chunk(chunk([[1.0, 2.0]], names=("a", "c")), now=0.0)
    with pytest.raises(TrajectoryRejected, match="duplicate joint names"):
        ex.set_chunk(chunk([[1.0, 2.0]], names=("a", "a")), now=0.0)
    assert ex.rejected == 2 and not ex.active
    with pytest.raises(ValueError, match="non-finite"):
        chunk([[np.nan, 0.0]])
    with pytest.raises(ValueError, match="strictly increasing"):
        ActionChunk(NAMES, np.zeros((2, 2)), np.array([0.2, 0.1]), 0.0)
    with pytest.raises(ValueError, match="shape"):
        ActionChunk(NAMES, np.zeros((2, 3)), np.array([0.1, 0.2]), 0.0)
    # JTC does not check the first point's time: 0 (its own hold) is a valid chunk.
    ActionChunk(NAMES, np.zeros((1, 2)), np.array([0.0]), None)


def test_negative_stamp_is_a_time_not_now():
    # Episode-relative time: a chunk computed just before the episode's t=0 has a negative stamp.
    ex = executor()
    kept = ex.set_chunk(chunk([[9.0, 9.0], [1.0, 1.0], [2.0, 2.0]], stamp=-0.15), now=0.0)
    assert kept == 2  # the point due at -0.05 is past; "now" would have kept all three
    np.testing.assert_allclose(ex.sample(0.05), [1.0, 1.0])
