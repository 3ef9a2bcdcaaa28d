"""What a stock ros2_controllers JointTrajectoryController (JTC) accepts, for ROS messages.

`validate_trajectory_msg` applies JTC's `validate_trajectory_msg` rules (joint_trajectory_controller.cpp,
humble to master; the rules themselves are `dexstack.trajectory.trajectory_rejection`) to a
`trajectory_msgs/JointTrajectory`, read by attribute so this module needs no ROS import. The sim node
and the mock hardware node refuse exactly what it refuses; tests replay every hold the safety filter
emits through it.

Facts from the source that the rest of the stack must respect:
- an empty trajectory is refused ("Empty trajectory received"): a hold must carry a point;
- JTC's own hold (`init_hold_position_msg` + `set_hold_position`) is one point, time_from_start 0,
  header stamp 0, at the position to hold: send holds in that form;
- a non-zero stamp whose last point is due before the controller's now is refused ("ends in the
  past"): a hold stamped with an observation's (past) stamp and time_from_start 0 is refused on a
  robot, though a lockstep sim (whose now equals that stamp) accepts it;
- JTC does not check for NaN: a NaN position passes validation and is interpolated into the command
  interface. dexstack refuses it (strict mode), and every producer must never send one;
- duplicated joint names pass JTC's checks when the count matches (one controller joint is then
  commanded a stale value); strict mode refuses them;
- a negative header stamp makes rclcpp::Time throw inside JTC's subscription callback; refused here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from dexstack.trajectory import ActionChunk, trajectory_from_msg, trajectory_rejection

if TYPE_CHECKING:
    from trajectory_msgs.msg import JointTrajectory


def validate_trajectory_msg(
    msg: JointTrajectory, controller_joints: Sequence[str], now_s: float, *, strict: bool = True
) -> str | None:
    """None if a JTC controlling `controller_joints` accepts `msg` at `now_s` (seconds on the
    controller's clock, the stamp's time base), else the reason it refuses it (JTC's log message).

    strict (default): also refuse non-finite values, duplicated joint names and negative stamps,
    which a stock JTC accepts or crashes on (module docstring); strict=False: JTC's rules alone."""
    if msg.header.stamp.sec < 0:
        # rclcpp::Time(msg) throws "cannot store a negative time point" in JTC's callback.
        return f"negative header stamp ({msg.header.stamp.sec} s): rclcpp::Time refuses it"
    # trajectory.cpp, Trajectory::sample: a zero start time means "start now" (start None).
    names, start, points = trajectory_from_msg(msg)
    return trajectory_rejection(names, start, points, controller_joints, now_s, strict=strict)


def accept_trajectory_msg(
    msg: JointTrajectory, controller_joints: Sequence[str], now_s: float, clock_offset_s: float = 0.0
) -> tuple[ActionChunk | None, str]:
    """(chunk, "") for a trajectory `validate_trajectory_msg` accepts at `now_s`, else (None, reason).

    The chunk's stamp is moved onto a clock whose zero is `clock_offset_s` on the message's clock
    (the sim's episode time); a zero stamp stays None ("now"). Positions only, in the message's
    joint order (see `dexstack.trajectory` for what is not executed)."""
    reason = validate_trajectory_msg(msg, controller_joints, now_s)
    if reason is not None:
        return None, reason
    names, start, points = trajectory_from_msg(msg)
    start = None if start is None else start - clock_offset_s
    positions = np.array([p.positions for p in points], dtype=np.float64)
    times = np.array([p.time_from_start for p in points], dtype=np.float64)
    return ActionChunk(names, positions, times, start), ""
