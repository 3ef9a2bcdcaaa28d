"""A policy family from outside dexstack, built only from its public surface (docs/ADDING_A_FAMILY.md).

The test writes a tiny family package into a temp directory: a `Family` entry, a runtime (numpy +
onnxruntime, a real ONNX graph built with onnx.helper) and a pip-style dist-info declaring the
entry point. In this process the family is registered with `register_family`; the policy node,
started as its own process, finds it the way an installed plug-in is found: through the
`dexstack.families` entry point of a distribution on its PYTHONPATH.

The family reads the joint state and a latched target pose, and answers
chunk[i] = q + gain * target_x for every joint, so a chunk tells which version computed it and
from which target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from dexstack import contract
from dexstack.graph import NodeSpec
from dexstack.hardware.profiles import PANDA

FAMILY_NAME = "tiny_offset"  # sorts after the shipped families, so their error listings stay as they are
POLICY = "tiny_policy"
TARGET_TOPIC = "/plugin_test/target"
JOINTS = list(PANDA.joint_names)
CHUNK, DT = 2, 0.1

FAMILY_PY = """
from dexstack.families import Family

FAMILY = Family(name="tiny_offset", runtime="tiny_family.runtime:make_runtime",
                description="test family: q + gain * target x")
"""

RUNTIME_PY = '''
"""The tiny family's runtime: the PolicyRuntime contract with numpy + onnxruntime only."""

from pathlib import Path

import numpy as np
import onnxruntime

from dexstack.runtime import ObservationError, check_observation


class Runtime:
    def __init__(self, policy_dir: Path, manifest: dict, profile, rate_hz) -> None:
        self.manifest = manifest
        self.session = onnxruntime.InferenceSession(str(policy_dir / manifest["graphs"]["policy"]),
                                                    providers=["CPUExecutionProvider"])
        self.chunk = manifest["outputs"]["chunk_length"]
        self.profile_name, self.rate_hz = profile.name, rate_hz

    def reset(self) -> None:
        pass  # no episode state

    def act(self, observation: dict) -> np.ndarray:
        check_observation(observation, self.manifest["inputs"])
        target = np.asarray(observation["target"])
        if np.linalg.norm(target[:3]) > 10.0:
            raise ObservationError("target is more than 10 m away")
        q = np.asarray(observation["q"], dtype=np.float32)[None]
        out = self.session.run(None, {"q": q, "x": target[None, :1].astype(np.float32)})[0]
        return np.repeat(out.astype(np.float64), self.chunk, axis=0)


def make_runtime(policy_dir: Path, manifest: dict, *, profile, rate_hz) -> Runtime:
    return Runtime(policy_dir, manifest, profile, rate_hz)
'''


def write_family_package(root: Path) -> Path:
    """`root` becomes a PYTHONPATH entry holding the package and its dist-info (entry point)."""
    package = root / "tiny_family"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(FAMILY_PY))
    (package / "runtime.py").write_text(textwrap.dedent(RUNTIME_PY))
    dist = root / "tiny_family-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-family\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[dexstack.families]\n{FAMILY_NAME} = tiny_family:FAMILY\n")
    return root


def write_export(out: Path, gain: float) -> Path:
    """policy.onnx (y = q + gain * x) and a schema-2 manifest with a latched pose input."""
    import onnx
    from onnx import TensorProto, helper

    out.mkdir(parents=True)
    j = len(JOINTS)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "gain"], ["gx"]), helper.make_node("Add", ["q", "gx"], ["y"])],
        "q_plus_gx",
        [
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, j]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, j])],
        initializer=[helper.make_tensor("gain", TensorProto.FLOAT, [], [gain])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    (out / "policy.onnx").write_bytes(model.SerializeToString())
    manifest = {
        "schema_version": 2,
        "name": POLICY,
        "family": FAMILY_NAME,
        "robot_profile": PANDA.name,
        "graphs": {"policy": "policy.onnx"},
        "inputs": [
            {
                "name": "q",
                "kind": "joint_positions",
                "source": contract.JOINT_STATES,
                "names": JOINTS,
                "shape": [j],
                "dtype": "float64",
                "max_age_s": 0.5,
            },
            {
                "name": "target",
                "kind": "pose",
                "source": TARGET_TOPIC,
                "shape": [7],
                "dtype": "float64",
                "latched": True,
            },
        ],
        "outputs": {"kind": "joint_position_chunk", "joint_names": JOINTS, "chunk_length": CHUNK, "dt": DT},
        "provenance": {"code_commit": "test", "created": datetime.now(UTC).isoformat(timespec="seconds")},
        "runtime": {"note": "free-form, read only by the family"},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture
def plugin_root(tmp_path, monkeypatch) -> Path:
    root = write_family_package(tmp_path / "plugin")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")
    return root


def test_registered_family_publishes_loads_and_acts_in_process(plugin_root, tmp_path, dexstack_home):
    from tiny_family import FAMILY

    from dexstack.families import get_family, register_family, resolve
    from dexstack.runtime import ObservationError, load_runtime
    from dexstack.store import PolicyStore

    register_family(FAMILY)
    assert get_family(FAMILY_NAME) is FAMILY
    assert resolve(FAMILY.runtime).__name__ == "make_runtime"
    loaded = PolicyStore().publish(write_export(tmp_path / "export", gain=2.0))
    runtime = load_runtime(loaded.path, loaded.manifest, profile=PANDA, rate_hz=20.0)
    assert (runtime.profile_name, runtime.rate_hz) == (PANDA.name, 20.0)
    q = np.linspace(-0.5, 0.5, len(JOINTS))
    chunk = runtime.act({"q": q, "target": np.array([0.25, 0, 0, 1, 0, 0, 0])})
    assert chunk.shape == (CHUNK, len(JOINTS))
    np.testing.assert_allclose(chunk, np.tile(q + 0.5, (CHUNK, 1)), atol=1e-6)
    with pytest.raises(ObservationError, match="more than 10 m away"):
        runtime.act({"q": q, "target": np.array([20.0, 0, 0, 1, 0, 0, 0])})


def test_entry_point_is_discovered_by_a_fresh_process(plugin_root):
    script = "from dexstack.families import families; print(' '.join(families()))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(plugin_root)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["bc", "diffusion", "gpayn", FAMILY_NAME]


def test_registry_errors_name_what_is_known_and_what_is_wrong(plugin_root, tmp_path):
    from dexstack.families import Family, get_family, register_family, resolve

    with pytest.raises(KeyError, match=r"unknown policy family 'nope'; known families: bc, diffusion, gpayn"):
        get_family("nope")
    with pytest.raises(TypeError, match="register_family takes a Family, got dict"):
        register_family({"name": "x"})
    with pytest.raises(ValueError, match="'no_colon' is not a 'module:callable' reference"):
        resolve("no_colon")
    assert Family("x", runtime="m:f").train is None  # train and export are optional
    # An entry point whose name is not its Family's name is refused when the registry is read.
    bad = tmp_path / "bad_plugin"
    write_family_package(bad)
    (bad / "tiny_family-0.1.dist-info" / "entry_points.txt").write_text(
        "[dexstack.families]\nother_name = tiny_family:FAMILY\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", "from dexstack.families import families; families()"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(bad)},
    )
    assert out.returncode != 0
    assert "entry point 'other_name' in group 'dexstack.families' declares family 'tiny_offset'" in out.stderr


class PluginRig:
    def __init__(self, client) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rcl_interfaces.srv import SetParameters
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        from dexstack.ros_nodes.common import QOS

        self.client, node = client, client.node
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_js = node.create_publisher(JointState, contract.JOINT_STATES, reliable)
        self.pub_target = node.create_publisher(PoseStamped, TARGET_TOPIC, QOS[contract.QoSKind.LATCHED])
        self.pub_episode = node.create_publisher(String, contract.SIM_EPISODE, QOS[contract.QoSKind.LATCHED])
        self.answers: list = []
        self.warnings: list[str] = []
        node.create_subscription(JointTrajectory, PANDA.policy_output_topic, self.answers.append, reliable)
        node.create_subscription(DiagnosticArray, contract.DIAGNOSTICS, self._on_diag, reliable)
        self.set_params = node.create_client(SetParameters, "/policy/set_parameters")
        self.q = np.array(PANDA.home)
        self.sent: dict[int, np.ndarray] = {}

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            level = status.level if isinstance(status.level, int) else ord(status.level)
            if status.name.endswith("/policy") and level == 1:
                self.warnings.append(status.message)

    def send_joints(self) -> None:
        from dexstack.ros_nodes import common

        stamp_ns = time.time_ns()
        msg = common.joint_state_msg(JOINTS, self.q)
        msg.header.stamp = common.time_msg(stamp_ns)
        self.pub_js.publish(msg)
        self.sent[stamp_ns] = self.q.copy()

    def send_target(self, x: float, stamp_ns: int) -> None:
        from geometry_msgs.msg import PoseStamped

        from dexstack.ros_nodes import common

        msg = PoseStamped()
        msg.header.stamp = common.time_msg(stamp_ns)
        msg.pose.position.x = x
        msg.pose.orientation.w = 2.0  # not unit: the node normalises the quaternion
        self.pub_target.publish(msg)

    def feed_until(self, predicate, timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.send_joints()
            self.client.spin_for(0.05)
            if predicate():
                return True
        return predicate()

    def chunk_offsets(self, since: int) -> list[float]:
        """target-induced offset of each chunk since `since` (first point minus the joint state)."""
        from dexstack.ros_nodes import common

        return [
            float(np.mean(np.array(m.points[0].positions) - self.sent[common.stamp_ns(m.header.stamp)]))
            for m in self.answers[since:]
            if m.points and common.stamp_ns(m.header.stamp) in self.sent
        ]

    def holds(self, since: int) -> int:
        return sum(1 for m in self.answers[since:] if not m.points)


@pytest.mark.ros
def test_plugin_family_served_by_the_policy_node_with_latched_input_semantics(
    plugin_root, tmp_path, dexstack_home, ros_client, launch_nodes
):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_msgs.msg import String
    from tiny_family import FAMILY

    from dexstack.families import register_family
    from dexstack.store import PolicyStore

    register_family(FAMILY)  # for publishing here; the node process finds the entry point itself
    store = PolicyStore()
    store.publish(write_export(tmp_path / "v1", gain=1.0))
    store.publish(write_export(tmp_path / "v2", gain=-3.0))
    spec = NodeSpec(
        "policy_node",
        "policy",
        {"profile": PANDA.name, "policy": f"{POLICY}@1", "rate": 20.0, "trigger": "timer", "start_enabled": True},
    )
    launch_nodes(
        [spec], extra_env={"DEXSTACK_HOME": dexstack_home, "DEXSTACK_BUNDLED_STORE": "", "PYTHONPATH": str(plugin_root)}
    )
    rig = PluginRig(ros_client)
    node = ros_client.node
    assert ros_client.spin_until(
        lambda: node.count_subscribers(TARGET_TOPIC) >= 1 and rig.set_params.service_is_ready(), 30.0
    ), "policy node never appeared"

    # No target yet: the node answers with holds and a WARN naming the latched input and its topic.
    assert rig.feed_until(
        lambda: rig.holds(0) >= 3 and any(w == f"waiting for target on {TARGET_TOPIC}" for w in rig.warnings)
    )
    assert not rig.chunk_offsets(0)

    # The target arrives once: chunks q + 1.0 * x from then on (it is never stale).
    start_ns = time.time_ns()
    rig.send_target(0.25, start_ns)
    mark = len(rig.answers)
    assert rig.feed_until(lambda: len(rig.chunk_offsets(mark)) >= 5)
    assert rig.chunk_offsets(mark)[-1] == pytest.approx(0.25, abs=1e-6)

    # A new episode that started after the target was planned drops it: holds until a new one.
    episode_s = (time.time_ns() + 1_000_000) / 1e9
    rig.pub_episode.publish(String(data=json.dumps({"episode": 1, "seed": 7, "stamp": episode_s})))
    mark, warn_mark = len(rig.answers), len(rig.warnings)
    assert rig.feed_until(
        lambda: rig.holds(mark) >= 3 and any(w.startswith("waiting for target") for w in rig.warnings[warn_mark:])
    )
    rig.send_target(0.5, int(episode_s * 1e9) - 1)  # stamped before the episode began: the old scene's
    rig.client.spin_for(0.5)
    mark = len(rig.answers)
    rig.feed_until(lambda: False, timeout_s=1.0)
    assert not rig.chunk_offsets(mark)
    rig.send_target(0.5, time.time_ns())
    assert rig.feed_until(lambda: len(rig.chunk_offsets(mark)) >= 3)
    assert rig.chunk_offsets(mark)[-1] == pytest.approx(0.5, abs=1e-6)

    # Hot-swap to version 2: the latched target carries over, no republishing needed.
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=f"{POLICY}@2")
    future = rig.set_params.call_async(SetParameters.Request(parameters=[Parameter(name="policy", value=value)]))
    assert ros_client.spin_until(future.done, 20.0)
    assert future.result().results[0].successful, future.result().results[0].reason
    mark = len(rig.answers)
    assert rig.feed_until(lambda: len(rig.chunk_offsets(mark)) >= 3)
    assert rig.chunk_offsets(mark)[-1] == pytest.approx(-1.5, abs=1e-6)
