"""What every node shares: QoS profiles for the contract's kinds, message <-> numpy
conversions (including one per manifest input kind, `INPUT_WIRING`), clock helpers and node
start-up. Nodes stay thin by calling these."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, WrenchStamped
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
from dexstack.manifest import INPUT_KINDS
from dexstack.trajectory import ActionChunk

QOS: dict[contract.QoSKind, QoSProfile] = {
    contract.QoSKind.DEFAULT: QoSProfile(depth=10),
    contract.QoSKind.STATE_PUB: QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    contract.QoSKind.STATE_SUB: QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                                           history=HistoryPolicy.KEEP_LAST),
    contract.QoSKind.COMMAND: QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
    contract.QoSKind.SENSOR_DATA: qos_profile_sensor_data,
    contract.QoSKind.LATCHED: QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                         durability=DurabilityPolicy.TRANSIENT_LOCAL),
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
    """Positions of `names` in that order; raises KeyError naming any missing joint."""
    index = {n: i for i, n in enumerate(msg.name)}
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


def _checked_image(msg: Image, encodings: dict[str, tuple[np.dtype, int]]) -> np.ndarray:
    """The image's pixels as (H, W) or (H, W, channels), for one of `encodings`
    ({encoding: (dtype, channels)}). Raises ValueError on another encoding or a size mismatch."""
    if msg.encoding not in encodings:
        expected = " or ".join(repr(e) for e in encodings)
        raise ValueError(f"image encoding {msg.encoding!r}, expected {expected}")
    dtype, channels = encodings[msg.encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    if len(msg.data) != msg.height * msg.step or msg.step != msg.width * channels * dtype.itemsize:
        raise ValueError(f"image {msg.width}x{msg.height} step {msg.step} does not match its {len(msg.data)} bytes")
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return np.frombuffer(bytes(msg.data), dtype=dtype).reshape(shape)


# --- manifest inputs: message -> the value a runtime gets (dexstack/manifest.py's kinds) ---
def _depth_input(spec: dict[str, Any], msg: Image) -> np.ndarray:
    mm = _checked_image(msg, {"16UC1": (np.uint16, 1)})
    # float32 metres (the contract), or raw millimetres when the graph wants them.
    value = mm if spec.get("dtype") == "uint16" else mm.astype(np.float32) / 1000.0
    return value[..., None] if len(spec["shape"]) == 3 else value


def _segmentation_input(spec: dict[str, Any], msg: Image) -> np.ndarray:
    ids = _checked_image(msg, {"mono8": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
                               "32SC1": (np.int32, 1)})
    return ids.astype(np.int32)


def _wrench_input(spec: dict[str, Any], msg: WrenchStamped) -> np.ndarray:
    f, t = msg.wrench.force, msg.wrench.torque
    return np.array([f.x, f.y, f.z, t.x, t.y, t.z], dtype=np.float64)


def _pose_input(spec: dict[str, Any], msg: PoseStamped) -> np.ndarray:
    p, o = msg.pose.position, msg.pose.orientation
    position = np.array([p.x, p.y, p.z], dtype=np.float64)
    quaternion = np.array([o.w, o.x, o.y, o.z], dtype=np.float64)
    norm = np.linalg.norm(quaternion)
    if np.isfinite(norm) and norm <= 1e-6:
        raise ValueError(f"orientation {quaternion.tolist()} (wxyz) is not a rotation")
    return np.concatenate([position, quaternion / norm])  # non-finite stays so: the assembler refuses it


@dataclass(frozen=True)
class InputWiring:
    """How the policy node reads one manifest input kind (whose message type is
    `dexstack.manifest.INPUT_KINDS[kind]`): the QoS of a streamed input (latched inputs always use
    QoSKind.LATCHED) and `convert(spec, msg)`, which raises KeyError/ValueError with the reason
    when the message cannot be used."""

    qos: contract.QoSKind
    convert: Callable[[dict[str, Any], Any], Any]


INPUT_WIRING: dict[str, InputWiring] = {
    "joint_positions": InputWiring(contract.QoSKind.STATE_SUB, lambda spec, msg: joint_positions(msg, spec["names"])),
    "rgb": InputWiring(contract.QoSKind.SENSOR_DATA, lambda spec, msg: _checked_image(msg, {"rgb8": (np.uint8, 3)})),
    "depth": InputWiring(contract.QoSKind.SENSOR_DATA, _depth_input),
    "segmentation": InputWiring(contract.QoSKind.SENSOR_DATA, _segmentation_input),
    "wrench": InputWiring(contract.QoSKind.SENSOR_DATA, _wrench_input),
    "pose": InputWiring(contract.QoSKind.SENSOR_DATA, _pose_input),
    "text": InputWiring(contract.QoSKind.SENSOR_DATA, lambda spec, msg: msg.data),
    "vector": InputWiring(contract.QoSKind.SENSOR_DATA, lambda spec, msg: np.array(msg.data, dtype=np.float64)),
}


def input_subscription(spec: dict[str, Any]) -> tuple[type, QoSProfile]:
    """(message class, QoS) of a manifest input: the class its kind names; latched inputs are
    reliable + transient-local, so a node that starts later still gets the last value."""
    qos = contract.QoSKind.LATCHED if spec.get("latched") is True else INPUT_WIRING[spec["kind"]].qos
    return message_class(INPUT_KINDS[spec["kind"]]), QOS[qos]


def convert_input(spec: dict[str, Any], msg: Any) -> Any:
    """Message -> the value of one manifest input. Raises KeyError/ValueError with the reason."""
    return INPUT_WIRING[spec["kind"]].convert(spec, msg)


def camera_info_msg(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                    frame_id: str, stamp: float) -> CameraInfo:
    msg = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    msg.header.stamp, msg.header.frame_id = to_stamp(stamp), frame_id
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# --- diagnostics ------------------------------------------------------------------------
LEVEL = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN, "ERROR": DiagnosticStatus.ERROR,
         "STALE": DiagnosticStatus.STALE}


def diagnostic_status(node: Node, level: str, message: str, values: dict[str, object]) -> DiagnosticStatus:
    return DiagnosticStatus(level=LEVEL[level], name=node.get_fully_qualified_name(), message=message,
                            hardware_id="dexstack",
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


# --- start-up ---------------------------------------------------------------------------
def run_node(make_node: Callable[[], Node], args: list[str] | None = None, multithreaded: bool = False) -> None:
    """Standard `main()`: init, spin until Ctrl-C or shutdown, then destroy cleanly."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init(args=sys.argv if args is None else args)
    node = None
    try:
        node = make_node()
        if multithreaded:
            from rclpy.executors import MultiThreadedExecutor

            executor = MultiThreadedExecutor(num_threads=2)
            executor.add_node(node)
            executor.spin()
        else:
            rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


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
