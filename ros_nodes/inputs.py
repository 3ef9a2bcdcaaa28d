"""How the policy node reads each manifest input kind (`dexstack/manifest.py`'s `INPUT_KINDS`):
the message's QoS and its conversion into the value a runtime gets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from dexstack import contract
from dexstack.manifest import INPUT_KINDS
from dexstack.ros_nodes.common import QOS, joint_positions, message_class


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


def _depth_input(spec: dict[str, Any], msg: Image) -> np.ndarray:
    mm = _checked_image(msg, {"16UC1": (np.uint16, 1)})
    # float32 metres (the contract), or raw millimetres when the graph wants them.
    value = mm if spec.get("dtype") == "uint16" else mm.astype(np.float32) / 1000.0
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
