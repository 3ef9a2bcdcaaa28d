"""Fault injection on the controller topic, over real DDS, against the two stand-ins for a robot's
JointTrajectoryController: the MuJoCo sim node and the mock hardware node.

Each trajectory a stock JTC refuses (joint_trajectory_controller.cpp `validate_trajectory_msg`)
must be refused here too, reported, and change nothing: the trajectory already running keeps
running (the arm keeps moving), exactly as on a robot. JTC's own hold form then stops the arm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack import contract
from dexstack.graph import NodeSpec, node_list, parse_launch_args
from dexstack.hardware.profiles import PANDA
from dexstack.ros_nodes.common import QOS, joint_positions, to_stamp

pytestmark = [pytest.mark.ros, pytest.mark.fault]

J = list(PANDA.joint_names)


def msg(points, stamp: float = 0.0, names=J, **fields) -> JointTrajectory:
    out = JointTrajectory(joint_names=list(names))
    out.header.stamp = to_stamp(stamp)
    for t, q in points:
        ns = int(round(t * 1e9))
        point = JointTrajectoryPoint(positions=[float(x) for x in q], **fields)
        point.time_from_start = Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        out.points.append(point)
    return out


def faults(q: np.ndarray, now: float) -> list[tuple[str, JointTrajectory]]:
    """(what JTC says, message) for every kind of trajectory JTC refuses; `now` on the node's clock."""
    nan = q.copy()
    nan[2] = math.nan
    moving = msg([(0.1, q), (0.2, q)], velocities=[0.0] * 8)
    moving.points[-1].velocities[0] = 0.3
    return [
        ("Empty trajectory received", msg([])),
        ("don't match the controller joints", msg([(0.1, q[:7])], names=J[:7])),
        ("doesn't match the controller's joints", msg([(0.1, q)], names=[*J[:7], "panda_joint9"])),
        ("duplicate joint names", msg([(0.1, q)], names=[*J[:7], J[0]])),
        ("not strictly increasing", msg([(0.2, q), (0.1, q)])),
        ("non-finite positions", msg([(0.1, nan)])),
        ("ends in the past", msg([(0.1, q)], stamp=now - 0.5)),
        ("effort", msg([(0.1, q)], effort=[0.0] * 8)),
        ("Mismatch between joint_names size", msg([(0.1, q[:7])])),
        ("Velocity of last trajectory point", moving),
    ]


class Watch:
    def __init__(self, client, node_suffix: str, rejected_key: str, reason_key: str):
        self.client = client
        self.states: list[JointState] = []
        self.status: dict[str, str] = {}
        client.node.create_subscription(
            JointState,
            contract.JOINT_STATES,
            self.states.append,
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
        )
        client.node.create_subscription(
            DiagnosticArray,
            contract.DIAGNOSTICS,
            lambda m: self.status.update(
                {kv.key: kv.value for s in m.status if s.name.endswith(node_suffix) for kv in s.values}
            ),
            QoSProfile(depth=10),
        )
        self.rejected_key, self.reason_key = rejected_key, reason_key
        self.pub = client.node.create_publisher(JointTrajectory, PANDA.trajectory_topic, QOS[contract.QoSKind.COMMAND])

    def q(self) -> np.ndarray:
        return joint_positions(self.states[-1], J)

    def now(self) -> float:
        stamp = self.states[-1].header.stamp
        return stamp.sec + stamp.nanosec * 1e-9

    def rejected(self) -> int:
        return int(self.status.get(self.rejected_key, -1))


def run_faults(w: Watch, settle_tol: float) -> None:
    assert w.client.spin_until(lambda: w.states and w.pub.get_subscription_count() > 0 and w.status, 40), "no node"
    q0 = w.q()
    target = q0.copy()
    target[0] += 1.5
    # One slow move (0.075 rad/s on joint 1, 20 s): every refused fault must leave it running.
    w.pub.publish(msg([(20.0, target)]))
    assert w.client.spin_until(lambda: w.q()[0] > q0[0] + 0.02, 10), "the valid trajectory did not move the arm"
    progress = [w.q()[0]]
    for k, (reason, bad) in enumerate(faults(w.q(), w.now()), start=1):
        w.pub.publish(bad)
        assert w.client.spin_until(lambda k=k: w.rejected() >= k, 10), f"{reason!r} was not refused"
        assert reason in w.status[w.reason_key], (reason, w.status[w.reason_key])
        w.client.spin_for(0.2)
        progress.append(w.q()[0])
    assert w.rejected() == len(faults(q0, 0.0))
    # The arm kept moving through every fault: joint 1 rose between each pair of faults.
    assert np.all(np.diff(progress) > 0.005), np.diff(progress)
    # JTC's own hold (stamp 0, one point at time 0, the current position) stops it.
    here = w.q()
    w.pub.publish(msg([(0.0, here)]))
    w.client.spin_for(1.0)
    held = w.q()[0]
    w.client.spin_for(1.0)
    assert abs(w.q()[0] - held) < settle_tol and held < target[0] - 0.2
    assert w.rejected() == len(faults(q0, 0.0))


def test_mock_hardware_refuses_what_jtc_refuses_and_keeps_the_running_trajectory(launch_nodes, ros_client):
    launch_nodes([NodeSpec("mock_hardware", "mock_hardware", {"use_sim_time": False, "profile": "panda"})])
    run_faults(Watch(ros_client, "mock_hardware", "rejected", "last_error"), settle_tol=1e-9)


def test_sim_refuses_what_jtc_refuses_and_keeps_the_running_trajectory(launch_nodes, ros_client):
    sim = node_list(parse_launch_args(["policy:=none", "rtf:=1.0", "cameras:=false"]))[0]
    assert sim.name == "sim"
    launch_nodes([sim])
    run_faults(Watch(ros_client, "/sim", "rejected_trajectories", "last_rejection"), settle_tol=5e-3)
