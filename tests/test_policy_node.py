"""The policy node over real DDS, serving a real bc-family ONNX policy from a temp store.

The fixture policy is a genuine bc export (graph I/O of `policies/bc/export.py`, served by
`policies/bc/runtime.py`): its graph outputs a zero normalised chunk, so with the manifest's
relative chunk normalisation every target is `joint_positions + offset`. Each published
version gets its own offset, so a chunk tells which version computed it.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from dexstack import contract
from dexstack.graph import NodeSpec
from dexstack.hardware.profiles import PANDA

pytestmark = pytest.mark.ros

NAME = "node_test_policy"
JOINTS = list(PANDA.joint_names)
CHUNK = 8
DT = 0.1
HW = (96, 96)  # the PANDA profile's camera size
NS = 1_000_000_000


def write_bc_export(out: Path, offset: float, cameras: tuple[str, ...] = ("wrist", "scene")) -> Path:
    """A bc export dir (policy.onnx + manifest.json) whose chunk is joint_positions + offset."""
    import onnx
    from onnx import TensorProto, helper

    out.mkdir(parents=True)
    j = len(JOINTS)
    graph_inputs = [helper.make_tensor_value_info(contract.JOINT_POSITIONS, TensorProto.FLOAT, ["batch", j])]
    graph_inputs += [
        helper.make_tensor_value_info(contract.rgb_key(c), TensorProto.FLOAT, ["batch", *HW, 3]) for c in cameras
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", [contract.JOINT_POSITIONS, "axis1"], ["q3"]),
            helper.make_node("Mul", ["q3", "zero"], ["z3"]),  # (batch, 1, J) zeros
            helper.make_node("Expand", ["z3", "chunk_shape"], ["chunk_normalized"]),
        ],  # (batch, CHUNK, J)
        "hold_plus_offset",
        graph_inputs,
        [helper.make_tensor_value_info("chunk_normalized", TensorProto.FLOAT, ["batch", CHUNK, j])],
        initializer=[
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("chunk_shape", TensorProto.INT64, [3], [1, CHUNK, 1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    (out / "policy.onnx").write_bytes(data)
    inputs = [
        {
            "name": contract.JOINT_POSITIONS,
            "kind": "joint_positions",
            "source": contract.JOINT_STATES,
            "names": JOINTS,
            "shape": [j],
            "dtype": "float32",
            "normalization": {"type": "mean_std", "mean": [0.0] * j, "std": [1.0] * j},
        }
    ]
    inputs += [
        {
            "name": contract.rgb_key(c),
            "kind": "rgb",
            "source": contract.camera_color_topic(c),
            "shape": [*HW, 3],
            "dtype": "uint8",
            "normalization": {"type": "scale", "scale": 1 / 255},
        }
        for c in cameras
    ]
    manifest = {
        "schema_version": 1,
        "family": "bc",
        "robot_profile": PANDA.name,
        "graphs": {"policy": "policy.onnx"},
        "inputs": inputs,
        "outputs": {
            "kind": "joint_position_chunk",
            "joint_names": JOINTS,
            "chunk_length": CHUNK,
            "dt": DT,
            "chunk_normalization": {
                "type": "mean_std",
                "mean": offset,
                "std": 1.0,
                "relative_to": contract.JOINT_POSITIONS,
            },
        },
        "provenance": {"code_commit": "test", "created": datetime.now(UTC).isoformat(timespec="seconds")},
        "evaluation": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def publish(tmp_path: Path, tag: str, **kwargs):
    from dexstack.store import PolicyStore

    return PolicyStore().publish(write_bc_export(tmp_path / f"export_{tag}", **kwargs), name=NAME)


def flip_bytes(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 4):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def garbage_graph_with_checksums(version: Path) -> None:
    """Replace a stored version's graph with bytes onnxruntime cannot open and record their sha256
    (publish refuses such a graph, so it is damaged after publishing)."""
    garbage = b"not an onnx graph" * 20
    graph, manifest_path = version / "policy.onnx", version / "manifest.json"
    for path in (graph, manifest_path):
        path.chmod(0o644)
    graph.write_bytes(garbage)
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["policy.onnx"] = hashlib.sha256(garbage).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Rig:
    """Test-side ends of every topic and service the policy node has."""

    def __init__(self, client) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import SetParameters
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState
        from std_srvs.srv import SetBool
        from trajectory_msgs.msg import JointTrajectory

        self.client, node = client, client.node
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        from rosgraph_msgs.msg import Clock

        self.pub_js = node.create_publisher(JointState, contract.JOINT_STATES, reliable)
        self.pub_clock = node.create_publisher(Clock, contract.CLOCK, reliable)
        self.pub_rgb = {
            c: node.create_publisher(Image, contract.camera_color_topic(c), reliable) for c in ("wrist", "scene")
        }
        self.answers: list = []  # (JointTrajectory, arrival index)
        self.diagnostics: list = []
        node.create_subscription(JointTrajectory, PANDA.policy_output_topic, self.answers.append, reliable)
        node.create_subscription(DiagnosticArray, contract.DIAGNOSTICS, self._on_diag, reliable)
        self.set_params = node.create_client(SetParameters, "/policy/set_parameters")
        self.enable = node.create_client(SetBool, "/policy/enable")
        self.rng = np.random.default_rng(0)
        self.q = np.array(PANDA.home)
        self.sent: dict[int, np.ndarray] = {}  # stamp ns -> joint positions sent

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith("/policy"):
                level = status.level if isinstance(status.level, int) else ord(status.level)  # a ROS `byte`
                self.diagnostics.append((level, status.message, {kv.key: kv.value for kv in status.values}))

    def wait_connected(self) -> None:
        node = self.client.node
        assert self.client.spin_until(
            lambda: (
                node.count_subscribers(contract.JOINT_STATES) >= 1
                and node.count_publishers(PANDA.policy_output_topic) >= 1
                and self.set_params.service_is_ready()
            ),
            30.0,
        ), "policy node never appeared"

    def set_clock(self, stamp_ns: int) -> None:
        """Sim time for a node with use_sim_time, as the lockstep sim publishes it."""
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.pub_clock.publish(msg)

    def send(
        self, q: np.ndarray | None = None, stamp_ns: int | None = None, cameras=("wrist", "scene"), joints: bool = True
    ) -> int:
        """Publish joint_states (+ images) with one stamp (wall clock unless given)."""
        from dexstack.ros_nodes import common

        stamp_ns = time.time_ns() if stamp_ns is None else stamp_ns
        q = self.q if q is None else q
        if joints:
            msg = common.joint_state_msg(JOINTS, q)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            self.pub_js.publish(msg)
            self.sent[stamp_ns] = np.array(q, dtype=float)
        for cam in cameras:
            img = common.rgb_msg(self.rng.integers(0, 256, (*HW, 3), dtype=np.uint8), cam, 0.0)
            img.header.stamp.sec, img.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            self.pub_rgb[cam].publish(img)
        return stamp_ns

    def feed_until(self, predicate, timeout_s: float = 15.0, period_s: float = 0.03, **send_kwargs) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.send(**send_kwargs)
            self.client.spin_for(period_s)
            if predicate():
                return True
        return predicate()

    def call(self, client, request):
        future = client.call_async(request)
        assert self.client.spin_until(future.done, 20.0), f"no answer from {client.srv_name}"
        return future.result()

    def set_policy(self, ref: str):
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=ref)
        response = self.call(self.set_params, SetParameters.Request(parameters=[Parameter(name="policy", value=value)]))
        return response.results[0]

    def chunks(self, since: int = 0) -> list:
        return [m for m in self.answers[since:] if m.points]

    def holds(self, since: int = 0) -> list:
        return [m for m in self.answers[since:] if not m.points]

    def offset_of(self, msg) -> float:
        """The version offset a chunk was computed with: first target minus the sent joint state."""
        return float(np.mean(np.array(msg.points[0].positions) - self.sent[_ns(msg.header.stamp)]))


def policy_spec(trigger: str = "timer", ref: str = f"{NAME}@1", sim_time: bool = False) -> NodeSpec:
    return NodeSpec(
        "policy_node",
        "policy",
        {
            "use_sim_time": sim_time,
            "profile": PANDA.name,
            "policy": ref,
            "rate": 20.0,
            "trigger": trigger,
            "start_enabled": True,
        },
    )


def test_chunks_holds_hot_swap_and_enable(tmp_path, dexstack_home, ros_client, launch_nodes, monkeypatch):
    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")
    v1 = publish(tmp_path, "v1", offset=0.01)
    v2 = publish(tmp_path, "v2", offset=0.02)
    flip_bytes(v2.path / "policy.onnx")  # corrupted after publishing: checksum mismatch
    garbage_graph_with_checksums(publish(tmp_path, "v3", offset=0.03).path)  # onnxruntime cannot open it
    publish(tmp_path, "v4", offset=0.04, cameras=("wrist",))  # good, and reads one camera less
    launch_nodes([policy_spec()], extra_env={"DEXSTACK_HOME": dexstack_home, "DEXSTACK_BUNDLED_STORE": ""})
    rig = Rig(ros_client)
    rig.wait_connected()

    # A chunk answers an observation we sent: its stamp, the profile's joints, q + 0.01 at (i + 1) * dt.
    assert rig.feed_until(lambda: any(_ns(m.header.stamp) in rig.sent for m in rig.chunks()))
    chunk = next(m for m in rig.chunks() if _ns(m.header.stamp) in rig.sent)
    assert list(chunk.joint_names) == JOINTS
    assert len(chunk.points) == CHUNK
    q_sent = rig.sent[_ns(chunk.header.stamp)]
    for i, point in enumerate(chunk.points):
        np.testing.assert_allclose(point.positions, q_sent + 0.01, atol=1e-6)
        assert point.time_from_start.sec + point.time_from_start.nanosec * 1e-9 == pytest.approx((i + 1) * DT)

    # NaN joint state: holds stamped with the NaN observations, diagnostics ERROR, no chunk from them.
    bad_q = rig.q.copy()
    bad_q[2] = math.nan
    mark = len(rig.answers)
    nan_stamps: set[int] = set()

    def nan_answered() -> bool:
        nan_stamps.update(t for t, q in rig.sent.items() if np.isnan(q).any())
        hold_stamps = {_ns(m.header.stamp) for m in rig.holds(mark)}
        return bool(hold_stamps & nan_stamps) and any(d[0] == 2 and "NaN" in d[1] for d in rig.diagnostics)

    assert rig.feed_until(nan_answered, q=bad_q)
    assert not [m for m in rig.chunks(mark) if _ns(m.header.stamp) in nan_stamps]
    error = next(d for d in rig.diagnostics if d[0] == 2 and "NaN" in d[1])
    assert int(error[2]["hold_count"]) >= 1 and "NaN" in error[2]["last_hold_reason"]

    # Stale input: stop publishing joint states; the node keeps answering, with holds and a WARN.
    rig.feed_until(lambda: bool(rig.chunks(len(rig.answers) - 1)), timeout_s=10.0)  # healthy again
    mark, diag_mark = len(rig.answers), len(rig.diagnostics)
    assert rig.feed_until(
        lambda: len(rig.holds(mark)) >= 3 and any(d[0] == 1 and "stale" in d[1] for d in rig.diagnostics[diag_mark:]),
        joints=False,
    )
    assert not [m for m in rig.chunks(mark) if _ns(m.header.stamp) > max(rig.sent)]

    # Hot-swap to a corrupted version is refused with the reason; version 1 keeps serving.
    result = rig.set_policy(f"{NAME}@2")
    assert not result.successful and "checksum mismatch" in result.reason and f"{NAME}@1" in result.reason
    result = rig.set_policy(f"{NAME}@3")
    assert not result.successful and "policy.onnx" in result.reason
    mark, diag_mark = len(rig.answers), len(rig.diagnostics)
    assert rig.feed_until(lambda: len(rig.chunks(mark)) >= 3 and len(rig.diagnostics) > diag_mark + 1)
    assert all(rig.offset_of(m) == pytest.approx(0.01, abs=1e-6) for m in rig.chunks(mark))
    assert rig.diagnostics[-1][2]["version"] == v1.version
    assert rig.diagnostics[-1][2]["manifest_sha256"] == v1.manifest_sha256

    # A good version switches: its chunks, its name in diagnostics, and it unsubscribes the unused camera.
    result = rig.set_policy(f"{NAME}@4")
    assert result.successful, result.reason
    mark, diag_mark = len(rig.answers), len(rig.diagnostics)
    assert rig.feed_until(lambda: len(rig.chunks(mark)) >= 3 and len(rig.diagnostics) > diag_mark + 1)
    assert rig.offset_of(rig.chunks(mark)[-1]) == pytest.approx(0.04, abs=1e-6)
    assert rig.diagnostics[-1][2]["version"] == "4" and rig.diagnostics[-1][0] == 0
    assert ros_client.spin_until(lambda: ros_client.node.count_subscribers(contract.camera_color_topic("scene")) == 0)

    # ~/enable false: no chunk for any observation sent after the call.
    from std_srvs.srv import SetBool

    mark = len(rig.answers)
    assert rig.call(rig.enable, SetBool.Request(data=False)).success
    first_after = time.time_ns()
    rig.feed_until(lambda: False, timeout_s=1.5)
    assert not [m for m in rig.chunks(mark) if _ns(m.header.stamp) >= first_after]
    assert rig.holds(mark), "disabling must send one hold to stop the chunk being executed"
    assert rig.diagnostics[-1][2]["enabled"] == "False"


def test_observation_trigger_answers_each_complete_stamp_once(
    tmp_path, dexstack_home, ros_client, launch_nodes, monkeypatch
):
    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")
    publish(tmp_path, "v1", offset=0.01)
    # Plain NAME: the store's promoted/newest version, re-resolved by ~/reload.
    launch_nodes(
        [policy_spec("observation", ref=NAME, sim_time=True)],
        extra_env={"DEXSTACK_HOME": dexstack_home, "DEXSTACK_BUNDLED_STORE": ""},
    )
    rig = Rig(ros_client)
    rig.wait_connected()
    # Sim time stands still between observations, as in a lockstep sim waiting for answers.
    s1, s2, s3 = 10 * NS, 10 * NS + 100_000_000, 10 * NS + 200_000_000
    rig.set_clock(s1)
    # Best-effort subscriptions may miss the first messages after discovery: re-send the same
    # stamp (as the lockstep sim does) until it is answered.
    assert rig.feed_until(lambda: bool(rig.answers), stamp_ns=s1, period_s=0.2)
    ros_client.spin_for(0.5)
    # A re-sent joint state of an answered stamp gets the same answer again (the sim lost it?).
    assert {_ns(m.header.stamp) for m in rig.answers} == {s1} and all(m.points for m in rig.answers)
    np.testing.assert_allclose(rig.answers[0].points[-1].positions, rig.q + 0.01, atol=1e-6)

    # Joint state alone, then images with a different stamp: no complete set, no answer.
    rig.set_clock(s2)
    n = len(rig.answers)
    rig.send(stamp_ns=s2, cameras=())
    rig.send(stamp_ns=s2 + 1, joints=False)
    ros_client.spin_for(1.0)
    assert len(rig.answers) == n
    rig.send(stamp_ns=s2, joints=False)  # the matching images complete the set
    assert ros_client.spin_until(lambda: len(rig.answers) == n + 1, 10.0)
    assert _ns(rig.answers[n].header.stamp) == s2 and rig.answers[n].points
    rig.send(stamp_ns=s2, joints=False)  # the same stamp again is not acted on twice
    ros_client.spin_for(1.0)
    assert len(rig.answers) == n + 1
    rig.send(stamp_ns=s2, cameras=())  # a re-sent joint state: the cached answer, not a new computation
    assert ros_client.spin_until(lambda: len(rig.answers) == n + 2, 10.0)
    assert rig.answers[n + 1] == rig.answers[n]

    # A non-finite observation gets a hold with its own stamp, so a lockstep sim can go on.
    rig.set_clock(s3)
    bad_q = rig.q.copy()
    bad_q[0] = math.inf
    rig.send(bad_q, stamp_ns=s3)
    assert ros_client.spin_until(lambda: len(rig.answers) == n + 3, 10.0)
    assert _ns(rig.answers[-1].header.stamp) == s3 and not rig.answers[-1].points
    # Two stamps computed on (s1, s2), one hold; re-sends are not counted as chunks.
    diag_mark = len(rig.diagnostics)
    assert ros_client.spin_until(lambda: len(rig.diagnostics) > diag_mark, 5.0)
    values = rig.diagnostics[-1][2]
    assert (values["chunks"], values["hold_count"]) == ("2", "1")
    assert float(values["inference_ms_p50"]) > 0.0

    # ~/reload picks up a newly published version of NAME; the next stamp is answered by it.
    from std_srvs.srv import Trigger

    publish(tmp_path, "v2", offset=0.02)
    reload = ros_client.node.create_client(Trigger, "/policy/reload")
    assert ros_client.spin_until(reload.service_is_ready, 10.0)
    response = rig.call(reload, Trigger.Request())
    assert response.success and f"{NAME}@2" in response.message
    s4 = s3 + 100_000_000
    rig.set_clock(s4)
    rig.send(stamp_ns=s4)
    assert ros_client.spin_until(lambda: _ns(rig.answers[-1].header.stamp) == s4, 10.0)
    assert rig.offset_of(rig.answers[-1]) == pytest.approx(0.02, abs=1e-6)


def test_serving_path_imports_no_torch(tmp_path, dexstack_home, monkeypatch):
    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")
    publish(tmp_path, "v1", offset=0.01)
    script = (
        "import sys, numpy as np\n"
        "from dexstack.ros_nodes import policy_node\n"
        "from dexstack.hardware.profiles import PANDA\n"
        f"p = policy_node.load_policy('{NAME}', PANDA)\n"
        "obs = {'joint_positions': np.zeros(8), 'wrist_rgb': np.zeros((96, 96, 3), np.uint8),"
        " 'scene_rgb': np.zeros((96, 96, 3), np.uint8)}\n"
        "print(p.ref, float(p.runtime.act(obs)[0, 0]), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"{NAME}@1", "0.01", "False"]


def test_each_input_kind_is_wired_from_the_manifest_alone():
    """Message type, QoS and conversion follow from an input's kind (no family, no special case)."""
    from geometry_msgs.msg import PoseStamped, WrenchStamped
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String

    from dexstack.ros_nodes import inputs

    def spec(kind: str, **extra) -> dict:
        return {"name": kind, "kind": kind, "source": f"/{kind}", "shape": [1], "max_age_s": 0.1} | extra

    for kind, msg_type in [
        ("joint_positions", JointState),
        ("rgb", Image),
        ("depth", Image),
        ("segmentation", Image),
        ("wrench", WrenchStamped),
        ("pose", PoseStamped),
        ("text", String),
        ("vector", Float64MultiArray),
    ]:
        got_type, qos = inputs.input_subscription(spec(kind))
        assert got_type is msg_type
        assert qos.durability == DurabilityPolicy.VOLATILE
    latched_type, latched_qos = inputs.input_subscription({"kind": "pose", "latched": True})
    assert latched_type is PoseStamped
    assert (latched_qos.reliability, latched_qos.durability) == (
        ReliabilityPolicy.RELIABLE,
        DurabilityPolicy.TRANSIENT_LOCAL,
    )

    pose = PoseStamped()
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 1.0, 2.0, 3.0
    pose.pose.orientation.w, pose.pose.orientation.z = 0.0, -2.0  # not unit: normalised
    np.testing.assert_array_equal(inputs.convert_input(spec("pose"), pose), [1, 2, 3, 0, 0, 0, -1])
    pose.pose.orientation.z = 0.0
    with pytest.raises(ValueError, match=r"is not a rotation"):
        inputs.convert_input(spec("pose"), pose)

    wrench = WrenchStamped()
    wrench.wrench.force.z, wrench.wrench.torque.x = 1.5, -0.25
    np.testing.assert_array_equal(inputs.convert_input(spec("wrench"), wrench), [0, 0, 1.5, -0.25, 0, 0])
    assert inputs.convert_input(spec("text"), String(data="pick the cube")) == "pick the cube"
    np.testing.assert_array_equal(inputs.convert_input(spec("vector"), Float64MultiArray(data=[1.0, 2.5])), [1, 2.5])

    ids = np.array([[0, 3], [7, 65535]], dtype=np.uint16)
    for encoding, data in [("mono16", ids), ("16UC1", ids), ("32SC1", ids.astype(np.int32))]:
        msg = Image(height=2, width=2, encoding=encoding, step=2 * data.itemsize, data=data.tobytes())
        out = inputs.convert_input(spec("segmentation"), msg)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, ids)
    mono8 = Image(height=1, width=2, encoding="mono8", step=2, data=bytes([0, 255]))
    np.testing.assert_array_equal(inputs.convert_input(spec("segmentation"), mono8), [[0, 255]])
    with pytest.raises(ValueError, match=r"image encoding 'rgb8', expected 'mono8' or 'mono16'"):
        inputs.convert_input(spec("segmentation"), Image(height=1, width=1, encoding="rgb8", step=3, data=bytes(3)))

    mm = np.array([[1000, 250]], dtype=np.uint16)
    depth = Image(height=1, width=2, encoding="16UC1", step=4, data=mm.tobytes())
    np.testing.assert_allclose(inputs.convert_input(spec("depth", dtype="float32", shape=[1, 2]), depth), [[1.0, 0.25]])
    raw = inputs.convert_input(spec("depth", dtype="uint16", shape=[1, 2, 1]), depth)
    assert raw.dtype == np.uint16 and raw.shape == (1, 2, 1)
    with pytest.raises(ValueError, match="does not match its"):
        inputs.convert_input(spec("rgb"), Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(6)))
