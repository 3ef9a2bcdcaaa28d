"""Grasp planner node: a 6-D grasp pose for the object in view, from depth + mask (G-PAYN).

Inputs, for the camera named by the `camera` parameter:
- aligned depth (16UC1 mm or 32FC1 m), camera_info and the object mask (mono8, non-zero on the
  object), matched by identical header stamps (the sim and RGB-D drivers stamp a frame's images
  alike; message_filters is not among the pip ROS 2 wheels, so a small exact-stamp matcher
  stands in for its TimeSynchronizer);
- the camera's optical-frame pose in "world" (`contract.camera_pose_topic`, latched). We chose
  a topic over TF because tf2_msgs/tf2_ros are not among the pip wheels this project installs,
  and over a parameter because the sim knows the exact pose and a stale hand-typed copy would
  fail silently; on a robot, a one-line calibration publisher (or a TF bridge) feeds it.
- /sim/episode (latched), when a sim runs: a new episode number means a new scene.

Pipeline: `perception.planning.plan_grasp`, the one the grasp task runs at reset (back-project
the masked depth, fit a superquadric with the table prior `support_z`, check the fit, plan
`grasp_pose(approach, max_aperture, standoff, reference)` and, with `arm_friendly`, turn it about
the approach axis to the equivalent the Adroit arm reaches).

Output: geometry_msgs/PoseStamped on /grasp/target_pose, frame "world", stamped with the depth
image it came from, latched (a node that starts later still gets the plan). One plan per scene:
the first matched frame at or after the start of each episode (or the first frame at all
without a sim); ~/plan (std_srvs/Trigger) re-plans from the latest matched frame. A cloud that
cannot give a trustworthy pose (empty mask, too few points, mismatched image sizes, a failed or
degenerate fit, no width that fits the hand) publishes no pose: the reason goes to the log and
to /diagnostics at ERROR, and ~/plan answers success=false with it.
"""

from __future__ import annotations

import json
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock as RosClock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dexstack import contract
from dexstack.perception.grasp_pose import APPROACHES, HAND_APERTURE
from dexstack.perception.planning import plan_grasp
from dexstack.ros_nodes import common
from dexstack.sim.hand_scene import ARM_MOUNT_POS
from dexstack.sim.tasks.grasp import GRASP_STANDOFF

MATCH_QUEUE = 10  # frames kept while waiting for the other images of the same stamp
POSE_HISTORY = 10  # grasp poses a late-joining subscriber is replayed (one per episode)


class ExactStampMatcher:
    """Collects messages of several named streams and returns the set that shares one stamp."""

    def __init__(self, streams: tuple[str, ...], queue: int = MATCH_QUEUE) -> None:
        self.streams = streams
        self.queue = queue
        self._pending: dict[int, dict[str, object]] = {}

    def add(self, stream: str, stamp_ns: int, msg) -> dict[str, object] | None:
        """Store `msg`; return {stream: msg} once every stream has a message with this stamp."""
        frame = self._pending.setdefault(stamp_ns, {})
        frame[stream] = msg
        if len(frame) == len(self.streams):
            # Older incomplete frames will never complete once a newer one has (in-order streams).
            for key in [k for k in self._pending if k <= stamp_ns]:
                del self._pending[key]
            return frame
        while len(self._pending) > self.queue:
            del self._pending[min(self._pending)]
        return None


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def depth_to_metres(msg: Image) -> np.ndarray:
    """16UC1 (mm) or 32FC1 (m) -> (H, W) float32 metres, 0 = no return."""
    if msg.encoding == "32FC1":
        depth = np.frombuffer(bytes(msg.data), dtype=np.float32).reshape(msg.height, msg.width)
        return np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
    if msg.encoding == "16UC1":
        return common.image_to_array(msg)
    raise ValueError(f"depth image encoding must be 16UC1 or 32FC1, got {msg.encoding!r}")


def mask_to_bool(msg: Image) -> np.ndarray:
    if msg.encoding not in ("mono8", "8UC1"):
        raise ValueError(f"object mask encoding must be mono8 or 8UC1, got {msg.encoding!r}")
    if msg.step != msg.width or len(msg.data) != msg.width * msg.height:
        raise ValueError(f"object mask of {msg.width}x{msg.height} has {len(msg.data)} bytes (step {msg.step})")
    return np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width) > 0


def pose_to_matrix(msg: PoseStamped) -> np.ndarray:
    p, o = msg.pose.position, msg.pose.orientation
    q = np.array([o.w, o.x, o.y, o.z], dtype=float)
    if not np.isfinite(q).all() or np.linalg.norm(q) < 1e-6:
        raise ValueError(f"camera pose quaternion {q} is not a rotation")
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_quat(q / np.linalg.norm(q), scalar_first=True).as_matrix()
    pose[:3, 3] = [p.x, p.y, p.z]
    if not np.isfinite(pose).all():
        raise ValueError("camera pose is not finite")
    return pose


class GraspPlannerNode(Node):
    def __init__(self) -> None:
        super().__init__("grasp_planner")
        p = self.declare_parameters(
            "",
            [
                ("camera", "scene"),
                ("approach", "auto"),
                ("max_aperture", HAND_APERTURE),
                ("standoff", GRASP_STANDOFF),
                ("support_z", 0.0),
                ("use_support", True),
                ("reference", [float(x) for x in ARM_MOUNT_POS]),
                ("arm_friendly", True),
            ],
        )
        params = {x.name: x.value for x in p}
        if params["approach"] not in APPROACHES:
            raise ValueError(f"approach must be one of {APPROACHES}, got {params['approach']!r}")
        if not params["max_aperture"] > 0:
            raise ValueError(f"max_aperture must be positive metres, got {params['max_aperture']}")
        reference = np.asarray(params["reference"], dtype=float)
        if reference.shape != (3,) or not np.isfinite(reference).all():
            raise ValueError(
                f"reference must be 3 finite numbers (the robot base in world, m), got {params['reference']}"
            )
        self.settings = {
            "support_z": float(params["support_z"]) if params["use_support"] else None,
            "approach": params["approach"],
            "max_aperture": float(params["max_aperture"]),
            "standoff": float(params["standoff"]),
            "reference": reference,
            "arm_friendly": bool(params["arm_friendly"]),
        }
        cam = params["camera"]
        qos, K = common.QOS, contract.QoSKind
        self.matcher = ExactStampMatcher(("depth", "info", "mask"))
        self.create_subscription(
            Image, contract.camera_depth_topic(cam), lambda m: self._on_image("depth", m), qos[K.SENSOR_DATA]
        )
        self.create_subscription(
            CameraInfo, contract.camera_info_topic(cam), lambda m: self._on_image("info", m), qos[K.SENSOR_DATA]
        )
        self.create_subscription(
            Image, contract.camera_mask_topic(cam), lambda m: self._on_image("mask", m), qos[K.SENSOR_DATA]
        )
        self.create_subscription(PoseStamped, contract.camera_pose_topic(cam), self._on_camera_pose, qos[K.LATCHED])
        self.create_subscription(String, contract.SIM_EPISODE, self._on_episode, qos[K.LATCHED])
        # Latched, and keeping the last few episodes' poses rather than one: a subscriber whose
        # discovery finishes an episode late (an evaluator, a recorder) still gets every plan. The
        # policy node takes the newest and drops poses from before its current episode.
        latched_history = QoSProfile(
            depth=POSE_HISTORY, reliability=qos[K.LATCHED].reliability, durability=qos[K.LATCHED].durability
        )
        self.pub_pose = self.create_publisher(PoseStamped, contract.GRASP_TARGET_POSE, latched_history)
        self.pub_diag = self.create_publisher(DiagnosticArray, contract.DIAGNOSTICS, qos[K.DEFAULT])
        self.create_service(Trigger, "~/plan", self._srv_plan)
        self.create_timer(
            1.0 / contract.DIAGNOSTICS_HZ, self._publish_diagnostics, clock=RosClock(clock_type=ClockType.STEADY_TIME)
        )

        self.camera_pose: np.ndarray | None = None
        self.latest: dict | None = None  # the newest matched depth + info + mask
        self.episode: int | None = None
        self.plan_after_ns = 0  # frames older than the current episode's start show the old scene
        self.need_plan = True
        self.planned = 0
        self.failed = 0
        self.status = ("OK", "waiting for a frame", {})

    # --- inputs -------------------------------------------------------------------------
    def _on_camera_pose(self, msg: PoseStamped) -> None:
        try:
            self.camera_pose = pose_to_matrix(msg)
        except ValueError as exc:
            self.camera_pose = None
            self._report_failure(f"camera pose refused: {exc}")

    def _on_episode(self, msg: String) -> None:
        try:
            info = json.loads(msg.data)
            episode, stamp = int(info["episode"]), float(info["stamp"])
        except (ValueError, KeyError, TypeError) as exc:
            self.get_logger().warning(f"ignoring malformed {contract.SIM_EPISODE}: {exc}")
            return
        if episode != self.episode:
            self.episode = episode
            self.plan_after_ns = int(round(stamp * 1e9))
            self.need_plan = True

    def _on_image(self, stream: str, msg) -> None:
        frame = self.matcher.add(stream, _stamp_ns(msg), msg)
        if frame is None:
            return
        self.latest = frame
        if self.need_plan and _stamp_ns(frame["depth"]) >= self.plan_after_ns and self.camera_pose is not None:
            self.need_plan = False  # one attempt per scene; ~/plan retries
            self._plan(frame)

    # --- planning -----------------------------------------------------------------------
    def _plan(self, frame: dict) -> tuple[bool, str]:
        if self.camera_pose is None:
            return self._report_failure(
                f"no camera pose received on {contract.camera_pose_topic(self.get_parameter('camera').value)}"
            )
        depth_msg, info, mask_msg = frame["depth"], frame["info"], frame["mask"]
        start = time.perf_counter()
        try:
            depth, mask = depth_to_metres(depth_msg), mask_to_bool(mask_msg)
            if (info.width, info.height) != (depth_msg.width, depth_msg.height):
                raise ValueError(
                    f"camera_info is {info.width}x{info.height} but depth is {depth_msg.width}x{depth_msg.height}"
                )
            fx, fy, cx, cy = info.k[0], info.k[4], info.k[2], info.k[5]
            if not (fx > 0 and fy > 0 and np.isfinite([fx, fy, cx, cy]).all()):
                raise ValueError(f"camera_info has no valid intrinsics (fx={fx}, fy={fy})")
            grasp, fit, n_points = plan_grasp(depth, mask, (fx, fy, cx, cy), self.camera_pose, **self.settings)
        except ValueError as exc:
            return self._report_failure(str(exc))
        seconds = time.perf_counter() - start
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = depth_msg.header.stamp, "world"
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in grasp[0])
        o = pose.pose.orientation
        o.w, o.x, o.y, o.z = (float(v) for v in grasp[1])
        self.pub_pose.publish(pose)
        self.planned += 1
        values = {
            "episode": self.episode,
            "points": n_points,
            "fit_s": f"{seconds:.3f}",
            "fit_centre": " ".join(f"{v:.4f}" for v in fit.position),
            "fit_half_extents": " ".join(f"{v:.4f}" for v in fit.size),
            "grasp_position": " ".join(f"{v:.4f}" for v in grasp[0]),
        }
        message = f"planned a grasp from {n_points} points in {seconds:.2f} s"
        self.status = ("OK", message, values)
        self._publish_diagnostics()
        return True, message

    def _report_failure(self, reason: str) -> tuple[bool, str]:
        self.failed += 1
        message = f"no grasp pose: {reason}"
        self.get_logger().error(message)
        self.status = ("ERROR", message, {"episode": self.episode, "reason": reason})
        self._publish_diagnostics()
        return False, message

    def _srv_plan(self, request, response):
        if self.latest is None:
            response.success, response.message = False, "no matched depth + camera_info + mask frame received yet"
            return response
        self.need_plan = False
        response.success, response.message = self._plan(self.latest)
        return response

    def _publish_diagnostics(self) -> None:
        level, message, values = self.status
        values = values | {
            "planned": self.planned,
            "failed": self.failed,
            "camera_pose": "received" if self.camera_pose is not None else "missing",
        }
        array = DiagnosticArray(status=[common.diagnostic_status(self, level, message, values)])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(array)


def main(args: list[str] | None = None) -> None:
    common.run_node(GraspPlannerNode, args)


if __name__ == "__main__":
    main()
