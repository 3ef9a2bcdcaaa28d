"""The sim node's outputs: every topic a simulated robot publishes, built from a core's state.

/clock (every physics step), /joint_states, /tactile/<pad> for a profile with tactile pads
(WrenchStamped, normal force in N on force.z, frame = the pad's link), per camera colour +
aligned depth + camera_info, sim-only ground truth /sim/object_pose and /sim/episode, and
/diagnostics. For a task that plans from the camera (`task.perception`: grasp) also
/camera/<cam>/object_mask (mono8, 255 = object) with every frame and the camera's latched
/camera/<cam>/optical_pose ("world"), which the grasp planner back-projects depth with.

Kept apart from `sim_node.py` (pacing, services, commands) so each stays small. Observations of
one instant share one stamp and go out before the /clock that reaches it, so a sim-time timer
firing at t already finds the state of t (as with a robot's driver and system time).
"""

from __future__ import annotations

import json

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from dexstack import contract
from dexstack.ros_nodes import common
from dexstack.sim.protocol import SimCoreProtocol

# Latched, and deep enough that "done" is not overwritten by the next "running".
EPISODE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SimTopics:
    """Publishers for `core`'s robot: clock, joint states, tactile pads (profiles that have
    them), object pose, episode, per camera colour + depth + camera_info, and for a task that
    plans from the camera (`masks`) the object mask and the latched camera pose."""

    def __init__(
        self, node: Node, core: SimCoreProtocol, cameras: tuple[str, ...], masks: bool, camera_pose_stamp: float
    ) -> None:
        qos, K = common.QOS, contract.QoSKind
        pub = node.create_publisher
        self.node, self.core, self.profile = node, core, core.profile
        self.diagnostics = pub(DiagnosticArray, contract.DIAGNOSTICS, qos[K.DEFAULT])
        self.clock = pub(Clock, contract.CLOCK, qos[K.DEFAULT])
        self.joints = pub(JointState, contract.JOINT_STATES, qos[K.STATE_PUB])
        self.object = pub(PoseStamped, contract.SIM_OBJECT_POSE, qos[K.DEFAULT])
        self.episode = pub(String, contract.SIM_EPISODE, EPISODE_QOS)
        self.cams = {
            cam: (
                pub(Image, contract.camera_color_topic(cam), qos[K.SENSOR_DATA]),
                pub(Image, contract.camera_depth_topic(cam), qos[K.SENSOR_DATA]),
                pub(CameraInfo, contract.camera_info_topic(cam), qos[K.SENSOR_DATA]),
            )
            for cam in cameras
        }
        self.tactile = [
            pub(WrenchStamped, contract.tactile_topic(pad), qos[K.SENSOR_DATA]) for pad in self.profile.tactile_pads
        ]
        self.masks = {
            cam: pub(Image, contract.camera_mask_topic(cam), qos[K.SENSOR_DATA]) for cam in (cameras if masks else ())
        }
        self._latched = []
        for cam in self.masks:  # the camera is fixed in the world: its pose is published once, latched
            pose = core.camera_pose(cam)
            self._latched.append(pub(PoseStamped, contract.camera_pose_topic(cam), qos[K.LATCHED]))
            self._latched[-1].publish(
                common.pose_msg(pose[:3, 3], common.matrix_quaternion(pose[:3, :3]), "world", camera_pose_stamp)
            )

    def publish_clock(self, t: float) -> None:
        self.clock.publish(Clock(clock=common.to_stamp(t)))

    def publish_diagnostics(self, level: str, message: str, values: dict) -> None:
        array = DiagnosticArray(status=[common.diagnostic_status(self.node, level, message, values)])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self.diagnostics.publish(array)

    def publish_episode(self, info: dict) -> None:
        self.episode.publish(String(data=json.dumps(info)))

    def publish_state(self, t: float, tick: bool, cameras: bool) -> None:
        """Tactile + joint states; at control ticks also the object pose, and the cameras (with
        masks) when asked; then the clock."""
        forces = self.core.sensors()["tactile"] if self.tactile else ()
        for pub, frame, force in zip(self.tactile, self.profile.tactile_frames, forces, strict=True):
            msg = WrenchStamped()
            msg.header.stamp, msg.header.frame_id = common.to_stamp(t), frame
            msg.wrench.force.z = float(force)
            pub.publish(msg)
        q, v, e = self.core.joint_state()
        self.joints.publish(common.joint_state_msg(self.profile.joint_names, q, v, e, stamp=t))
        if tick:
            self.object.publish(common.pose_msg(*self.core.object_pose(), "world", t))
            for cam, (pub_rgb, pub_depth, pub_info) in self.cams.items() if cameras else ():
                rgb, depth = self.core.render(cam)
                frame = f"{cam}_camera_optical_frame"
                pub_rgb.publish(common.rgb_msg(rgb, frame, t))
                pub_depth.publish(common.depth_msg(depth, frame, t))
                fx, fy, cx, cy = self.core.camera_intrinsics(cam)
                pub_info.publish(common.camera_info_msg(rgb.shape[1], rgb.shape[0], fx, fy, cx, cy, frame, t))
                if cam in self.masks:
                    self.masks[cam].publish(common.mask_msg(self.core.task.object_mask(), frame, t))
        self.publish_clock(t)

    def publish_view(self, cam: str, depth: np.ndarray, mask: np.ndarray, t: float) -> None:
        """A planning view: object mask, camera_info and depth of one stamp (no colour, no clock)."""
        frame = f"{cam}_camera_optical_frame"
        self.masks[cam].publish(common.mask_msg(mask, frame, t))
        fx, fy, cx, cy = self.core.camera_intrinsics(cam)
        self.cams[cam][2].publish(common.camera_info_msg(depth.shape[1], depth.shape[0], fx, fy, cx, cy, frame, t))
        self.cams[cam][1].publish(common.depth_msg(depth, frame, t))
