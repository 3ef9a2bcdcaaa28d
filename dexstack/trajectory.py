"""Action chunks, and how ros2_controllers' JointTrajectoryController (JTC) validates and executes them.

This module is the project's model of JTC (read from ros2_controllers humble, jazzy, kilted and
master, `joint_trajectory_controller/src/joint_trajectory_controller.cpp` and `trajectory.cpp`).
The sim cores, the mock hardware, the in-process envs and the MCAP replay all execute trajectories
through `TrajectoryExecutor`, so they accept, refuse and follow exactly what a robot's JTC would.

Validation (`trajectory_rejection`; ROS messages: `dexstack.hardware.jtc.validate_trajectory_msg`):
a trajectory JTC refuses changes nothing, the previous one keeps running. In particular an empty
trajectory is refused ("Empty trajectory received"): it never means "stop" on a robot.

Execution of an accepted trajectory (JTC `Trajectory::sample`, positions only):
- its start time is the header stamp; a zero stamp (here `stamp=None`) means "now";
- point i is due at start + time_from_start[i];
- before the first point is due, the command moves linearly from the "point before the trajectory"
  (the state at arrival) to the first point; then linearly between consecutive points; after the
  last point it holds the last point;
- points due in the past are not replayed: at arrival the command goes straight to where the
  trajectory is at that instant (JTC samples the trajectory's own segment, so a late chunk makes
  the command jump onto it; there is no interpolation from the current command to a later point);
- the point before the trajectory is the last command when `interpolate_from_desired_state` is set
  (JTC's parameter of that name, jazzy and later; `open_loop_control` in humble), else the measured
  position (JTC's default), which callers pass to `set_chunk`.

Remaining differences from JTC (by design, documented):
- the arrival time is the time `set_chunk` is called; JTC takes the first controller update after
  arrival (at most one controller period later) and, from jazzy on, writes the command sampled one
  update period ahead;
- velocities, accelerations and efforts in points are validated but not executed: position-only
  points, which is all this project sends, are interpolated linearly by JTC too (its splines
  reduce to linear interpolation without velocities);
- "ends in the past" is decided to 1 us (`_TIME_TOL`), not to JTC's exact nanosecond;
- partial-joint goals (`allow_partial_joints_goal`, default false) and angle wrap-around are not
  modelled: trajectories must name every controller joint;
- `strict` validation (the default) also refuses what JTC accepts but cannot execute sanely:
  non-finite values (JTC interpolates a NaN straight into the command interface) and duplicated
  joint names (JTC then commands the unnamed joint a stale value from `sort_to_local_joint_order`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# JTC compares the last point's velocities with float epsilon (validate_trajectory_msg).
_FLOAT_EPS = float(np.finfo(np.float32).eps)
# JTC compares integer nanoseconds; float seconds of wall-clock time resolve ~0.2 us, and a stamp
# rounded to whole nanoseconds may read a hair before the float clock it came from.
_TIME_TOL = 1e-6


class TrajectoryRejected(ValueError):
    """A trajectory JTC refuses; the executor's state is unchanged."""


@dataclass(frozen=True)
class TrajectoryPoint:
    """One JointTrajectoryPoint in plain numbers: seconds, and one value per named joint (or none)."""

    time_from_start: float
    positions: Sequence[float]
    velocities: Sequence[float] = ()
    accelerations: Sequence[float] = ()
    effort: Sequence[float] = ()


def _seconds(t: Any) -> float:
    return t.sec + t.nanosec * 1e-9


def trajectory_from_msg(msg: Any) -> tuple[tuple[str, ...], float | None, list[TrajectoryPoint]]:
    """A `trajectory_msgs/JointTrajectory` (read by attribute: no ROS import) in plain numbers:
    (joint names, start stamp in seconds or None for the zero stamp "now", points)."""
    stamp = msg.header.stamp
    points = [
        TrajectoryPoint(
            _seconds(p.time_from_start), list(p.positions), list(p.velocities), list(p.accelerations), list(p.effort)
        )
        for p in msg.points
    ]
    return tuple(msg.joint_names), (None if stamp.sec == 0 and stamp.nanosec == 0 else _seconds(stamp)), points


def trajectory_rejection(
    joint_names: Sequence[str],
    stamp: float | None,
    points: Sequence[TrajectoryPoint],
    controller_joints: Sequence[str],
    now: float,
    *,
    strict: bool = True,
    allow_nonzero_velocity_at_trajectory_end: bool = False,
    time_tol: float = _TIME_TOL,
) -> str | None:
    """Why JTC refuses this trajectory, or None if it accepts it.

    stamp: the header stamp in seconds, None for a zero stamp ("start now"); now: the controller's
    clock in the same time base. The rules and their order are JTC's `validate_trajectory_msg`
    (jazzy, kilted, master; humble checks the end time before the joint names and refuses every
    effort field, with the same outcome for position-only trajectories). Defaults are JTC's
    parameter defaults from jazzy on (`allow_partial_joints_goal: false`,
    `allow_nonzero_velocity_at_trajectory_end: false`; humble defaults the latter to true,
    `allow_integration_in_goal_trajectories: false`, position command interface only).
    strict: also refuse non-finite values and duplicated joint names (dexstack's additions, see the
    module docstring); strict=False is JTC's rule set alone. time_tol: seconds by which "ends in
    the past" may be missed (float clocks; JTC compares exact nanoseconds).
    """
    names = list(joint_names)
    dof = len(controller_joints)
    # validate_trajectory_msg: "CHECK: Partial joint goals" (allow_partial_joints_goal is false).
    if len(names) != dof:
        return f"Joints on incoming trajectory don't match the controller joints ({len(names)} names for {dof} joints)"
    # "CHECK: if joint names are provided"
    if not names:
        return "Empty joint names on incoming trajectory"
    # "CHECK: if provided trajectory has points"
    if not points:
        return "Empty trajectory received"
    # "CHECK: If joint names are matching the joints defined for the controller"
    for name in names:
        if name not in controller_joints:
            return f"Incoming joint {name} doesn't match the controller's joints"
    if strict and len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        return f"duplicate joint names {dup} (JTC would leave a controller joint with a stale command)"
    # "CHECK: if trajectory ends with non-zero velocity (when option is disabled)"
    if not allow_nonzero_velocity_at_trajectory_end:
        for name, v in zip(names, points[-1].velocities, strict=False):
            if abs(v) > _FLOAT_EPS:  # a NaN passes, as in C++ (strict mode refuses it below)
                return f"Velocity of last trajectory point of joint {name} is not zero: {v}"
    # "CHECK: if trajectory end time is in the past (if start time defined)"
    if stamp is not None:
        end = stamp + float(points[-1].time_from_start)
        if end < now - time_tol:
            return f"Received trajectory with non-zero start time ({stamp:.6f}) that ends in the past ({end:.6f})"
    width = len(names)
    previous = 0.0
    for i, p in enumerate(points):
        t = float(p.time_from_start)
        if strict and not np.isfinite(t):
            return f"time_from_start of point #{i} is not finite: {t}"
        # "CHECK: if time of points in the trajectory is monotonous" (the first point is not checked)
        if i > 0 and not t > previous:
            return (
                f"Time between points {i - 1} and {i} is not strictly increasing, it is {previous} and {t} respectively"
            )
        previous = t
        # validate_trajectory_point_field: positions required, velocities/accelerations optional.
        if len(p.positions) != width:
            return f"Mismatch between joint_names size ({width}) and positions ({len(p.positions)}) at point #{i}"
        for kind, values in (("velocities", p.velocities), ("accelerations", p.accelerations)):
            if len(values) and len(values) != width:
                return f"Mismatch between joint_names size ({width}) and {kind} ({len(values)}) at point #{i}"
        # "reject effort entries" (no effort command interface on a position-controlled arm)
        if len(p.effort):
            return "Trajectories with effort fields are only supported for controllers using the 'effort' command interface"
        if strict:
            for kind, values in (
                ("positions", p.positions),
                ("velocities", p.velocities),
                ("accelerations", p.accelerations),
            ):
                if len(values) and not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
                    return f"non-finite {kind} at point #{i} (JTC would command them to the hardware)"
    return None


@dataclass(frozen=True)
class ActionChunk:
    """A joint-space chunk: `positions[i]` is due at `stamp + times[i]` (seconds).

    Any trajectory JTC accepts with position-only points can be one: times strictly increasing (the
    first may be 0, as in JTC's own hold), positions finite."""

    joint_names: tuple[str, ...]
    positions: np.ndarray  # (T, J) radians / metres
    times: np.ndarray  # (T,) time_from_start in seconds, strictly increasing
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
        if np.any(np.diff(times) <= 0):
            raise ValueError("chunk time_from_start must be strictly increasing")
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "times", times)

    @classmethod
    def uniform(cls, joint_names, positions: np.ndarray, dt: float, stamp: float | None) -> ActionChunk:
        """Points spaced `dt` apart, the first one `dt` after the stamp."""
        positions = np.asarray(positions, dtype=np.float64)
        return cls(tuple(joint_names), positions, dt * np.arange(1, len(positions) + 1), stamp)

    def points(self) -> list[TrajectoryPoint]:
        return [TrajectoryPoint(float(t), q) for t, q in zip(self.times, self.positions, strict=True)]


class TrajectoryExecutor:
    """Samples the commanded joint position at any time, as JTC does (see the module docstring).

    interpolate_from_desired_state: JTC's parameter; True starts each new trajectory from the last
    command, False (JTC's default) from the measured position passed to `set_chunk`."""

    def __init__(
        self, joint_names: Sequence[str], initial_position: np.ndarray, *, interpolate_from_desired_state: bool
    ) -> None:
        self.joint_names = tuple(joint_names)
        self.interpolate_from_desired_state = bool(interpolate_from_desired_state)
        self._hold = np.asarray(initial_position, dtype=np.float64).copy()
        self._before: tuple[float, np.ndarray] | None = None  # (arrival time, point before the trajectory)
        self._due: np.ndarray | None = None  # absolute due time of each point
        self._q: np.ndarray | None = None  # (T, J) points in our joint order
        self.skipped_points = 0  # points already due at arrival (diagnostics)
        self.accepted = 0
        self.rejected = 0
        self.last_rejection = ""

    def reset(self, position: np.ndarray) -> None:
        """Drop any trajectory and hold `position` (activation)."""
        self._hold = np.asarray(position, dtype=np.float64).copy()
        self._before = self._due = self._q = None

    def hold(self, now: float, position: np.ndarray | None = None) -> None:
        """JTC's own hold (`set_hold_position`, on cancel or deactivation): stop the trajectory and
        hold `position` from `now` (default: what is commanded now)."""
        self._hold = self.sample(now) if position is None else np.asarray(position, dtype=np.float64).copy()
        self._before = self._due = self._q = None

    @property
    def active(self) -> bool:
        """A trajectory is loaded (possibly finished and holding its last point)."""
        return self._due is not None

    def rejection(self, chunk: ActionChunk, now: float) -> str | None:
        """Why JTC would refuse `chunk` arriving at `now`, or None."""
        # Twice the validator's slack: a message it accepted on the node's clock is never refused
        # here for the float rounding of moving its stamp onto the executor's clock.
        return trajectory_rejection(
            chunk.joint_names, chunk.stamp, chunk.points(), self.joint_names, now, time_tol=2 * _TIME_TOL
        )

    def set_chunk(self, chunk: ActionChunk, now: float, measured: np.ndarray | None = None) -> int:
        """Start executing `chunk` arriving at `now`; returns the points not yet due.

        Raises `TrajectoryRejected` for a trajectory JTC refuses (counted; nothing changes, the
        previous trajectory keeps running). measured: the measured position in our joint order,
        required unless `interpolate_from_desired_state`. A message's names define its order."""
        reason = self.rejection(chunk, now)
        if reason is not None:
            self.rejected += 1
            self.last_rejection = reason
            raise TrajectoryRejected(reason)
        if self.interpolate_from_desired_state:
            before = self.sample(now)
        elif measured is None:
            raise ValueError("this executor starts trajectories from the measured position: pass `measured`")
        else:
            before = np.asarray(measured, dtype=np.float64).copy()
        order = [chunk.joint_names.index(n) for n in self.joint_names]
        start = now if chunk.stamp is None else chunk.stamp
        due = start + chunk.times
        self._before = (float(now), before)
        self._due = due
        self._q = chunk.positions[:, order]
        self.accepted += 1
        future = int(np.count_nonzero(due > now))
        self.skipped_points += len(due) - future
        return future

    def sample(self, t: float) -> np.ndarray:
        """Commanded position at time `t` (JTC `Trajectory::sample`, position-only points)."""
        if self._due is None:
            return self._hold.copy()
        due, q = self._due, self._q
        t_before, q_before = self._before
        if t < due[0]:
            # Before the first point: from the point before the trajectory (clamped at arrival).
            span = due[0] - t_before
            w = 1.0 if span <= 0 else min(max((t - t_before) / span, 0.0), 1.0)
            return (1.0 - w) * q_before + w * q[0]
        if t >= due[-1]:
            return q[-1].copy()
        i = int(np.searchsorted(due, t, side="right")) - 1
        w = (t - due[i]) / (due[i + 1] - due[i])
        return (1.0 - w) * q[i] + w * q[i + 1]
