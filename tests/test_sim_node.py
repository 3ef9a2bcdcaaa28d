"""The sim node over real DDS: the contract as a plain rclpy client sees it, chunk semantics,
and lockstep determinism through the full ROS graph."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack import contract
from dexstack.graph import node_list, parse_launch_args
from dexstack.hardware.profiles import PANDA

pytestmark = pytest.mark.ros


def sim_spec(**overrides):
    values = {"policy": "none", "rtf": "1.0"} | {k: str(v) for k, v in overrides.items()}
    sim = node_list(parse_launch_args([f"{k}:={v}" for k, v in values.items()]))[0]
    assert sim.name == "sim"
    return sim


def trajectory(points, times, stamp_s=0.0):
    from dexstack.ros_nodes.common import to_stamp

    msg = JointTrajectory()
    msg.header.stamp = to_stamp(stamp_s)
    msg.joint_names = list(PANDA.joint_names)
    for q, t in zip(points, times, strict=True):
        pt = JointTrajectoryPoint(positions=[float(x) for x in q])
        pt.time_from_start.sec, pt.time_from_start.nanosec = int(t), int(round((t % 1) * 1e9))
        msg.points.append(pt)
    return msg


class JointLog:
    """Every /joint_states message, reliable and deep so none is lost."""

    def __init__(self, client):
        self.stamps, self.positions = [], []
        client.node.create_subscription(
            JointState, contract.JOINT_STATES, self._on, QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
        )

    def _on(self, msg):
        self.stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        idx = {n: i for i, n in enumerate(msg.name)}
        self.positions.append([msg.position[idx[n]] for n in PANDA.joint_names])

    def latest(self):
        return np.asarray(self.positions[-1]), self.stamps[-1]


def test_plain_client_sees_every_contract_topic_and_moves_the_arm(launch_nodes, ros_client):
    launch_nodes([sim_spec(cameras="true")])
    expected = {t.name: t.msg_type for t in PANDA.topics() + contract.SIM_ONLY_TOPICS}
    expected.pop(PANDA.trajectory_topic)  # the sim subscribes to it; checked below by moving the arm

    def topics_seen():
        have = dict(ros_client.node.get_topic_names_and_types())
        return all(name in have and msg_type in have[name] for name, msg_type in expected.items())

    assert ros_client.spin_until(topics_seen, 30), dict(ros_client.node.get_topic_names_and_types())

    # Receive a message on each topic, with the contract's QoS for a subscriber.
    from rclpy.qos import qos_profile_sensor_data

    from dexstack.ros_nodes.common import QOS, message_class

    got = {}
    for name, msg_type in expected.items():
        qos = qos_profile_sensor_data if name.startswith("/camera") else QoSProfile(depth=5)
        if name == contract.SIM_EPISODE:
            qos = QOS[contract.QoSKind.LATCHED]
        ros_client.node.create_subscription(message_class(msg_type), name, lambda m, n=name: got.setdefault(n, m), qos)
    assert ros_client.spin_until(lambda: set(got) == set(expected), 30), set(expected) - set(got)
    for cam in PANDA.camera_names:
        rgb, depth = got[contract.camera_color_topic(cam)], got[contract.camera_depth_topic(cam)]
        info = got[contract.camera_info_topic(cam)]
        assert rgb.encoding == "rgb8" and depth.encoding == "16UC1"
        assert (
            (rgb.width, rgb.height) == (info.width, info.height) == (PANDA.camera(cam).width, PANDA.camera(cam).height)
        )
        assert info.k[0] > 0 and len(bytes(rgb.data)) == rgb.width * rgb.height * 3
    assert list(got[contract.JOINT_STATES].name) == list(PANDA.joint_names)

    # The sim reports on /diagnostics like every node.
    from diagnostic_msgs.msg import DiagnosticArray

    sim_status = {}
    ros_client.node.create_subscription(
        DiagnosticArray,
        contract.DIAGNOSTICS,
        lambda m: sim_status.update({kv.key: kv.value for s in m.status if s.name.endswith("/sim") for kv in s.values}),
        QoSProfile(depth=10),
    )
    assert ros_client.spin_until(lambda: "rtf" in sim_status, 10)
    assert float(sim_status["rtf"]) > 0.2 and sim_status["pacing"] == "realtime"

    # A JointTrajectory from this plain client moves the simulated arm.
    log = JointLog(ros_client)
    assert ros_client.spin_until(lambda: len(log.positions) > 5, 10)
    q0, _ = log.latest()
    target = q0.copy()
    target[0] += 0.3
    pub = ros_client.node.create_publisher(JointTrajectory, PANDA.trajectory_topic, QoSProfile(depth=1))
    assert ros_client.spin_until(lambda: pub.get_subscription_count() > 0, 10)
    pub.publish(trajectory([target], [1.0]))
    assert ros_client.spin_until(lambda: abs(log.latest()[0][0] - target[0]) < 0.03, 10), log.latest()[0][0]


def test_past_points_are_skipped_and_consecutive_chunks_join(launch_nodes, ros_client):
    launch_nodes([sim_spec(cameras="false")])
    log = JointLog(ros_client)
    pub = ros_client.node.create_publisher(JointTrajectory, PANDA.trajectory_topic, QoSProfile(depth=1))
    assert ros_client.spin_until(lambda: pub.get_subscription_count() > 0 and len(log.positions) > 20, 30)
    q0, now = log.latest()
    # Stamped half a second ago: the first three points (a wild +1 rad) are already past and
    # are never replayed; as in JTC the command joins the trajectory on the segment that holds
    # "now" (mild -> mild), so joint 1 moves by only +0.1 rad.
    wild, mild = q0.copy(), q0.copy()
    wild[0] += 1.0
    mild[0] += 0.1
    times = [0.1, 0.2, 0.3, 0.4, 0.9, 1.0]
    pub.publish(trajectory([wild, wild, wild, mild, mild, mild], times, stamp_s=now - 0.5))
    start = len(log.positions)
    ros_client.spin_for(1.2)
    moved = np.asarray(log.positions[start:])[:, 0] - q0[0]
    assert moved.max() < 0.13, moved.max()
    assert moved[-1] > 0.07

    # Two consecutive chunks, the second arriving mid-way through the first: no jump.
    q1, now = log.latest()
    first = [q1 + np.eye(8)[0] * 0.05 * k for k in range(1, 11)]
    pub.publish(trajectory(first, [0.1 * k for k in range(1, 11)], stamp_s=now))
    ros_client.spin_for(0.45)
    q2, now2 = log.latest()
    second = [q2 + np.eye(8)[0] * 0.05 * k for k in range(1, 11)]
    start = len(log.positions)
    pub.publish(trajectory(second, [0.1 * k for k in range(1, 11)], stamp_s=now2))
    ros_client.spin_for(0.6)
    joint1 = np.asarray(log.positions[start - 10 :])[:, 0]
    steps = np.abs(np.diff(joint1))
    # 0.5 rad/s commanded, joint states at 100 Hz: a jump would show as a step far above 5 mrad.
    assert steps.max() < 0.02, steps.max()
    assert joint1[-1] - joint1[0] > 0.2  # and it kept moving across the switch


def run_lockstep_episode(launch_nodes, ros_client, seed: int, n_states: int) -> dict[float, tuple]:
    specs = node_list(parse_launch_args(["policy:=expert", "pacing:=lockstep", "cameras:=false", f"seed:={seed}"]))
    # Paused until this client is connected, so it sees the episode from its first state.
    specs = [
        dataclasses.replace(s, parameters=s.parameters | {"auto_reset": False, "start_paused": True})
        if s.name == "sim"
        else s
        for s in specs
    ]
    log = JointLog(ros_client)
    procs = launch_nodes(specs)
    assert ros_client.spin_until(lambda: ros_client.node.count_publishers(contract.JOINT_STATES) > 0, 30)
    assert ros_client.call(Trigger, "/sim/reset", Trigger.Request()).success
    assert ros_client.spin_until(lambda: len(log.positions) >= n_states, 90), len(log.positions)
    from dexstack.launcher import stop_nodes

    stop_nodes(procs)
    ros_client.spin_for(0.3)
    return {round(t, 6): tuple(q) for t, q in zip(log.stamps[:n_states], log.positions[:n_states], strict=True)}


def test_lockstep_same_seed_gives_identical_joint_trajectory(launch_nodes, ros_client):
    a = run_lockstep_episode(launch_nodes, ros_client, seed=7, n_states=150)
    b = run_lockstep_episode(launch_nodes, ros_client, seed=7, n_states=150)
    common_stamps = sorted(set(a) & set(b))
    assert len(common_stamps) >= 140
    moved = np.abs(np.asarray(a[common_stamps[-1]]) - np.asarray(a[common_stamps[0]])).max()
    assert moved > 0.05  # the expert really moved the arm
    for t in common_stamps:
        assert a[t] == b[t], f"trajectories differ at t={t}"


def test_pause_step_and_reset_with_seed(launch_nodes, ros_client):
    import json

    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    from dexstack.ros_nodes.common import QOS

    launch_nodes([sim_spec(cameras="false")])
    clock, episodes = [], []
    ros_client.node.create_subscription(
        Clock, contract.CLOCK, lambda m: clock.append(m.clock.sec + m.clock.nanosec * 1e-9), 50
    )
    ros_client.node.create_subscription(
        String, contract.SIM_EPISODE, lambda m: episodes.append(json.loads(m.data)), QOS[contract.QoSKind.LATCHED]
    )
    assert ros_client.spin_until(lambda: len(clock) > 10, 30)

    assert ros_client.call(SetBool, "/sim/set_pause", SetBool.Request(data=True)).success
    ros_client.spin_for(0.5)
    paused_at = clock[-1]
    ros_client.spin_for(0.5)
    assert clock[-1] == paused_at  # time stands still while paused

    assert ros_client.call(Trigger, "/sim/step", Trigger.Request()).success
    ros_client.spin_for(0.5)
    assert clock[-1] - paused_at == pytest.approx(1.0 / contract.POLICY_HZ, abs=0.003)  # one control period

    param = Parameter(name="seed", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=4242))
    assert (
        ros_client.call(SetParameters, "/sim/set_parameters", SetParameters.Request(parameters=[param]))
        .results[0]
        .successful
    )
    before = clock[-1]
    assert ros_client.call(Trigger, "/sim/reset", Trigger.Request()).success
    assert ros_client.spin_until(lambda: episodes and episodes[-1]["seed"] == 4242, 10), episodes[-1:]
    assert episodes[-1]["status"] == "running"
    assert ros_client.spin_until(lambda: clock[-1] > before + 0.2, 10)  # reset resumes, time stays monotonic
    assert all(b >= a for a, b in zip(clock, clock[1:], strict=False))


def test_lockstep_takes_a_zero_stamped_trajectory_as_the_answer_and_refuses_an_empty_one(launch_nodes, ros_client):
    """A zero stamp means "now" (JTC), which in lockstep is the awaited observation's time: JTC's own
    hold form answers it. An empty trajectory also answers (time moves on) but is refused: the arm
    keeps following the trajectory it had."""
    launch_nodes([sim_spec(cameras="false", pacing="lockstep")])
    log = JointLog(ros_client)
    pub = ros_client.node.create_publisher(JointTrajectory, PANDA.trajectory_topic, QoSProfile(depth=1))
    assert ros_client.spin_until(lambda: pub.get_subscription_count() > 0 and log.positions, 30)

    def answer(msg) -> float:
        """Send `msg` for the observation awaited now; returns the next observation's stamp."""
        awaited = log.stamps[-1]
        pub.publish(msg)
        # Joint states also come between ticks; the next observation is one control period on.
        nxt = awaited + 1.0 / contract.POLICY_HZ - 1e-6
        assert ros_client.spin_until(lambda: log.stamps[-1] >= nxt, 10), "the sim did not advance"
        return log.stamps[-1]

    q0 = log.latest()[0]
    target = q0.copy()
    target[0] += 0.4
    t0 = log.stamps[-1]
    t1 = answer(trajectory([target], [2.0]))  # zero stamp: 0.2 rad/s from now
    assert t1 == pytest.approx(t0 + 1.0 / contract.POLICY_HZ)
    for _ in range(3):
        answer(JointTrajectory(joint_names=list(PANDA.joint_names)))  # refused: the move goes on
    moving = log.latest()[0][0]
    assert moving > q0[0] + 0.02
    here = log.latest()[0]
    for _ in range(5):
        answer(trajectory([here], [0.0]))  # JTC's hold: one point at time 0, stamp 0
    settled = log.latest()[0][0]
    for _ in range(5):
        answer(trajectory([here], [0.0]))
    assert abs(log.latest()[0][0] - settled) < 5e-3 and settled < target[0] - 0.2
