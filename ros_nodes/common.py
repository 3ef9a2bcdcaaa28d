"""What every node shares: QoS profiles for the contract's kinds, message <-> numpy
conversions, clock helpers and node start-up (`run_node`, from `ros_nodes/lifecycle.py`). Nodes
stay thin by calling these. (How a manifest input is wired, per kind: `ros_nodes/inputs.py`.)"""

from __future__ import annotations

import struct

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack import contract
from dexstack.hardware.profiles import RobotProfile
from dexstack.ros_nodes.lifecycle import run_node  # noqa: F401 - every node's main() calls common.run_node
from dexstack.trajectory import ActionChunk

QOS: dict[contract.QoSKind, QoSProfile] = {
    contract.QoSKind.DEFAULT: QoSProfile(depth=10),
    contract.QoSKind.STATE_PUB: QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    contract.QoSKind.STATE_SUB: QoSProfile(
        depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST
    ),
    contract.QoSKind.COMMAND: QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
    contract.QoSKind.SENSOR_DATA: qos_profile_sensor_data,
    contract.QoSKind.LATCHED: QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    ),
}


# --- time -------------------------------------------------------------------------------
def to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_stamp(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_ns(stamp: Time) -> int:
    """A header stamp in integer nanoseconds (exact: stamps are matched by equality)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def time_msg(ns: int) -> Time:
    # Exact integer split: a float round trip would move wall-clock stamps by ~100 ns and the
    # lockstep sim matches answers to observations by exact stamp.
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def now_sec(node: Node) -> float:
    """The node's clock (sim time when use_sim_time is set) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


# --- robot profile ----------------------------------------------------------------------
def with_controller(node: Node, profile: RobotProfile) -> RobotProfile:
    """`profile` driven through the controller named by the node's read-only `controller` parameter
    (the launch argument `controller:=`, dexstack/graph.py; empty: the profile's own)."""
    descriptor = ParameterDescriptor(
        read_only=True, description="JointTrajectoryController name; empty: the profile's own"
    )
    return profile.with_controller(node.declare_parameter("controller", "", descriptor).value)


# --- joint states / trajectories --------------------------------------------------------
def joint_state_msg(names, position, velocity=None, effort=None, stamp: float = 0.0) -> JointState:
    msg = JointState()
    msg.header.stamp = to_stamp(stamp)
    msg.name = list(names)
    msg.position = [float(x) for x in position]
    if velocity is not None:
        msg.velocity = [float(x) for x in velocity]
    if effort is not None:
        msg.effort = [float(x) for x in effort]
    return msg


def joint_positions(msg: JointState, names) -> np.ndarray:
    """Positions of `names` in that order; raises KeyError naming any missing joint and
    ValueError on a duplicated name (which value is the joint's would be a guess)."""
    index = {n: i for i, n in enumerate(msg.name)}
    if len(index) != len(msg.name):
        dup = sorted({n for n in msg.name if list(msg.name).count(n) > 1})
        raise ValueError(f"joint_states names joints {dup} more than once")
    missing = [n for n in names if n not in index]
    if missing:
        raise KeyError(f"joint_states lacks joints {missing}; it has {list(msg.name)}")
    if len(msg.position) != len(msg.name):
        raise ValueError(f"joint_states has {len(msg.name)} names but {len(msg.position)} positions")
    return np.array([msg.position[index[n]] for n in names], dtype=np.float64)


def chunk_to_msg(chunk: ActionChunk) -> JointTrajectory:
    """A chunk without a stamp ("now") gets the zero stamp, which means "now" in ROS."""
    msg = JointTrajectory()
    msg.header.stamp = to_stamp(0.0 if chunk.stamp is None else chunk.stamp)
    msg.joint_names = list(chunk.joint_names)
    for q, t in zip(chunk.positions, chunk.times, strict=True):
        pt = JointTrajectoryPoint()
        pt.positions = [float(x) for x in q]
        pt.time_from_start = _duration(t)
        msg.points.append(pt)
    return msg


def msg_to_chunk(msg: JointTrajectory) -> ActionChunk:
    """Raises ValueError on empty, ragged or non-finite trajectories."""
    if not msg.points:
        raise ValueError("trajectory has no points")
    width = len(msg.joint_names)
    if any(len(p.positions) != width for p in msg.points):
        raise ValueError(f"trajectory points do not all have {width} positions")
    positions = np.array([p.positions for p in msg.points], dtype=np.float64)
    times = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
    stamp = to_sec(msg.header.stamp)
    return ActionChunk(tuple(msg.joint_names), positions, times, stamp if stamp != 0.0 else None)


def take_trajectory(raw: bytes, max_points: int) -> tuple[JointTrajectory, str | None]:
    """A serialized (CDR) JointTrajectory as a message, unless it has more than `max_points`
    points: then only its header is read and returned (no points) with the reason. rclpy builds a
    Python object per point while holding the GIL, so a 20,000-point message would stall every
    other thread of the process (the safety filter's e-stop) for as long as that takes."""
    from rclpy.serialization import deserialize_message

    order = "<" if raw[1] & 1 else ">"  # encapsulation id: odd = little endian (CDR, PL_CDR, CDR2)
    base = 4  # CDR aligns relative to the payload, after the 4-byte encapsulation header

    def u32(offset: int) -> int:
        return struct.unpack_from(order + "I", raw, offset)[0]

    def after_string(offset: int) -> int:  # a string: uint32 length (with its NUL), bytes, pad to 4
        return base + ((offset + 4 + u32(offset) - base + 3) & ~3)

    try:
        offset = after_string(base + 8)  # stamp (int32 sec, uint32 nanosec), then frame_id
        names = u32(offset)
        offset += 4
        for _ in range(names):
            offset = after_string(offset)
        n_points = u32(offset)
        if n_points * 24 > len(raw) - offset:  # each point takes >= 24 bytes: not what we parsed
            n_points = 0
    except (IndexError, struct.error):  # not the CDR we expect: let rclpy judge it
        n_points = 0
    if n_points <= max_points:
        return deserialize_message(raw, JointTrajectory), None
    msg = JointTrajectory()
    msg.header.stamp.sec, msg.header.stamp.nanosec = struct.unpack_from(order + "iI", raw, base)
    msg.header.frame_id = raw[base + 12 : base + 11 + u32(base + 8)].decode(errors="replace")
    return msg, f"trajectory of {n_points} points exceeds {max_points} points (not even parsed)"


def _duration(seconds: float):
    from builtin_interfaces.msg import Duration

    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# --- images -----------------------------------------------------------------------------
def rgb_msg(rgb: np.ndarray, frame_id: str, stamp: float) -> Image:
    h, w, _ = rgb.shape
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp, msg.header.frame_id = to_stamp(stamp), frame_id
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def depth_msg(depth_m: np.ndarray, frame_id: str, stamp: float) -> Image:
    """Depth in metres -> 16UC1 millimetres (0 = no return), like RealSense aligned depth."""
    h, w = depth_m.shape
    mm = np.clip(np.nan_to_num(depth_m * 1000.0, nan=0.0, posinf=0.0), 0, 65535).astype(np.uint16)
    msg = Image(height=h, width=w, encoding="16UC1", is_bigendian=0, step=w * 2)
    msg.header.stamp, msg.header.frame_id = to_stamp(stamp), frame_id
    msg.data = mm.tobytes()
    return msg


def image_to_array(msg: Image) -> np.ndarray:
    """rgb8 -> (H, W, 3) uint8; 16UC1 -> (H, W) float32 metres. Other encodings raise."""
    if msg.encoding == "rgb8":
        return np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width, 3)
    if msg.encoding == "16UC1":
        mm = np.frombuffer(bytes(msg.data), dtype=np.uint16).reshape(msg.height, msg.width)
        return mm.astype(np.float32) / 1000.0
    raise ValueError(f"unsupported image encoding {msg.encoding!r}")


def camera_info_msg(
    width: int, height: int, fx: float, fy: float, cx: float, cy: float, frame_id: str, stamp: float
) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    msg.header.stamp, msg.header.frame_id = to_stamp(stamp), frame_id
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# --- diagnostics ------------------------------------------------------------------------
LEVEL = {
    "OK": DiagnosticStatus.OK,
    "WARN": DiagnosticStatus.WARN,
    "ERROR": DiagnosticStatus.ERROR,
    "STALE": DiagnosticStatus.STALE,
}


def diagnostic_status(node: Node, level: str, message: str, values: dict[str, object]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=LEVEL[level],
        name=node.get_fully_qualified_name(),
        message=message,
        hardware_id="dexstack",
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )


def message_class(type_name: str):
    """'sensor_msgs/msg/Image' -> the message class (rosidl_runtime_py is not in the pip wheels)."""
    import importlib

    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def mask_msg(mask: np.ndarray, frame_id: str, stamp: float) -> Image:
    """(H, W) bool -> mono8 Image, 255 on the object."""
    h, w = mask.shape
    msg = Image(height=h, width=w, encoding="mono8", is_bigendian=0, step=w)
    msg.header.stamp, msg.header.frame_id = to_stamp(stamp), frame_id
    msg.data = (mask.astype(np.uint8) * 255).tobytes()
    return msg


def matrix_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> unit quaternion (w, x, y, z) with w >= 0."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(rotation).as_quat(scalar_first=True)
    return q if q[0] >= 0 else -q


def pose_msg(position, quaternion, frame_id: str, stamp: float) -> PoseStamped:
    """Position (3,) m and quaternion (w, x, y, z) -> PoseStamped."""
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = to_stamp(stamp), frame_id
    p = msg.pose.position
    p.x, p.y, p.z = (float(v) for v in position)
    o = msg.pose.orientation
    o.w, o.x, o.y, o.z = (float(v) for v in quaternion)
    return msg


def qos_dict(qos: QoSProfile) -> dict:
    """A QoS profile as the plain dict rosbag2 writes into its metadata (offered_qos_profiles)."""
    return {
        "history": qos.history.name.lower(),
        "depth": qos.depth,
        "reliability": qos.reliability.name.lower(),
        "durability": qos.durability.name.lower(),
    }
