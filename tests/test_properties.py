"""Property-based tests (hypothesis): whatever a JointState, JointTrajectory, Image, Bool or
String carries (NaN, inf, huge, ragged, duplicate or missing names, empty, wrong encodings or
sizes, any stamp), no message callback of the safety filter, policy node, sim node or recorder
lets an exception escape, and nothing non-finite or outside the robot's limits reaches the
controller topic.

The nodes are the real ones, built in this process on a private rclpy context with parameter
overrides (`make_node`); the policy node serves the shipped bc_pick_lift through onnxruntime and
the sim node runs MuJoCo. Callbacks are called directly, as the executor would call them (no
spinning: the property is about the callback, not about DDS), and each node's publisher is
wrapped to capture what it publishes; the real `publish` still runs, so every message is one rclpy
can serialise.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable

import numpy as np
import pytest
import strategies as S
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from dexstack import contract
from dexstack.hardware.command_check import command_violation
from dexstack.hardware.profiles import PANDA

pytestmark = pytest.mark.ros

# Bounded so the file runs well under a minute on a loaded 2-core machine; PROPS_EXAMPLES=500 searches
# harder (minutes).
EXAMPLES = int(os.environ.get("PROPS_EXAMPLES", "40"))
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no "explain": minutes on a loaded machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# --- nodes in this process ------------------------------------------------------------------
@pytest.fixture(scope="module")
def context():
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


def make_node(cls: type, context, **params):
    """An instance of the node class `cls` on `context`, its parameters overridden by `params`
    (the nodes take no constructor arguments: a base class slipped in under `cls` passes rclpy's
    `context` and `parameter_overrides` to `Node.__init__`)."""
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    overrides = [Parameter(k, value=v) for k, v in params.items()]

    class InContext(Node):
        def __init__(self, node_name: str, **kwargs) -> None:
            super().__init__(node_name, context=context, parameter_overrides=overrides, **kwargs)

    return type(f"{cls.__name__}UnderTest", (cls, InContext), {})()


def capture(publisher) -> list:
    """Messages `publisher` publishes from now on, as a subscriber receives them (serialised and
    back: a field the wire cannot hold shows as it arrives); they are still published."""
    from rclpy.serialization import deserialize_message, serialize_message

    sent = []
    real = publisher.publish

    def publish(msg) -> None:
        real(msg)
        sent.append(deserialize_message(serialize_message(msg), type(msg)))

    publisher.publish = publish
    return sent


def seconds(duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


def violation(msg) -> str | None:
    return command_violation(
        PANDA, msg.joint_names, [p.positions for p in msg.points], [seconds(p.time_from_start) for p in msg.points]
    )


def is_stop(msg, known: list[np.ndarray]) -> bool:
    """Whether a controller-topic message only brings the arm to rest: no points (the controller
    keeps its command); one position, repeated, inside what the arm was measured at or commanded
    to so far (`known`, profile order; per joint, as a hold at the command being executed lies
    between points commanded before); or a deceleration (speeds never rising, the last at rest)."""
    if not msg.points:
        return True
    order = [list(msg.joint_names).index(n) for n in PANDA.joint_names]
    q = np.array([p.positions for p in msg.points])[:, order]
    if np.all(q == q[0]):
        return bool(known) and bool(
            np.all((np.min(known, axis=0) - 1e-9 <= q[0]) & (q[0] <= np.max(known, axis=0) + 1e-9))
        )
    t = np.array([seconds(p.time_from_start) for p in msg.points])
    speed = np.abs(np.diff(q, axis=0)) / np.diff(t)[:, None]
    return bool(np.all(speed[-1] == 0.0) and np.all(np.diff(speed, axis=0) <= 0.0))


def run_callback(callback: Callable, *args) -> None:
    """Call a node callback as the executor would; an escaping exception fails the test, naming it."""
    try:
        callback(*args)
    except Exception as exc:  # noqa: BLE001 - the property is that nothing escapes
        pytest.fail(f"{callback.__qualname__} raised {type(exc).__name__}: {exc}")


# --- safety filter ----------------------------------------------------------------------------
FILTER_EVENTS = st.one_of(
    st.tuples(st.just("state"), S.joint_state_specs(valid=True)),
    st.tuples(st.just("state"), S.joint_state_specs()),
    *[st.tuples(st.just("chunk"), S.trajectory_specs(valid=True))] * 3,
    st.tuples(st.just("chunk"), S.trajectory_specs()),
    st.tuples(st.just("estop"), st.booleans()),
    st.tuples(st.just("enable"), st.booleans()),
    st.tuples(st.just("reset_estop"), st.none()),
    st.tuples(st.just("watchdog"), st.none()),
)


@settings(BOUNDED, max_examples=2 * EXAMPLES)  # cheap examples; few of them reach a passed chunk
@given(
    start_enabled=st.booleans(),
    ramp_time_s=st.sampled_from([0.0, 0.0, 2.0]),
    first=st.one_of(st.none(), *[S.joint_state_specs(valid=True)] * 3),
    events=st.lists(FILTER_EVENTS, min_size=2, max_size=14),
)
def test_safety_filter_never_crashes_and_only_sends_safe_commands(context, start_enabled, ramp_time_s, first, events):
    from rclpy.clock import Clock
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Bool
    from std_srvs.srv import SetBool, Trigger

    from dexstack.ros_nodes import safety_filter
    from dexstack.ros_nodes.common import joint_positions

    node = make_node(safety_filter.SafetyFilterNode, context, start_enabled=start_enabled, ramp_time_s=ramp_time_s)
    sent = capture(node.pub)
    clock = Clock()
    last_state = None
    known: list[np.ndarray] = []
    # The e-stop and enable state machine as docs/SAFETY.md states it.
    enabled, latched, pressed = start_enabled, False, False
    events = ([("state", first)] if first is not None else []) + events  # most sequences start with a state
    try:
        for kind, spec in events:
            before = len(sent)
            now = clock.now().nanoseconds * 1e-9
            if kind == "state":
                msg = S.build_joint_state(spec, now, last_state)
                run_callback(node.on_joint_state, msg)
                last_state = msg.header.stamp
                try:
                    measured = joint_positions(msg, PANDA.joint_names)
                except (KeyError, ValueError):
                    measured = np.array([np.nan])
                if np.all(np.isfinite(measured)):
                    known.append(np.clip(measured, PANDA.lower, PANDA.upper))
            elif kind == "chunk":
                # The filter subscribes raw (it refuses an oversized chunk from its CDR header).
                run_callback(node.on_chunk, serialize_message(S.build_trajectory(spec, now, last_state)))
            elif kind == "estop":
                run_callback(node.on_estop, Bool(data=spec))
                pressed = spec
                if spec:
                    enabled, latched = False, True
            elif kind == "enable":
                response = node.on_enable(SetBool.Request(data=spec), SetBool.Response())
                if spec:
                    assert response.success == (not latched), response.message
                enabled = spec and not latched
            elif kind == "reset_estop":
                response = node.on_reset_estop(Trigger.Request(), Trigger.Response())
                assert response.success == (not pressed), response.message
                latched = latched and pressed
            else:
                run_callback(node.on_watchdog)
            new = sent[before:]
            if kind == "estop" and spec and known:  # knowing no position, it leaves the controller holding
                assert new and is_stop(new[-1], known), "a pressed e-stop must publish a stop"
            for msg in new:
                assert violation(msg) is None, violation(msg)
                if not enabled:
                    assert is_stop(msg, known), f"moved while disabled or e-stopped (after {kind})"
            for msg in new:
                if msg.points:
                    order = [list(msg.joint_names).index(n) for n in PANDA.joint_names]
                    known.extend(np.array([p.positions for p in msg.points])[:, order])
        # Chunks still waiting for their joint state are answered once their wait expires.
        before = len(sent)
        expired = types.SimpleNamespace(monotonic=lambda: float("inf"))
        real_time, safety_filter.time = safety_filter.time, expired
        try:
            run_callback(node.on_wait_timeout)
        finally:
            safety_filter.time = real_time
        for msg in sent[before:]:
            assert violation(msg) is None, violation(msg)
            if not enabled:
                assert is_stop(msg, known)
        event(f"filter passed {min(node.safety.stats.passed, 3)}+ chunks")
    finally:
        node.destroy_node()


# --- policy node -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy_nodes(context):
    """The shipped bc_pick_lift served on a timer (50 Hz) and per observation (lockstep)."""
    from dexstack.ros_nodes.policy_node import PolicyNode

    nodes = {
        "timer": make_node(PolicyNode, context, policy="bc_pick_lift", rate=50.0, trigger="timer"),
        "observation": make_node(PolicyNode, context, policy="bc_pick_lift", rate=50.0, trigger="observation"),
    }
    for node in nodes.values():
        assert node.active is not None, node.load_error
    yield nodes
    for node in nodes.values():
        node.destroy_node()


def camera_sources(node) -> list[str]:
    return [s for s in node.active.assembler.sources() if s != contract.JOINT_STATES]


VALID_OBSERVATION = st.tuples(S.joint_state_specs(valid=True), S.image_specs(valid=True), S.image_specs(valid=True))
POLICY_EVENTS = st.one_of(
    st.tuples(st.just("observation"), VALID_OBSERVATION),
    st.tuples(st.just("observation"), st.tuples(S.joint_state_specs(), S.image_specs(), S.image_specs())),
    st.tuples(st.just("observation"), st.tuples(S.joint_state_specs(), S.image_specs(), S.image_specs())),
    st.tuples(st.just("joint_states"), S.joint_state_specs()),
    st.tuples(st.just("image"), st.tuples(st.integers(0, 1), S.image_specs())),
    st.tuples(st.just("episode"), S.episode_texts()),
    st.tuples(st.just("enable"), st.booleans()),
)


@BOUNDED
@given(first=st.none() | VALID_OBSERVATION, events=st.lists(POLICY_EVENTS, max_size=8))
def test_policy_node_never_crashes_and_only_sends_finite_chunks(policy_nodes, first, events):
    from std_srvs.srv import SetBool

    events = ([("observation", first)] if first is not None else []) + events
    outputs = {name: capture(node.pub) for name, node in policy_nodes.items()}
    try:
        check_policy_events(policy_nodes, events, outputs)
    finally:
        for node in policy_nodes.values():
            del node.pub.publish  # the publisher's own method again
            node._on_enable(SetBool.Request(data=True), SetBool.Response())


def check_policy_events(policy_nodes, events, outputs) -> None:
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    manifest = policy_nodes["timer"].active.manifest["outputs"]
    clock = policy_nodes["timer"].get_clock()
    last_state = None
    for kind, spec in events:
        now = clock.now().nanoseconds * 1e-9
        for node in policy_nodes.values():
            cameras = camera_sources(node)
            if kind == "observation":  # what a sim publishes for one stamp: the state and both cameras
                state = S.build_joint_state(spec[0], now, last_state)
                run_callback(node._on_input, contract.JOINT_STATES, state)
                for source, image in zip(cameras, spec[1:], strict=True):
                    image_msg = S.build_image(image, now, last_state)
                    image_msg.header.stamp = state.header.stamp
                    run_callback(node._on_input, source, image_msg)
            elif kind == "joint_states":
                state = S.build_joint_state(spec, now, last_state)
                run_callback(node._on_input, contract.JOINT_STATES, state)
            elif kind == "image":
                run_callback(node._on_input, cameras[spec[0]], S.build_image(spec[1], now, last_state))
            elif kind == "episode":
                run_callback(node._on_episode, String(data=spec))
            else:
                node._on_enable(SetBool.Request(data=spec), SetBool.Response())
            if node.trigger == "timer":
                run_callback(node._on_tick)
        if kind in ("observation", "joint_states"):
            last_state = state.header.stamp
    event(f"policy published {min(sum(1 for m in outputs['timer'] if m.points), 3)}+ chunks on its timer")
    event(f"policy published {min(sum(1 for m in outputs['observation'] if m.points), 3)}+ chunks per observation")
    for name, sent in outputs.items():
        for msg in sent:
            assert list(msg.joint_names) == list(manifest["joint_names"]), name
            assert len(msg.points) in (0, int(manifest["chunk_length"])), f"{name}: {len(msg.points)} points"
            q = np.array([p.positions for p in msg.points], dtype=np.float64)
            assert np.all(np.isfinite(q)), f"{name} published a non-finite chunk"


@BOUNDED
@given(
    kind=st.sampled_from(["rgb", "depth", "segmentation", "wrench", "pose", "text", "vector"]),
    data=st.data(),
)
def test_every_input_kind_converts_or_refuses_with_a_reason(kind, data):
    """What `PolicyNode._on_input` relies on for every manifest input kind: a message converts,
    or raises KeyError/ValueError (the node records the input as invalid and holds); and whatever
    converts, the assembler either builds an observation or holds with a reason."""
    from geometry_msgs.msg import PoseStamped, WrenchStamped
    from std_msgs.msg import Float64MultiArray, String

    from dexstack.observation import ObservationAssembler
    from dexstack.ros_nodes import inputs

    shapes = {"rgb": [8, 8, 3], "depth": [8, 8], "segmentation": [8, 8], "wrench": [6], "pose": [7], "vector": [3]}
    spec = {"name": "x", "kind": kind, "source": "/x", "shape": shapes.get(kind, []), "max_age_s": 1.0}
    if kind == "rgb" and data.draw(st.booleans()):
        spec["preprocess"] = "center_crop_resize"  # any camera resolution, cropped and resized
    if kind in ("wrench", "pose"):
        values = data.draw(st.lists(S.any_float, min_size=7, max_size=7))
        msg = WrenchStamped() if kind == "wrench" else PoseStamped()
        if kind == "wrench":
            f, t = msg.wrench.force, msg.wrench.torque
            f.x, f.y, f.z, t.x, t.y, t.z = values[:6]
        else:
            p, o = msg.pose.position, msg.pose.orientation
            p.x, p.y, p.z, o.w, o.x, o.y, o.z = values
    elif kind == "text":
        msg = String(data=data.draw(st.text(max_size=20)))
    elif kind == "vector":
        msg = Float64MultiArray(data=data.draw(st.lists(S.any_float, max_size=5)))
    else:
        msg = S.build_image(data.draw(S.image_specs(8, 8)), 0.0, None)
        if kind == "depth":
            msg.encoding = data.draw(st.sampled_from(["16UC1", msg.encoding]))
    assembler = ObservationAssembler([spec])
    try:
        value = inputs.convert_input(spec, msg)
    except (KeyError, ValueError):
        return
    assembler.add("x", 0, value)
    result = assembler.latest(0)
    assert (result.observation is None) != (result.hold is None)


# --- sim node ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_node(context):
    from dexstack.ros_nodes.sim_node import SimNode

    node = make_node(SimNode, context, cameras=False, start_paused=True)
    yield node
    node.destroy_node()


@BOUNDED
@given(specs=st.lists(S.trajectory_specs(), min_size=1, max_size=4))
def test_sim_node_never_crashes_and_never_commands_non_finite_positions(sim_node, specs):
    """The sim consumes the controller topic like JTC: whatever arrives, the commanded position it
    tracks (and so MuJoCo's actuator input) stays finite and the physics state stays finite."""
    from dexstack.ros_nodes.common import time_msg

    for spec in specs:
        with sim_node.lock:
            now = sim_node.clock.now()
        rejected = sim_node.rejected
        run_callback(sim_node._on_trajectory, S.build_trajectory(spec, now, time_msg(int(now * 1e9))))
        event("sim rejected the trajectory" if sim_node.rejected > rejected else "sim accepted the trajectory")
        with sim_node.lock:  # the physics thread is paused; stepping here is what it would do
            executor, core = sim_node.core.executor, sim_node.core
            for dt in (0.0, 0.004, 0.05, 0.5, 5.0):
                assert np.all(np.isfinite(executor.sample(core.time + dt))), "non-finite command"
            core.step(10)
            q, v, _ = core.joint_state()
            assert np.all(np.isfinite(q)) and np.all(np.isfinite(v)), "physics state went non-finite"


@BOUNDED
@given(specs=st.lists(S.trajectory_specs(), min_size=1, max_size=4))
def test_mock_hardware_never_crashes_and_never_reports_non_finite_joints(context, specs):
    """Mock hardware consumes the controller topic too: whatever arrives, the joint states it
    publishes stay finite."""
    from rclpy.clock import Clock

    from dexstack.ros_nodes.mock_hardware import MockHardwareNode

    node = make_node(MockHardwareNode, context)
    states = capture(node.state_pub)
    try:
        for spec in specs:
            now = Clock().now().nanoseconds * 1e-9
            run_callback(node.on_trajectory, S.build_trajectory(spec, now, None))
            run_callback(node.publish_state)
        for msg in states:
            assert np.all(np.isfinite(msg.position)) and np.all(np.isfinite(msg.velocity)), msg
    finally:
        node.destroy_node()


# --- recorder ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recorder(context, tmp_path_factory):
    """A recorder subscribed to the robot's topics, offered by a publisher node in this process."""
    import rclpy

    from dexstack.ros_nodes.common import QOS, message_class
    from dexstack.ros_nodes.recorder import RecorderNode

    publishers = rclpy.create_node("property_publishers", context=context)
    kinds = {s.name: s.qos for s in [*PANDA.topics(), *contract.OPERATOR_TOPICS, *contract.SIM_ONLY_TOPICS]}
    for topic, type_name in PANDA.recorded_topics().items():
        qos = QOS[kinds.get(topic, contract.QoSKind.COMMAND)]
        publishers.create_publisher(message_class(type_name), topic, qos)
    node = make_node(RecorderNode, context, output_dir=str(tmp_path_factory.mktemp("recordings")))
    node._discover()
    yield node
    node.destroy_node()
    publishers.destroy_node()


RECORDED = st.one_of(
    st.tuples(st.just(contract.JOINT_STATES), S.joint_state_specs()),
    st.tuples(st.just(PANDA.trajectory_topic), S.trajectory_specs(max_points=20)),
    st.tuples(st.just(PANDA.policy_output_topic), S.trajectory_specs(max_points=20)),
    st.tuples(st.just(contract.camera_color_topic(PANDA.camera_names[0])), S.image_specs()),
    st.tuples(st.just(contract.ESTOP), st.booleans()),
    st.tuples(st.just(contract.SIM_EPISODE), S.episode_texts()),
    st.tuples(st.just(contract.TASK_INSTRUCTION), st.text(max_size=20)),
)


@BOUNDED
@given(messages=st.lists(RECORDED, max_size=10))
def test_recorder_never_crashes_and_keeps_every_message(recorder, messages):
    from mcap.reader import make_reader
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Bool, String
    from std_srvs.srv import Trigger

    build = {
        contract.JOINT_STATES: S.build_joint_state,
        PANDA.trajectory_topic: S.build_trajectory,
        PANDA.policy_output_topic: S.build_trajectory,
    }
    started = recorder._start(Trigger.Request(), Trigger.Response())
    assert started.success, started.message
    fed: dict[str, int] = {}
    for topic, spec in messages:
        if topic in build:
            msg = build[topic](spec, 100.0, None)
        elif topic == contract.ESTOP:
            msg = Bool(data=spec)
        elif topic in (contract.SIM_EPISODE, contract.TASK_INSTRUCTION):
            msg = String(data=spec)
        else:
            msg = S.build_image(spec, 100.0, None)
        # Exactly what the executor hands a raw subscription: the serialized message.
        run_callback(recorder._subs[topic].callback, serialize_message(msg))
        fed[topic] = fed.get(topic, 0) + 1
    try:
        stopped = recorder._stop(Trigger.Request(), Trigger.Response())
    except Exception as exc:  # noqa: BLE001 - the property is that nothing escapes
        pytest.fail(f"~/stop_episode raised {type(exc).__name__}: {exc}")
    assert stopped.success, stopped.message
    with open(stopped.message, "rb") as f:
        reader = make_reader(f)
        counts: dict[str, int] = {}
        for _, channel, _ in reader.iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
        meta = {m.name: dict(m.metadata) for m in reader.iter_metadata()}["dexstack.episode"]
    for topic, n in fed.items():
        assert counts.get(topic, 0) >= n, f"{topic}: fed {n}, file has {counts.get(topic, 0)}"
    assert int(meta["message_count"]) == sum(counts.values())
    assert meta["success"] in ("", "true", "false")
