"""The bridge to a robot's gripper: where the safety filter's whole-robot commands go when the gripper
has a controller of its own (`hardware/profiles.py` GripperSpec; docs/HARDWARE.md, "Gripper").

Policies command every joint of a profile, the gripper joint included, and the sim and mock hardware
execute that as one JointTrajectoryController (JTC) would. On a real arm the gripper usually has its
own controller, and the arm's JTC rejects a trajectory naming a joint it does not own ("Incoming joint
%s doesn't match the controller's joints", ros2_controllers joint_trajectory_controller.cpp
`validate_trajectory_msg`). `CommandOutput` is the safety filter's command publisher: it splits every
command it is given (chunks and holds alike) by the profile's gripper setting, in the filter's own
process, so a stop never depends on one more process being alive:

- "arm_controller": the whole trajectory to `/<controller>/joint_trajectory`, as before;
- "trajectory": the gripper joint's part (same stamp, same point times, so JTC skips the same past
  points) to `/<gripper_controller>/joint_trajectory`, the rest to the arm;
- "parallel_gripper_command" / "gripper_command": the rest to the arm, and the gripper's target as an
  action goal on `/<gripper_controller>/gripper_cmd` (ros2_controllers parallel_gripper_action_controller:
  control_msgs/action/ParallelGripperCommand, one position per goal or the goal is rejected; the
  older gripper_action_controller: control_msgs/action/GripperCommand). Such a controller moves to one
  target per goal and each accepted goal preempts the running one (`accepted_callback` ->
  `preempt_active_goal`), so the target is the trajectory's first point not yet in the past (JTC skips
  past points), sent only when it moved by more than the profile's deadband. control_msgs has no pip
  wheel: it is imported when such an interface is chosen, with a clear error if it is missing.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack import contract
from dexstack.hardware.profiles import GripperSpec, RobotProfile

ACTION_TYPES = {"parallel_gripper_command": "ParallelGripperCommand", "gripper_command": "GripperCommand"}
LOG_THROTTLE_S = 2.0


def split_trajectory(msg: JointTrajectory, joint: str) -> tuple[JointTrajectory, JointTrajectory]:
    """(the trajectory without `joint`, `joint` alone): same header and point times; positions,
    velocities and accelerations split alike. A trajectory without `joint` gives an empty-named
    gripper part. Raises ValueError on points whose length does not match the joint names."""
    names = list(msg.joint_names)
    keep = [i for i, name in enumerate(names) if name != joint]
    mine = [i for i, name in enumerate(names) if name == joint]
    parts = []
    for index in (keep, mine):
        part = JointTrajectory()
        part.header = msg.header
        part.joint_names = [names[i] for i in index]
        for point in msg.points:
            new = JointTrajectoryPoint(time_from_start=point.time_from_start)
            for field in ("positions", "velocities", "accelerations", "effort"):
                values = list(getattr(point, field))
                if values and len(values) != len(names):
                    raise ValueError(f"trajectory point has {len(values)} {field} for {len(names)} joints")
                setattr(new, field, [values[i] for i in index] if values else [])
            part.points.append(new)
        parts.append(part)
    return parts[0], parts[1]


def gripper_target(msg: JointTrajectory, now_ns: int) -> float | None:
    """The one position a single-target gripper should move to now: that of the first point not yet
    in the past (stamp + time_from_start; stamp 0 means "now", as for JTC), else the last point's.
    None when the trajectory has no point or no finite position for a single joint."""
    if len(msg.joint_names) != 1 or not msg.points:
        return None
    start = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec or now_ns
    ends = [start + p.time_from_start.sec * 1_000_000_000 + p.time_from_start.nanosec for p in msg.points]
    chosen = next((p for p, t in zip(msg.points, ends, strict=True) if t >= now_ns), msg.points[-1])
    if len(chosen.positions) != 1 or not math.isfinite(chosen.positions[0]):
        return None
    return float(chosen.positions[0])


def load_action_type(interface: str) -> Any:
    """The control_msgs action class of a gripper action interface. Raises RuntimeError saying what
    to install or choose instead when control_msgs cannot be imported."""
    name = ACTION_TYPES[interface]
    try:
        return getattr(importlib.import_module("control_msgs.action"), name)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            f"gripper_interface {interface!r} needs control_msgs/action/{name}, which this Python cannot "
            f"import ({exc}); install control_msgs (ros-$ROS_DISTRO-control-msgs, or build it into this "
            "environment), or drive the gripper with a JointTrajectoryController: gripper_interface:=trajectory"
        ) from None


def make_goal(action_type: Any, interface: str, joint: str, position: float, max_effort: float) -> Any:
    """A goal for `position` of the gripper: ParallelGripperCommand takes a JointState with exactly
    one position (parallel_gripper_action_controller_impl.hpp `goal_callback` rejects others),
    GripperCommand a position and a max_effort (0: the controller's own limit)."""
    goal = action_type.Goal()
    if interface == "parallel_gripper_command":
        goal.command.name = [joint]
        goal.command.position = [position]
        if max_effort > 0.0:
            goal.command.effort = [max_effort]
    else:
        goal.command.position = position
        goal.command.max_effort = max_effort
    return goal


class GripperAction:
    """Sends the gripper's target as goals of a gripper action server (see the module docstring)."""

    def __init__(self, node: Node, interface: str, spec: GripperSpec, controller: str) -> None:
        from rclpy.action import ActionClient

        self.node, self.interface, self.spec = node, interface, spec
        self.action_type = load_action_type(interface)
        self.name = f"/{controller}/gripper_cmd"
        self.client = ActionClient(node, self.action_type, self.name)
        self.sent: float | None = None  # the target of the last goal sent and not rejected

    def send(self, part: JointTrajectory) -> None:
        target = gripper_target(part, self.node.get_clock().now().nanoseconds)
        if target is None or (self.sent is not None and abs(target - self.sent) <= self.spec.deadband):
            return
        if not self.client.server_is_ready():
            self.node.get_logger().error(
                f"gripper action server {self.name} is not available: gripper target {target:.4f} not sent",
                throttle_duration_sec=LOG_THROTTLE_S,
            )
            return
        position = target * self.spec.action_position_scale
        goal = make_goal(self.action_type, self.interface, self.spec.joint, position, self.spec.max_effort)
        self.client.send_goal_async(goal).add_done_callback(self._on_goal_response)
        self.sent = target

    def _on_goal_response(self, future: Any) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self.sent = None  # the next command retries
            self.node.get_logger().error(
                f"gripper action server {self.name} rejected a goal", throttle_duration_sec=LOG_THROTTLE_S
            )


class CommandOutput:
    """The safety filter's command publisher for `profile`: `publish(msg)` sends a whole-robot
    JointTrajectory to the arm controller and, by the gripper interface, its gripper part to the
    gripper's controller. The interface and the gripper controller's name come from the node's
    read-only parameters `gripper_interface` and `gripper_controller` (empty: the profile's)."""

    def __init__(self, node: Node, profile: RobotProfile, qos: QoSProfile) -> None:
        described = {
            "gripper_interface": "how the gripper joint is commanded (hardware/profiles.py GRIPPER_INTERFACES)",
            "gripper_controller": "the gripper's controller name (trajectory or action interfaces)",
        }
        values = {
            name: node.declare_parameter(name, "", ParameterDescriptor(read_only=True, description=text)).value
            for name, text in described.items()
        }
        spec = profile.gripper
        self.interface = profile.gripper_interface(
            values["gripper_interface"] or (spec.interface if spec else "arm_controller")
        )
        self.arm = node.create_publisher(JointTrajectory, profile.trajectory_topic, qos)
        self.joint = spec.joint if spec else ""
        self.gripper_pub = self.gripper_action = None
        self.gripper_destination = ""
        if self.interface != "arm_controller":
            controller = contract.check_controller_name(values["gripper_controller"] or spec.controller)
            if self.interface == "trajectory":
                self.gripper_destination = contract.trajectory_topic(controller)
                self.gripper_pub = node.create_publisher(JointTrajectory, self.gripper_destination, qos)
            else:
                self.gripper_action = GripperAction(node, self.interface, spec, controller)
                self.gripper_destination = self.gripper_action.name

    def publish(self, msg: JointTrajectory) -> None:
        if self.interface == "arm_controller":
            self.arm.publish(msg)
            return
        arm, gripper = split_trajectory(msg, self.joint)
        self.arm.publish(arm)  # the arm first: a stop must not wait for the gripper
        if self.gripper_pub is not None:
            self.gripper_pub.publish(gripper)
        else:
            self.gripper_action.send(gripper)

    def describe(self) -> str:
        """Where commands go, for the node's start-up log."""
        if self.interface == "arm_controller":
            return self.arm.topic_name
        return f"{self.arm.topic_name} + {self.joint} via {self.interface} {self.gripper_destination}"

    def __getattr__(self, name: str) -> Any:
        # Anything else a publisher offers (subscription counts, topic name) is the arm publisher's.
        if name == "arm":  # not set yet: construction failed
            raise AttributeError(name)
        return getattr(self.arm, name)
