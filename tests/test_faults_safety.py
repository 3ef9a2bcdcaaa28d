"""Faults injected over DDS against the safety filter (issue 12 rows 2-6), each judged by what
reaches the controller topic (and, with mock hardware, how fast the arm moves).

The filter and mock hardware run as real processes; a plain rclpy client plays e-stop relay,
policy and saboteur. Every hold seen is checked as a stop a stock JointTrajectoryController
executes (`check_hold` in test_safety_node.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_safety_node import HOME, FilterHarness, check_hold, filter_spec

from dexstack.hardware.profiles import PANDA

pytestmark = [pytest.mark.ros, pytest.mark.fault]


def mock_spec():
    from dexstack.graph import NodeSpec

    return NodeSpec("mock_hardware", "mock_hardware", {"use_sim_time": False, "profile": "panda"})


def measured_speeds(states) -> np.ndarray:
    """|dq/dt| per joint between consecutive valid joint states (by header stamp)."""
    from dexstack.ros_nodes.common import joint_positions, to_sec

    rows = []
    for m in states:
        try:
            rows.append((to_sec(m.header.stamp), joint_positions(m, PANDA.joint_names)))
        except (KeyError, ValueError):
            continue  # the saboteur's messages
    rows.sort(key=lambda r: r[0])
    t = np.array([r[0] for r in rows])
    q = np.array([r[1] for r in rows])
    keep = np.diff(t) > 0
    return np.abs(np.diff(q, axis=0)[keep]) / np.diff(t)[keep][:, None]


def test_estop_latches_from_default_qos_and_best_effort_publishers(launch_nodes, ros_client):
    """Row 2: default-QoS and best-effort e-stop publishers used to never connect."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool

    from dexstack import contract

    launch_nodes([filter_spec()])
    h = FilterHarness(ros_client, publish_joint_states=True)
    h.wait_connected(joint_states_from_client=True)
    profiles = {
        "reliable+volatile (default)": QoSProfile(depth=10),
        "best-effort": QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT),
    }
    for kind, qos in profiles.items():
        pub = ros_client.node.create_publisher(Bool, contract.ESTOP, qos)
        assert ros_client.spin_until(lambda p=pub: p.get_subscription_count() > 0, 10.0), f"{kind} never matched"
        assert not h.is_hold(h.answer_to(h.send(HOME, [1.0]))), f"{kind}: enabled before the e-stop"
        n = len(h.outputs)
        pub.publish(Bool(data=True))
        h.hold_after(n)
        assert h.is_hold(h.answer_to(h.send(HOME, [1.0]))), f"{kind}: e-stop did not latch"
        h.wait_diagnostic(DiagnosticStatus.ERROR, "stop latched: e-stop pressed")
        pub.publish(Bool(data=False))
        assert ros_client.spin_until(lambda: h.reset_estop().success, 5.0)
        assert h.set_enabled(True).success
        ros_client.node.destroy_publisher(pub)


def test_heartbeat_loss_latches_and_reset_waits_for_heartbeats(launch_nodes, ros_client):
    """Row 2: with estop_heartbeat_timeout set, a relay that goes silent is a pressed e-stop."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from std_msgs.msg import Bool

    launch_nodes([filter_spec(estop_heartbeat_timeout=0.3)])
    h = FilterHarness(ros_client, publish_joint_states=True)
    beating = [True]
    ros_client.node.create_timer(0.05, lambda: beating[0] and h.estop_pub.publish(Bool(data=False)))
    h.wait_connected(joint_states_from_client=True)
    # The filter may have latched before our first heartbeat arrived (it fails safe): clear it.
    assert ros_client.spin_until(lambda: h.reset_estop().success and h.set_enabled(True).success, 10.0)
    assert not h.is_hold(h.answer_to(h.send(HOME, [1.0])))

    beating[0] = False
    n = len(h.outputs)
    h.hold_after(n, timeout_s=3.0)
    h.wait_diagnostic(DiagnosticStatus.ERROR, "heartbeat lost")
    assert h.is_hold(h.answer_to(h.send(HOME, [1.0])))
    response = h.reset_estop()
    assert not response.success and "heartbeat" in response.message
    beating[0] = True
    assert ros_client.spin_until(lambda: h.reset_estop().success, 5.0)
    assert h.set_enabled(True).success
    assert not h.is_hold(h.answer_to(h.send(HOME, [1.0])))


POLICY_SCRIPT = textwrap.dedent(
    """
    import numpy as np, rclpy
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory
    from dexstack import contract
    from dexstack.hardware.profiles import PANDA
    from dexstack.ros_nodes.common import QOS, chunk_to_msg, joint_positions
    from dexstack.trajectory import ActionChunk
    rclpy.init()
    node = rclpy.create_node("doomed_policy")
    pub = node.create_publisher(JointTrajectory, PANDA.policy_output_topic, QOS[contract.QoSKind.COMMAND])
    q = [np.asarray(PANDA.home)]
    node.create_subscription(
        JointState, contract.JOINT_STATES, lambda m: q.append(joint_positions(m, PANDA.joint_names)),
        QOS[contract.QoSKind.STATE_SUB])
    def tick():
        # 1 s chunks (10 points) moving joint 1 on from where it is at 0.5 rad/s; stamp 0 = "now".
        pts = np.repeat(q[-1][None], 10, 0)
        pts[:, 0] += 0.05 * np.arange(1, 11)
        pub.publish(chunk_to_msg(ActionChunk(PANDA.joint_names, pts, 0.1 * np.arange(1, 11), None)))
    node.create_timer(0.1, tick)
    rclpy.spin(node)
    """
)


def test_killed_policy_mid_motion_stops_the_arm_within_the_chunk_horizon(launch_nodes, ros_client, tmp_path):
    """Row 5: SIGKILL the chunk publisher while the arm moves; a JTC-valid hold arrives before
    the last chunk runs out (not after a fixed 1 s) and the arm stops short of its end."""
    from dexstack.hardware.safety import HOLD_SETTLE_S
    from dexstack.launcher import node_environment
    from dexstack.ros_nodes.common import joint_positions, to_sec

    launch_nodes([filter_spec(), mock_spec()])
    h = FilterHarness(ros_client, publish_joint_states=False)
    h.wait_connected(joint_states_from_client=False)
    assert ros_client.spin_until(lambda: h.states, 20.0), "mock hardware never published"
    h.wait_passing()
    policy = subprocess.Popen([sys.executable, "-c", POLICY_SCRIPT], env=node_environment())
    try:
        moving = lambda: h.states and joint_positions(h.states[-1], PANDA.joint_names)[0] > HOME[0] + 0.3  # noqa: E731
        assert ros_client.spin_until(moving, 30.0), "the arm never moved"
        n_before = len(h.outputs)
        policy.kill()
        policy.wait()
        killed_at = h.now()
    finally:
        if policy.poll() is None:
            policy.kill()
    horizon_s = 1.0
    h.hold_after(n_before, timeout_s=3.0)
    chunks = [(m, t) for m, t in zip(h.outputs, h.received, strict=True) if not h.is_hold(m)]
    last_chunk, last_seen = chunks[-1]
    hold_index = next(i for i in range(n_before, len(h.outputs)) if h.is_hold(h.outputs[i]))
    assert h.received[hold_index] - last_seen < horizon_s, "the hold came after the last chunk ran out"
    assert h.received[hold_index] - killed_at < horizon_s
    ros_client.spin_for(0.5)
    settled = h.received[hold_index] + HOLD_SETTLE_S + 0.05  # the hold's point is due HOLD_SETTLE_S after it
    q = [joint_positions(m, PANDA.joint_names)[0] for m in h.states if to_sec(m.header.stamp) > settled]
    assert len(q) > 10 and max(q) - min(q) < 1e-9, "the arm still moves after the hold"
    assert q[-1] < last_chunk.points[-1].positions[0] - 0.05, "the arm ran its last chunk to the end"


def test_stale_observations_and_duplicate_joint_names_keep_measured_speed_under_the_limit(launch_nodes, ros_client):
    """Row 4: chunks computed from observations 30-80 ms old asking for 3x the velocity limit, and
    a saboteur publishing /joint_states with a duplicated joint name: the mock arm's measured
    speed never exceeds 1.1x the profile limit, and the duplicate is refused with an ERROR."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import JointState

    from dexstack import contract
    from dexstack.ros_nodes.common import QOS, chunk_to_msg, joint_positions, joint_state_msg
    from dexstack.trajectory import ActionChunk

    launch_nodes([filter_spec(), mock_spec()])
    h = FilterHarness(ros_client, publish_joint_states=False)
    h.wait_connected(joint_states_from_client=False)
    assert ros_client.spin_until(lambda: h.states, 20.0), "mock hardware never published"
    h.wait_passing()
    rng = np.random.default_rng(12)
    saboteur = ros_client.node.create_publisher(JointState, contract.JOINT_STATES, QOS[contract.QoSKind.STATE_PUB])
    n0 = len(h.outputs)
    for tick in range(30):
        age = rng.uniform(0.03, 0.08)
        q = next(joint_positions(m, PANDA.joint_names) for m in reversed(h.states) if len(set(m.name)) == len(m.name))
        targets = np.repeat(q[None], 8, 0)
        direction = 1.0 if (tick // 10) % 2 == 0 else -1.0
        targets[:, :2] += direction * 3.0 * PANDA.vmax[:2] * 0.1 * np.arange(1, 9)[:, None]
        targets = np.clip(targets, PANDA.lower, PANDA.upper)
        chunk = ActionChunk(PANDA.joint_names, targets, 0.1 * np.arange(1, 9), h.now() - age)
        h.policy_pub.publish(chunk_to_msg(chunk))
        if tick >= 15:  # a second driver with a duplicated name (its value for joint 1 would win)
            names = [*PANDA.joint_names, PANDA.joint_names[0]]
            saboteur.publish(joint_state_msg(names, [*q, q[0] + 0.5], stamp=h.now()))
        ros_client.spin_for(0.1)
    ros_client.spin_for(0.3)
    speeds = measured_speeds(h.states)
    assert len(speeds) > 200
    worst = (speeds / PANDA.vmax).max()
    print(f"worst measured speed {worst:.3f}x the limit")
    assert worst <= 1.1, f"measured joint speed reached {worst:.2f}x the limit"
    assert (speeds[:, 0] / PANDA.vmax[0]).max() > 0.5, "the arm should have moved fast"
    h.wait_diagnostic(DiagnosticStatus.ERROR, "more than once")
    assert len(h.holds_after(n0)) >= 1


def test_oversized_and_implausible_chunks_and_a_hot_swap(launch_nodes, ros_client):
    """Rows 3 and 6: a 20,000-point chunk and a +100 rad chunk get ERROR holds; a new policy
    identity restarts the velocity ramp."""
    import json

    from diagnostic_msgs.msg import DiagnosticStatus
    from std_msgs.msg import String

    from dexstack import contract
    from dexstack.ros_nodes.common import QOS

    launch_nodes([filter_spec(ramp_time_s=2.0)])
    h = FilterHarness(ros_client, publish_joint_states=True)
    h.wait_connected(joint_states_from_client=True)
    h.wait_passing()
    assert h.is_hold(h.answer_to(h.send(np.repeat(HOME[None], 20000, 0), 1e-4 * np.arange(1, 20001))))
    h.wait_diagnostic(DiagnosticStatus.ERROR, "exceeds")
    assert h.is_hold(h.answer_to(h.send(HOME + 100.0, [1.0])))
    h.wait_diagnostic(DiagnosticStatus.ERROR, "implausible")

    identity = ros_client.node.create_publisher(String, contract.POLICY_ACTIVE, QOS[contract.QoSKind.LATCHED])
    step = HOME.copy()
    step[0] += 0.5
    for version in ("1", "2"):
        identity.publish(String(data=json.dumps({"policy": "p", "version": version, "manifest_sha256": version})))
        ros_client.spin_for(0.3)
    answer = h.answer_to(h.send(step, [0.2]))  # just after the swap: ramp scale ~0.2, not 1
    moved = answer.points[0].positions[0] - HOME[0]
    assert 0.0 <= moved < 0.5 * PANDA.vmax[0] * 0.2, f"moved {moved} right after a hot-swap"


def test_sigint_makes_a_hold_the_last_message_and_exits_0(launch_nodes, ros_client):
    """Row 5: the filter's last act on shutdown is a hold (and SIGINT ends it cleanly)."""
    from dexstack.launcher import stop_nodes

    procs = launch_nodes([filter_spec()])
    h = FilterHarness(ros_client, publish_joint_states=True)
    h.wait_connected(joint_states_from_client=True)
    target = HOME.copy()
    target[0] += 0.3
    assert not h.is_hold(h.answer_to(h.send(target, [1.0])))
    n = len(h.outputs)
    assert stop_nodes(procs) == [0]
    hold = h.hold_after(n, timeout_s=3.0)
    assert h.outputs[-1] is hold
    check_hold(hold, h.received[-1])
    assert hold.points[0].positions[0] > HOME[0], "the hold stops where the arm is commanded, mid-chunk"


def test_dead_sim_under_sim_time_is_detected_by_the_wall_clock(launch_nodes, ros_client):
    """Row 5: under use_sim_time a dead sim also stops /clock, so sim-time staleness never grows;
    the filter's wall-clock fallback holds (and says so) anyway."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import JointState

    from dexstack import contract
    from dexstack.ros_nodes.common import QOS, chunk_to_msg, joint_state_msg, to_stamp
    from dexstack.trajectory import ActionChunk

    launch_nodes([filter_spec(use_sim_time=True, wall_state_timeout_s=0.5)])
    h = FilterHarness(ros_client, publish_joint_states=False)
    node = ros_client.node
    clock_pub = node.create_publisher(Clock, contract.CLOCK, QOS[contract.QoSKind.DEFAULT])
    js_pub = node.create_publisher(JointState, contract.JOINT_STATES, QOS[contract.QoSKind.STATE_PUB])
    sim = {"t": 100.0, "alive": True}

    def step():  # a sim at real-time factor 1 that can die
        if sim["alive"]:
            sim["t"] += 0.01
            clock_pub.publish(Clock(clock=to_stamp(sim["t"])))
            js_pub.publish(joint_state_msg(PANDA.joint_names, HOME, stamp=sim["t"]))

    node.create_timer(0.01, step)
    h.js_pub = js_pub
    h.wait_connected(joint_states_from_client=True)
    target = HOME.copy()
    target[0] += 0.3
    chunk = ActionChunk(PANDA.joint_names, np.stack([target, target]), np.array([2.0, 4.0]), sim["t"])
    h.policy_pub.publish(chunk_to_msg(chunk))
    assert ros_client.spin_until(lambda: any(len(m.points) == 2 for m in h.outputs), 5.0), "chunk not passed"
    n = len(h.outputs)
    sim["alive"] = False
    h.hold_after(n, timeout_s=3.0)
    h.wait_diagnostic(DiagnosticStatus.WARN, "wall-clock", timeout_s=3.0)
