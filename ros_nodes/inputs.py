"""How the policy node reads each manifest input kind (`dexstack/manifest.py`'s `INPUT_KINDS`):
the message's QoS and its conversion into the value a runtime gets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from dexstack import contract
from dexstack.manifest import INPUT_KINDS
from dexstack.ros_nodes.common import QOS, joint_positions, message_class

# Encodings camera drivers publish colour in (realsense-ros base_realsense_node.cpp
# `_rs_format_to_ros_format`: RGB8 (its default), BGR8, RGBA8, BGRA8, YUYV -> yuv422_yuy2, UYVY ->
# yuv422; usb_cam formats/*.hpp: rgb8 (yuyv2rgb, mjpeg2rgb), bgr8, yuv422_yuy2 (raw yuyv), yuv422
# (uyvy), mono8) -> (dtype, channels, conversion to rgb8). Grey and Bayer are refused: a colour policy
# fed grey would act on an input it never saw, without any error.
_RGB_SOURCES: dict[str, tuple[type, int, Callable[[np.ndarray], np.ndarray] | None]] = {
    "rgb8": (np.uint8, 3, None),
    "bgr8": (np.uint8, 3, lambda px: cv2.cvtColor(px, cv2.COLOR_BGR2RGB)),  # 30x faster than px[..., ::-1]
    "rgba8": (np.uint8, 4, lambda px: cv2.cvtColor(px, cv2.COLOR_RGBA2RGB)),
    "bgra8": (np.uint8, 4, lambda px: cv2.cvtColor(px, cv2.COLOR_BGRA2RGB)),
    "yuv422_yuy2": (np.uint8, 2, lambda px: cv2.cvtColor(px, cv2.COLOR_YUV2RGB_YUY2)),
    "yuv422": (np.uint8, 2, lambda px: cv2.cvtColor(px, cv2.COLOR_YUV2RGB_UYVY)),
}
# Depth per REP 118: 16UC1 in millimetres (realsense-ros publishes Z16 as 16UC1 and rescales other
# depth units to mm: base_realsense_node.cpp `fix_depth_scale`), 32FC1 in metres (depth_image_proc,
# Gazebo). No reading is 0 in 16UC1 and NaN/inf in 32FC1; both become 0 here, as the sim publishes.
_DEPTH_SOURCES = {"16UC1": (np.uint16, 1), "32FC1": (np.float32, 1)}


def _pixels(msg: Image, dtype: type, channels: int) -> np.ndarray:
    """The image's pixels as (H, W) or (H, W, channels). Rows may be padded (`step` larger than
    width x pixel size, as sensor_msgs/Image allows). Raises ValueError on a size mismatch."""
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * channels * dtype.itemsize
    if msg.height == 0 or msg.width == 0 or msg.step < row or len(msg.data) != msg.height * msg.step:
        raise ValueError(
            f"image {msg.width}x{msg.height} {msg.encoding} with step {msg.step} does not match its "
            f"{len(msg.data)} bytes (a row needs {row})"
        )
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)[:, :row]
    pixels = np.ascontiguousarray(rows).view(dtype)
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return pixels.reshape(shape)


def _refuse(msg: Image, kind: str, accepted: list[str], hint: str) -> ValueError:
    expected = ", ".join(repr(e) for e in accepted)
    return ValueError(f"image encoding {msg.encoding!r} cannot feed a {kind} input (accepted: {expected}); {hint}")


def _checked_image(msg: Image, encodings: dict[str, tuple[np.dtype, int]]) -> np.ndarray:
    """The image's pixels for one of `encodings` ({encoding: (dtype, channels)}). Raises ValueError
    on another encoding or a size mismatch."""
    if msg.encoding not in encodings:
        raise ValueError(f"image encoding {msg.encoding!r}, expected {' or '.join(repr(e) for e in encodings)}")
    return _pixels(msg, *encodings[msg.encoding])


def _rgb_input(spec: dict[str, Any], msg: Image) -> np.ndarray:
    if msg.encoding not in _RGB_SOURCES:
        raise _refuse(
            msg,
            "colour (rgb)",
            list(_RGB_SOURCES),
            "set the driver to colour (realsense-ros rgb_camera.color_format RGB8, usb_cam pixel_format mjpeg2rgb)",
        )
    dtype, channels, to_rgb = _RGB_SOURCES[msg.encoding]
    if channels == 2 and msg.width % 2:
        raise ValueError(f"image encoding {msg.encoding!r} packs pixel pairs: its width must be even, got {msg.width}")
    pixels = _pixels(msg, dtype, channels)
    return pixels if to_rgb is None else np.ascontiguousarray(to_rgb(pixels))


def _depth_input(spec: dict[str, Any], msg: Image) -> np.ndarray:
    if msg.encoding not in _DEPTH_SOURCES:
        raise _refuse(
            msg,
            "depth",
            list(_DEPTH_SOURCES),
            "REP 118 depth is 16UC1 in mm or 32FC1 in m (a mono16 infrared image is not depth)",
        )
    raw = _pixels(msg, *_DEPTH_SOURCES[msg.encoding])
    if raw.dtype.kind == "f":  # metres; no reading (NaN, +-inf, <= 0) -> 0 as in 16UC1
        metres = np.where(np.isfinite(raw) & (raw > 0), raw, 0.0).astype(np.float32)
        mm = np.clip(np.rint(metres * 1000.0), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    else:
        mm = raw.astype(np.uint16)
        metres = mm.astype(np.float32) / 1000.0
    # float32 metres (the contract), or raw millimetres when the graph wants them.
    value = mm if spec.get("dtype") == "uint16" else metres
    return value[..., None] if len(spec["shape"]) == 3 else value


def _segmentation_input(spec: dict[str, Any], msg: Image) -> np.ndarray:
    ids = _checked_image(
        msg, {"mono8": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1), "32SC1": (np.int32, 1)}
    )
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
    "rgb": InputWiring(contract.QoSKind.SENSOR_DATA, _rgb_input),
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
