"""Action chunks and how a joint-trajectory consumer executes them.

The semantics follow ros2_controllers' JointTrajectoryController:
- a chunk's start time is its stamp (the stamp of the observation it was computed from);
  no stamp (a zero header stamp in ROS) means "now";
- each point is due at start + time_from_start;
- points already in the past when the chunk arrives are skipped;
- the consumer interpolates from the position it is commanding at arrival (the "point
  before the trajectory") to the first future point, then between points, and holds the
  last point afterwards.
A new chunk replaces the previous one from its arrival on, so consecutive chunks join
without a stop or a position jump. The sim, the mock hardware and the in-process env all
execute chunks through `TrajectoryExecutor`, so they behave identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionChunk:
    """A joint-space chunk: `positions[i]` is due at `stamp + times[i]` (seconds)."""

    joint_names: tuple[str, ...]
    positions: np.ndarray  # (T, J) radians / metres
    times: np.ndarray  # (T,) time_from_start in seconds, strictly increasing, > 0
    stamp: float | None  # seconds on the producer's clock (may be negative or 0); None means "now"

    def __post_init__(self) -> None:
        pos = np.asarray(self.positions, dtype=np.float64)
        times = np.asarray(self.times, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != len(self.joint_names):
            raise ValueError(f"chunk positions shape {pos.shape} does not match {len(self.joint_names)} joints")
        if times.shape != (pos.shape[0],) or pos.shape[0] == 0:
            raise ValueError(f"chunk needs one time per point: {times.shape} vs {pos.shape[0]} points")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(times))):
            raise ValueError("chunk contains non-finite values")
        if np.any(times <= 0) or np.any(np.diff(times) <= 0):
            raise ValueError("chunk time_from_start must be positive and strictly increasing")
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "times", times)

    @classmethod
    def uniform(cls, joint_names, positions: np.ndarray, dt: float, stamp: float | None) -> ActionChunk:
        """Points spaced `dt` apart, the first one `dt` after the stamp."""
        positions = np.asarray(positions, dtype=np.float64)
        return cls(tuple(joint_names), positions, dt * np.arange(1, len(positions) + 1), stamp)


class TrajectoryExecutor:
    """Samples the commanded joint position at any time, JointTrajectoryController-style."""

    def __init__(self, joint_names, initial_position: np.ndarray) -> None:
        self.joint_names = tuple(joint_names)
        self._hold = np.asarray(initial_position, dtype=np.float64).copy()
        self._knot_t: np.ndarray | None = None  # absolute times, first knot = arrival
        self._knot_q: np.ndarray | None = None
        self.skipped_points = 0  # total points dropped for being in the past (diagnostics)

    def reset(self, position: np.ndarray) -> None:
        """Drop any trajectory and hold `position`."""
        self._hold = np.asarray(position, dtype=np.float64).copy()
        self._knot_t = self._knot_q = None

    def hold(self, now: float) -> None:
        """Cancel the active trajectory and hold what is being commanded now."""
        self._hold = self.sample(now)
        self._knot_t = self._knot_q = None

    @property
    def active(self) -> bool:
        return self._knot_t is not None

    def set_chunk(self, chunk: ActionChunk, now: float) -> int:
        """Start executing `chunk` at time `now`; returns how many points were kept.

        Joint order may differ from ours (a message's names define its order). A chunk
        whose points are all in the past is ignored and the current command is held: it
        was computed from an observation too old to act on.
        """
        if set(chunk.joint_names) != set(self.joint_names) or len(chunk.joint_names) != len(self.joint_names):
            raise ValueError(f"chunk joints {list(chunk.joint_names)} do not match {list(self.joint_names)}")
        order = [chunk.joint_names.index(n) for n in self.joint_names]
        start = now if chunk.stamp is None else chunk.stamp
        due = start + chunk.times
        future = due > now
        self.skipped_points += int(np.count_nonzero(~future))
        if not future.any():
            self.hold(now)
            return 0
        current = self.sample(now)
        self._knot_t = np.concatenate([[now], due[future]])
        self._knot_q = np.vstack([current, chunk.positions[future][:, order]])
        return int(future.sum())

    def sample(self, t: float) -> np.ndarray:
        """Commanded position at time `t` (linear interpolation between knots)."""
        if self._knot_t is None:
            return self._hold.copy()
        kt, kq = self._knot_t, self._knot_q
        if t >= kt[-1]:
            return kq[-1].copy()
        if t <= kt[0]:
            return kq[0].copy()
        i = int(np.searchsorted(kt, t, side="right")) - 1
        w = (t - kt[i]) / (kt[i + 1] - kt[i])
        return (1.0 - w) * kq[i] + w * kq[i + 1]
