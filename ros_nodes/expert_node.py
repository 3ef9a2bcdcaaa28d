"""Scripted expert as a ROS node: drives the sim through the same topics a policy uses.

It reads /joint_states and the sim's ground-truth /sim/object_pose (so it runs in sim only)
and publishes chunks on the policy output topic, through the safety filter, exactly like the
policy node. Used to record demonstrations through the ROS graph (`dexstack record-demos`).
"""

from __future__ import annotations

import json

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.hardware.profiles import get_profile
from dexstack.ros_nodes import common
from dexstack.sim.experts import EXPERTS
from dexstack.trajectory import ActionChunk


class ExpertNode(Node):
    def __init__(self) -> None:
        super().__init__("expert")
        p = self.declare_parameters(
            "", [("profile", "panda"), ("task", "pick_lift"), ("rate", contract.POLICY_HZ), ("trigger", "timer")]
        )
        params = {x.name: x.value for x in p}
        self.profile = common.with_controller(self, get_profile(params["profile"]))
        self.expert = EXPERTS[params["task"]](self.profile)
        self.joint_msg: JointState | None = None
        self.object_msg: PoseStamped | None = None
        self.episode_key = None
        self.episode_start = 0.0
        self.last_answered = -1.0
        self.last_answer: JointTrajectory | None = None
        K, qos = contract.QoSKind, common.QOS
        self.pub = self.create_publisher(JointTrajectory, self.profile.policy_output_topic, qos[K.COMMAND])
        self.create_subscription(JointState, contract.JOINT_STATES, self._on_joints, qos[K.STATE_SUB])
        self.create_subscription(PoseStamped, contract.SIM_OBJECT_POSE, self._on_object, qos[K.DEFAULT])
        self.create_subscription(String, contract.SIM_EPISODE, self._on_episode, qos[K.LATCHED])
        self.on_observation = params["trigger"] == "observation"
        if not self.on_observation:
            self.create_timer(1.0 / params["rate"], self._act)

    def _on_episode(self, msg: String) -> None:
        info = json.loads(msg.data)
        key = (info["episode"], info["seed"])
        if key != self.episode_key:
            self.episode_key, self.episode_start = key, float(info["stamp"])
            self.expert.reset()

    def _on_joints(self, msg: JointState) -> None:
        self.joint_msg = msg
        if self.on_observation:
            self._act()

    def _on_object(self, msg: PoseStamped) -> None:
        self.object_msg = msg
        if self.on_observation:
            self._act()

    def _act(self) -> None:
        if self.joint_msg is None or self.object_msg is None or self.episode_key is None:
            return
        stamp = common.to_sec(self.joint_msg.header.stamp)
        if self.on_observation:
            # Lockstep: answer each observation once, when joint state and pose agree. The sim
            # re-sends an observation whose answer was lost: re-send the same answer.
            if abs(common.to_sec(self.object_msg.header.stamp) - stamp) > 1e-6 or stamp < self.last_answered:
                return
            if stamp == self.last_answered:
                if self.last_answer is not None:
                    self.pub.publish(self.last_answer)
                return
        self.last_answered = stamp
        q = common.joint_positions(self.joint_msg, self.profile.joint_names)
        pose = self.object_msg.pose
        position = [pose.position.x, pose.position.y, pose.position.z]
        quat = [pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z]
        chunk = self.expert.act(stamp - self.episode_start, q, position, quat)
        # The expert plans in episode time; the answer carries the observation's ROS stamp.
        self.last_answer = common.chunk_to_msg(ActionChunk(chunk.joint_names, chunk.positions, chunk.times, stamp))
        self.last_answer.header.stamp = self.joint_msg.header.stamp  # exact, no float round trip
        self.pub.publish(self.last_answer)


def main(args: list[str] | None = None) -> None:
    common.run_node(ExpertNode, args)


if __name__ == "__main__":
    main()
