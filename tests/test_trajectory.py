"""JointTrajectoryController semantics of TrajectoryExecutor (no ROS, no physics)."""

import numpy as np
import pytest

from dexstack.trajectory import ActionChunk, TrajectoryExecutor

NAMES = ("a", "b")


def chunk(points, dt=0.1, stamp=0.0, names=NAMES):
    return ActionChunk.uniform(names, np.asarray(points, dtype=float), dt, stamp)


def test_holds_initial_position_without_a_trajectory():
    ex = TrajectoryExecutor(NAMES, [0.5, -0.5])
    np.testing.assert_allclose(ex.sample(3.0), [0.5, -0.5])


def test_interpolates_from_current_command_to_first_point_then_between_points():
    ex = TrajectoryExecutor(NAMES, [0.0, 0.0])
    kept = ex.set_chunk(chunk([[1.0, 2.0], [2.0, 4.0]], stamp=1.0), now=1.0)
    assert kept == 2
    np.testing.assert_allclose(ex.sample(1.05), [0.5, 1.0])
    np.testing.assert_allclose(ex.sample(1.1), [1.0, 2.0])
    np.testing.assert_allclose(ex.sample(1.15), [1.5, 3.0])
    np.testing.assert_allclose(ex.sample(5.0), [2.0, 4.0])  # holds the last point


def test_points_in_the_past_are_skipped():
    ex = TrajectoryExecutor(NAMES, [0.0, 0.0])
    # Computed from an observation stamped 1.0, arriving at 1.25: points due 1.1 and 1.2 are gone.
    kept = ex.set_chunk(chunk([[9.0, 9.0], [8.0, 8.0], [3.0, 3.0], [4.0, 4.0]], stamp=1.0), now=1.25)
    assert kept == 2 and ex.skipped_points == 2
    np.testing.assert_allclose(ex.sample(1.25), [0.0, 0.0])  # no jump at arrival
    np.testing.assert_allclose(ex.sample(1.3), [3.0, 3.0])
    assert ex.sample(1.27)[0] < 3.0  # never visits the skipped 9.0 / 8.0


def test_consecutive_chunks_join_without_jump_or_stop():
    ex = TrajectoryExecutor(NAMES, [0.0, 0.0])
    ex.set_chunk(chunk([[0.1 * i, 0.0] for i in range(1, 9)], stamp=0.0), now=0.0)
    before = ex.sample(0.35)
    ex.set_chunk(chunk([[0.1 * i + 0.35, 0.0] for i in range(1, 9)], stamp=0.35), now=0.35)
    np.testing.assert_allclose(ex.sample(0.35), before)  # continuous at the switch
    samples = np.array([ex.sample(t)[0] for t in np.arange(0.35, 0.8, 0.01)])
    assert np.all(np.diff(samples) > 0)  # keeps moving: no stop


def test_chunk_entirely_in_the_past_is_ignored_and_holds():
    ex = TrajectoryExecutor(NAMES, [0.2, 0.2])
    assert ex.set_chunk(chunk([[5.0, 5.0]], stamp=1.0), now=2.0) == 0
    np.testing.assert_allclose(ex.sample(2.5), [0.2, 0.2])


def test_joint_order_follows_the_message_names():
    ex = TrajectoryExecutor(NAMES, [0.0, 0.0])
    ex.set_chunk(chunk([[1.0, 2.0]], stamp=0.0, names=("b", "a")), now=0.0)
    np.testing.assert_allclose(ex.sample(1.0), [2.0, 1.0])


def test_bad_chunks_raise_clear_errors():
    ex = TrajectoryExecutor(NAMES, [0.0, 0.0])
    with pytest.raises(ValueError, match="do not match"):
        ex.set_chunk(chunk([[1.0, 2.0]], names=("a", "c")), now=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        chunk([[np.nan, 0.0]])
    with pytest.raises(ValueError, match="strictly increasing"):
        ActionChunk(NAMES, np.zeros((2, 2)), np.array([0.2, 0.1]), 0.0)
    with pytest.raises(ValueError, match="shape"):
        ActionChunk(NAMES, np.zeros((2, 3)), np.array([0.1, 0.2]), 0.0)


def test_negative_stamp_is_a_time_not_now():
    # Episode-relative time: a chunk computed just before the episode's t=0 has a negative stamp.
    ex = TrajectoryExecutor(NAMES, [0.0, 0.0])
    kept = ex.set_chunk(chunk([[9.0, 9.0], [1.0, 1.0], [2.0, 2.0]], stamp=-0.15), now=0.0)
    assert kept == 2  # the point due at -0.05 is past; "now" would have kept all three
    np.testing.assert_allclose(ex.sample(0.05), [1.0, 1.0])
