"""The controller name as one launch argument, and the bridge to a gripper with its own controller
(ros_nodes/gripper_bridge.py): unit checks of the split and of the single-target rule, then the real
safety filter over DDS driving two JointTrajectoryController doubles (an arm of 7 joints and a gripper
of 1) that validate every message by ros2_controllers' rules and mirror what they accept into
/joint_states, as joint_state_broadcaster would show it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack import contract
from dexstack.graph import NodeSpec, node_list, parse_launch_args
from dexstack.hardware.profiles import ADROIT, PANDA, GripperSpec
from dexstack.ros_nodes.gripper_bridge import gripper_target, load_action_type, make_goal, split_trajectory

FINGER = PANDA.gripper.joint
ARM = [j for j in PANDA.joint_names if j != FINGER]
NS = 1_000_000_000


def _traj(names, rows, times_s, stamp_ns=0, velocities=False) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names))
    msg.header.stamp = Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS)
    for row, t in zip(rows, times_s, strict=True):
        point = JointTrajectoryPoint(positions=[float(x) for x in row])
        if velocities:
            point.velocities = [0.5 * float(x) for x in row]
        point.time_from_start = Duration(sec=int(t), nanosec=int(round((t % 1) * NS)))
        msg.points.append(point)
    return msg


# --- the controller name --------------------------------------------------------------------


def test_controller_launch_argument_reaches_every_node_that_names_a_controller_topic():
    default = node_list({"hardware": "mock", "record": "true"})
    assert all("controller" not in n.parameters for n in default)  # each node keeps its profile's
    nodes = node_list({"hardware": "mock", "record": "true", "controller": "fr3_arm_controller"})
    named = {n.name for n in nodes if n.parameters.get("controller") == "fr3_arm_controller"}
    assert named == {"mock_hardware", "safety_filter", "policy", "recorder"}
    sim = node_list({"controller": "ns/arm_controller", "policy": "expert"})
    assert {n.name for n in sim if "controller" in n.parameters} == {"sim", "safety_filter", "expert"}
    with pytest.raises(ValueError, match="controller name 'arm controller' is not a ROS name"):
        node_list({"controller": "arm controller"})
    with pytest.raises(ValueError, match="controller name '9arm' is not a ROS name"):  # before anything starts
        parse_launch_args(["controller:=9arm"])
    assert parse_launch_args(["controller:=fr3/arm_controller"])["controller"] == "fr3/arm_controller"


def test_every_controller_topic_derives_from_the_one_name():
    robot = PANDA.with_controller("fr3_arm_controller")
    assert robot.trajectory_topic == "/fr3_arm_controller/joint_trajectory"
    assert robot.policy_output_topic == "/policy/fr3_arm_controller/joint_trajectory"
    assert robot.trajectory_topic in robot.recorded_topics() and PANDA.trajectory_topic not in robot.recorded_topics()
    assert PANDA.with_controller("") is PANDA and PANDA.controller == "arm_controller"
    with pytest.raises(ValueError, match="is not a ROS name"):
        PANDA.with_controller("/leading_slash")


# --- the gripper setting and the split ------------------------------------------------------------


def test_profile_gripper_setting_is_checked():
    assert PANDA.gripper_interface("trajectory") == "trajectory"
    with pytest.raises(ValueError, match="gripper_interface 'robotiq' is not one of arm_controller, trajectory"):
        PANDA.gripper_interface("robotiq")
    with pytest.raises(ValueError, match="profile adroit has no separate gripper"):
        ADROIT.gripper_interface("trajectory")
    with pytest.raises(ValueError, match="gripper joint 'finger' is not one of its joints"):
        dataclasses.replace(PANDA, gripper=GripperSpec("finger"))


def test_split_keeps_header_times_and_every_field_per_joint():
    rows = np.arange(16, dtype=float).reshape(2, 8)
    msg = _traj(PANDA.joint_names, rows, [0.1, 0.2], stamp_ns=5 * NS, velocities=True)
    arm, gripper = split_trajectory(msg, FINGER)
    assert list(arm.joint_names) == ARM and list(gripper.joint_names) == [FINGER]
    assert arm.header.stamp == gripper.header.stamp == msg.header.stamp
    for part, cols in ((arm, slice(0, 7)), (gripper, slice(7, 8))):
        assert [p.time_from_start for p in part.points] == [p.time_from_start for p in msg.points]
        np.testing.assert_array_equal([p.positions for p in part.points], rows[:, cols])
        np.testing.assert_array_equal([p.velocities for p in part.points], 0.5 * rows[:, cols])
    # A hold (one point at the current command) stays a hold for both controllers.
    arm, gripper = split_trajectory(_traj(PANDA.joint_names, [PANDA.home], [0.0]), FINGER)
    assert len(arm.points) == len(gripper.points) == 1 and list(gripper.points[0].positions) == [PANDA.home[7]]
    ragged = _traj(PANDA.joint_names, rows, [0.1, 0.2])
    ragged.points[1].positions = ragged.points[1].positions[:5]
    with pytest.raises(ValueError, match="trajectory point has 5 positions for 8 joints"):
        split_trajectory(ragged, FINGER)


def test_single_target_is_the_first_point_not_yet_in_the_past():
    msg = _traj([FINGER], [[0.04], [0.03], [0.02]], [0.1, 0.2, 0.3], stamp_ns=10 * NS)
    assert gripper_target(msg, 10 * NS) == 0.04
    assert gripper_target(msg, 10 * NS + 150_000_000) == 0.03  # the 0.1 s point is past: skipped, as JTC does
    assert gripper_target(msg, 11 * NS) == 0.02  # all past: where the trajectory ends
    assert gripper_target(_traj([FINGER], [[0.01], [0.02]], [0.1, 0.2]), 99 * NS) == 0.01  # stamp 0: "now"
    assert gripper_target(_traj([FINGER], [[math.nan]], [0.1]), 0) is None
    assert gripper_target(_traj([FINGER], [], []), 0) is None
    assert gripper_target(_traj(ARM[:2], [[0.0, 0.0]], [0.1]), 0) is None


def test_gripper_action_interfaces_need_control_msgs_and_say_so():
    try:
        import control_msgs.action  # noqa: F401
    except ImportError:
        with pytest.raises(
            RuntimeError, match="needs control_msgs/action/GripperCommand.*gripper_interface:=trajectory"
        ):
            load_action_type("gripper_command")
        return
    # With control_msgs installed: goals as the ros2_controllers servers take them.
    goal = make_goal(load_action_type("parallel_gripper_command"), "parallel_gripper_command", FINGER, 0.02, 5.0)
    assert list(goal.command.name) == [FINGER] and list(goal.command.position) == [0.02]
    goal = make_goal(load_action_type("gripper_command"), "gripper_command", FINGER, 0.02, 5.0)
    assert goal.command.position == 0.02 and goal.command.max_effort == 5.0


# --- over DDS: the real safety filter, an arm and a gripper controller ------------------------------


class JtcDouble:
    """A JointTrajectoryController stand-in for `joints` on /<controller>/joint_trajectory: accepts a
    message only if `hardware.jtc.validate_trajectory_msg` (ros2_controllers' rules) does, and mirrors
    the accepted trajectory into its joint positions by the clock."""

    def __init__(self, node, controller: str, joints: list[str], start: list[float]) -> None:
        from dexstack.ros_nodes.common import QOS

        self.node, self.joints = node, list(joints)
        self.q = np.array(start, dtype=float)
        self.accepted: list[JointTrajectory] = []
        self.rejected: list[tuple[str, JointTrajectory]] = []
        self.active: JointTrajectory | None = None
        node.create_subscription(
            JointTrajectory, contract.trajectory_topic(controller), self._on_msg, QOS[contract.QoSKind.COMMAND]
        )

    def _problem(self, msg: JointTrajectory) -> str | None:
        from dexstack.hardware.jtc import validate_trajectory_msg

        return validate_trajectory_msg(msg, self.joints, self.node.get_clock().now().nanoseconds * 1e-9)

    def _on_msg(self, msg: JointTrajectory) -> None:
        problem = self._problem(msg)
        if problem is None:
            self.accepted.append(msg)
            self.active = msg  # replaces what ran, as JTC does
        else:
            self.rejected.append((problem, msg))  # JTC keeps executing what it had

    def positions(self) -> np.ndarray:
        """The joint positions now: the latest point of the active trajectory already reached."""
        if self.active is not None:
            now = self.node.get_clock().now().nanoseconds * 1e-9
            start = self.active.header.stamp.sec + self.active.header.stamp.nanosec * 1e-9 or now
            order = [list(self.active.joint_names).index(j) for j in self.joints]
            for p in self.active.points:
                if start + p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 <= now:
                    self.q = np.asarray(p.positions, dtype=float)[order]
        return self.q


@pytest.mark.ros
def test_safety_filter_drives_a_separate_gripper_controller(ros_client, launch_nodes):
    from dexstack.ros_nodes.common import QOS, chunk_to_msg, joint_state_msg
    from dexstack.trajectory import ActionChunk

    node = ros_client.node
    robot = PANDA.with_controller("fr3_arm_controller")
    arm = JtcDouble(node, "fr3_arm_controller", ARM, PANDA.home[:7])
    gripper = JtcDouble(node, "fr3_gripper_controller", [FINGER], PANDA.home[7:])
    default_topic: list[JointTrajectory] = []
    node.create_subscription(
        JointTrajectory, PANDA.trajectory_topic, default_topic.append, QOS[contract.QoSKind.COMMAND]
    )
    js_pub = node.create_publisher(
        type(joint_state_msg([], [])), contract.JOINT_STATES, QOS[contract.QoSKind.STATE_PUB]
    )
    stamps: list[float] = []

    def publish_state() -> None:  # joint_state_broadcaster: both controllers' joints, 50 Hz
        stamps.append(node.get_clock().now().nanoseconds * 1e-9)
        q = np.concatenate([arm.positions(), gripper.positions()])
        js_pub.publish(joint_state_msg(PANDA.joint_names, q, stamp=stamps[-1]))

    node.create_timer(0.02, publish_state)
    params = {
        "profile": "panda",
        "controller": "fr3_arm_controller",
        "gripper_interface": "trajectory",
        "gripper_controller": "fr3_gripper_controller",
        "start_enabled": True,
        "ramp_time_s": 0.01,
        "use_sim_time": False,
    }
    launch_nodes([NodeSpec("safety_filter", "safety_filter", params)])
    policy = node.create_publisher(JointTrajectory, robot.policy_output_topic, QOS[contract.QoSKind.COMMAND])
    assert ros_client.spin_until(
        lambda: (
            policy.get_subscription_count() > 0
            and node.count_publishers(robot.trajectory_topic) > 0
            and node.count_publishers(contract.trajectory_topic("fr3_gripper_controller")) > 0
        ),
        30,
    ), "safety filter never connected"
    ros_client.spin_for(0.5)

    # Close the gripper by 1 cm and move joint 1 by 0.05 rad over 0.8 s, from the state just sent.
    target = np.array(PANDA.home)
    target[0] += 0.05
    target[7] -= 0.01
    times = np.arange(1, 9) * 0.1
    rows = np.array(PANDA.home) + np.outer(times / times[-1], target - np.array(PANDA.home))
    stamp = stamps[-1]
    policy.publish(chunk_to_msg(ActionChunk(PANDA.joint_names, rows, times, stamp)))

    def carries(double: JtcDouble) -> JointTrajectory | None:
        return next(
            (m for m in double.accepted if abs(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 - stamp) < 1e-6), None
        )

    assert ros_client.spin_until(lambda: carries(arm) is not None and carries(gripper) is not None, 10), (
        f"arm rejected {[r for r, _ in arm.rejected][-3:]}, gripper rejected {[r for r, _ in gripper.rejected][-3:]}"
    )
    arm_part, gripper_part = carries(arm), carries(gripper)
    assert list(arm_part.joint_names) == ARM and list(gripper_part.joint_names) == [FINGER]
    assert [p.time_from_start for p in arm_part.points] == [p.time_from_start for p in gripper_part.points]
    fingers = [p.positions[0] for p in gripper_part.points]
    assert fingers[-1] < PANDA.home[7] and all(b <= a for a, b in zip(fingers, fingers[1:], strict=False))
    # No chunk follows, so the filter's horizon watchdog holds before this one ends; the hold is split
    # like any command and each controller accepts its part and stops where it was going.
    assert ros_client.spin_until(
        lambda: all(d.accepted[-1] is not carries(d) and len(d.accepted[-1].points) == 1 for d in (arm, gripper)), 5
    ), "no hold reached both controllers"
    assert PANDA.home[7] > gripper.positions()[0] >= fingers[-1] and arm.positions()[0] > PANDA.home[0]
    # Neither controller ever got a message it would refuse for its joints, and nothing went to the
    # profile's default controller.
    for double in (arm, gripper):
        assert not double.rejected, double.rejected
    assert default_topic == [] and node.count_publishers(PANDA.trajectory_topic) == 0


class GripperServerDouble:
    """A gripper action server on /<controller>/gripper_cmd as ros2_controllers' gripper controllers
    serve it: a ParallelGripperCommand goal needs exactly one position (`goal_callback` rejects
    others), a new goal preempts the running one (`accepted_callback`), and the gripper moves to the
    goal (here at once), which the double mirrors into its joint position."""

    def __init__(self, node, controller: str, action_type, interface: str, start: float) -> None:
        from rclpy.action import ActionServer, GoalResponse

        self.interface, self.q, self.goals = interface, start, []

        def on_goal(goal) -> GoalResponse:
            if interface == "parallel_gripper_command" and len(goal.command.position) != 1:
                return GoalResponse.REJECT
            return GoalResponse.ACCEPT

        def execute(handle):
            goal = handle.request
            self.goals.append(goal)
            self.q = goal.command.position[0] if interface == "parallel_gripper_command" else goal.command.position
            handle.succeed()
            result = action_type.Result()
            result.reached_goal = True
            return result

        self.server = ActionServer(node, action_type, f"/{controller}/gripper_cmd", execute, goal_callback=on_goal)


@pytest.mark.ros
@pytest.mark.parametrize("interface", ["parallel_gripper_command", "gripper_command"])
def test_safety_filter_drives_a_gripper_action_server(ros_client, launch_nodes, interface):
    """Runs where control_msgs is importable (a robot PC with ROS 2); skipped on pip-only machines."""
    pytest.importorskip("control_msgs.action")
    from dexstack.ros_nodes.common import QOS, chunk_to_msg, joint_state_msg
    from dexstack.trajectory import ActionChunk

    node = ros_client.node
    arm = JtcDouble(node, PANDA.controller, ARM, PANDA.home[:7])
    controller = f"{interface}_controller"  # its own name per case: no endpoint of the last case lingers
    gripper = GripperServerDouble(node, controller, load_action_type(interface), interface, PANDA.home[7])
    js_pub = node.create_publisher(
        type(joint_state_msg([], [])), contract.JOINT_STATES, QOS[contract.QoSKind.STATE_PUB]
    )
    stamps: list[float] = []

    def publish_state() -> None:
        stamps.append(node.get_clock().now().nanoseconds * 1e-9)
        q = np.concatenate([arm.positions(), [gripper.q]])
        js_pub.publish(joint_state_msg(PANDA.joint_names, q, stamp=stamps[-1]))

    node.create_timer(0.02, publish_state)
    params = {
        "gripper_interface": interface,
        "gripper_controller": controller,
        "start_enabled": True,
        "ramp_time_s": 0.01,
        "use_sim_time": False,
    }
    launch_nodes([NodeSpec("safety_filter", "safety_filter", params)])
    policy = node.create_publisher(JointTrajectory, PANDA.policy_output_topic, QOS[contract.QoSKind.COMMAND])
    assert ros_client.spin_until(
        lambda: policy.get_subscription_count() > 0 and node.count_publishers(PANDA.trajectory_topic) > 0, 30
    )
    # The filter's action client subscribes to the server's status once it has discovered it.
    status = f"/{controller}/gripper_cmd/_action/status"
    assert ros_client.spin_until(lambda: node.count_subscribers(status) > 0, 30)

    target = np.array(PANDA.home)
    target[7] -= 0.01
    times = np.arange(1, 9) * 0.1
    rows = np.array(PANDA.home) + np.outer(times / times[-1], target - np.array(PANDA.home))
    for _ in range(50):  # a policy at 10 Hz: the same chunk, freshly stamped, until the gripper moves
        policy.publish(chunk_to_msg(ActionChunk(PANDA.joint_names, rows, times, stamps[-1])))
        if ros_client.spin_until(lambda: len(gripper.goals) > 0 and arm.accepted, 0.1):
            break
    assert gripper.goals and arm.accepted, arm.rejected[-3:]
    assert all(list(m.joint_names) == ARM for m in arm.accepted)
    # The goal is the chunk's first point not yet in the past: between where it starts and ends.
    assert PANDA.home[7] - 0.01 - 1e-9 <= gripper.q < PANDA.home[7]
    if interface == "parallel_gripper_command":
        assert list(gripper.goals[0].command.name) == [FINGER]
