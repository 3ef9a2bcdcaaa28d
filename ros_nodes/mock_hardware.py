"""Mock hardware node: `/joint_states` mirror the trajectory commanded on the controller topic.

Stands in for a ros2_control robot running mock_components + JointTrajectoryController +
joint_state_broadcaster (`hardware:=mock`). A trajectory JTC refuses (`hardware/jtc.py`: empty,
mismatched joints, non-increasing times, ends in the past, NaN, ...) is logged, counted and
reported as ERROR, and changes nothing: the previous trajectory keeps running, as in JTC.
Parameters: profile.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.hardware.jtc import accept_trajectory_msg
from dexstack.hardware.mock import MockHardware
from dexstack.hardware.profiles import get_profile
from dexstack.ros_nodes.common import QOS, diagnostic_status, joint_state_msg, now_sec, run_node, with_controller


class MockHardwareNode(Node):
    def __init__(self) -> None:
        super().__init__("mock_hardware")
        self.profile = with_controller(self, get_profile(self.declare_parameter("profile", "panda").value))
        self.hardware = MockHardware(self.profile)
        self.hardware.configure()
        self.hardware.activate(now_sec(self))
        self.rejected = 0
        self.last_error = ""
        self.rejected_since_report = 0

        self.state_pub = self.create_publisher(JointState, contract.JOINT_STATES, QOS[contract.QoSKind.STATE_PUB])
        self.diag_pub = self.create_publisher(DiagnosticArray, contract.DIAGNOSTICS, QOS[contract.QoSKind.DEFAULT])
        self.create_subscription(
            JointTrajectory, self.profile.trajectory_topic, self.on_trajectory, QOS[contract.QoSKind.COMMAND]
        )
        self.create_timer(1.0 / contract.JOINT_STATE_HZ, self.publish_state)
        self.create_timer(
            1.0 / contract.DIAGNOSTICS_HZ, self.publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self.get_logger().info(
            f"mock hardware {self.profile.name}: {self.profile.trajectory_topic} -> "
            f"{contract.JOINT_STATES} at {contract.JOINT_STATE_HZ:.0f} Hz"
        )

    def on_trajectory(self, msg: JointTrajectory) -> None:
        now = now_sec(self)
        chunk, reason = accept_trajectory_msg(msg, self.profile.joint_names, now)
        if chunk is not None:
            self.hardware.write(chunk, now)
            return
        self.rejected += 1
        self.rejected_since_report += 1
        self.last_error = reason
        self.get_logger().error(f"rejected trajectory, the previous one continues: {reason}")

    def publish_state(self) -> None:
        now = now_sec(self)
        position, velocity, effort = self.hardware.read(now)
        self.state_pub.publish(joint_state_msg(self.profile.joint_names, position, velocity, effort, stamp=now))

    def publish_diagnostics(self) -> None:
        hw = self.hardware
        level = "ERROR" if self.rejected_since_report else "OK"
        message = f"rejected trajectory: {self.last_error}" if self.rejected_since_report else str(hw.state)
        values = {
            "state": hw.state,
            "executing": hw.executor.active,
            "chunks_accepted": hw.chunks_accepted,
            "holds": hw.holds,
            "rejected": self.rejected,
            "skipped_points": hw.executor.skipped_points,
            "last_error": self.last_error,
        }
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diagnostic_status(self, level, message, values)]
        self.diag_pub.publish(msg)
        self.rejected_since_report = 0


def main(args: list[str] | None = None) -> None:
    run_node(MockHardwareNode, args)


if __name__ == "__main__":
    main()
