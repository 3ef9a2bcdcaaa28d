"""Every kind of hold the safety filter emits, replayed through a JointTrajectoryController-faithful
validator (issue 12 row 1).

One real filter process is driven over DDS into each state that makes it hold (bad input of every
kind, an implausible or oversized chunk, an upstream hold, refused joint states, e-stop, disable,
watchdog on stopped commands and on stale joint states, the velocity monitor, shutdown); every
message that reaches the controller topic is captured. Each hold must be accepted by
`dexstack.hardware.jtc.validate_trajectory_msg` (built from ros2_controllers'
joint_trajectory_controller.cpp `validate_trajectory_msg`) at the time it arrived, and must stop
the arm: executed with JTC semantics from whatever ran before, it ends where the arm was
commanded when it arrived and stays there.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_safety_node import HOME, FilterHarness, filter_spec

from dexstack.hardware.profiles import PANDA

pytestmark = [pytest.mark.ros, pytest.mark.fault]


def jtc_reason(msg, now: float) -> str | None:
    """Why JTC would reject `msg` arriving at `now` (None: accepted)."""
    from dexstack.hardware.jtc import validate_trajectory_msg

    return validate_trajectory_msg(msg, PANDA.joint_names, now)


def replay(outputs, received):
    """Run every output through a JTC-semantics executor (a rejected message changes nothing);
    returns [(index, position commanded just before it arrived, executor after it)]."""
    from dexstack.ros_nodes.common import msg_to_chunk
    from dexstack.trajectory import TrajectoryExecutor

    executor = TrajectoryExecutor(PANDA.joint_names, HOME, interpolate_from_desired_state=True)
    before = []
    for msg, t in zip(outputs, received, strict=True):
        before.append(executor.sample(t))
        if jtc_reason(msg, t) is None:
            executor.set_chunk(msg_to_chunk(msg), t)
    return before, executor


def test_every_hold_the_filter_emits_is_accepted_by_jtc_and_stops_the_arm(launch_nodes, ros_client):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from dexstack import contract
    from dexstack.launcher import stop_nodes
    from dexstack.ros_nodes.common import QOS, joint_state_msg, msg_to_chunk, to_stamp
    from dexstack.trajectory import TrajectoryExecutor

    procs = launch_nodes([filter_spec(command_timeout_s=1.0)])
    h = FilterHarness(ros_client, publish_joint_states=False)
    node = ros_client.node
    js_pub = node.create_publisher(JointState, contract.JOINT_STATES, QOS[contract.QoSKind.STATE_PUB])
    state = {"names": list(PANDA.joint_names), "on": True}
    # A perfect robot: its measured position is what a JTC executing the filter's output commands.
    robot = TrajectoryExecutor(PANDA.joint_names, HOME, interpolate_from_desired_state=True)

    def on_command(msg) -> None:
        if jtc_reason(msg, h.now()) is None:
            robot.set_chunk(msg_to_chunk(msg), h.now())

    node.create_subscription(JointTrajectory, PANDA.trajectory_topic, on_command, QOS[contract.QoSKind.COMMAND])

    def publish_state():
        if state["on"]:
            js_pub.publish(joint_state_msg(state["names"], robot.sample(h.now()), stamp=h.now()))

    node.create_timer(0.01, publish_state)
    h.js_pub = js_pub
    h.wait_connected(joint_states_from_client=True)
    kinds: dict[int, str] = {}  # output index -> the hold it is

    def expect_hold(kind: str, action, timeout_s: float = 5.0) -> None:
        n = len(h.outputs)
        action()
        h.hold_after(n, timeout_s)
        kinds[next(i for i in range(n, len(h.outputs)) if h.is_hold(h.outputs[i]))] = kind

    def moving_chunk() -> float:
        target = HOME.copy()
        target[0] += 0.4
        stamp = h.send([target, target], [1.0, 3.0])
        assert not h.is_hold(h.answer_to(stamp))
        ros_client.spin_for(0.3)  # the arm is mid-motion: a hold must stop it there, not at HOME
        return stamp

    def raw(points, times, names=PANDA.joint_names) -> JointTrajectory:
        """A chunk message built by hand, so it can break what ActionChunk would refuse."""
        msg = JointTrajectory(joint_names=list(names))
        msg.header.stamp = to_stamp(h.now())
        for q, t in zip(points, times, strict=True):
            ns = int(round(t * 1e9))
            point = JointTrajectoryPoint(positions=[float(x) for x in q])
            point.time_from_start.sec, point.time_from_start.nanosec = ns // 10**9, ns % 10**9
            msg.points.append(point)
        return msg

    moving_chunk()
    expect_hold("bad input: NaN", h.send_nan)
    moving_chunk()
    wrong = [*PANDA.joint_names[:-1], "panda_finger_joint2"]
    expect_hold("bad input: joint names", lambda: h.policy_pub.publish(raw([HOME], [1.0], wrong)))
    expect_hold("bad input: non-increasing times", lambda: h.policy_pub.publish(raw([HOME, HOME], [1.0, 0.5])))
    expect_hold("bad input: ragged", lambda: h.policy_pub.publish(raw([HOME, HOME[:3]], [1.0, 2.0])))
    expect_hold(
        "upstream hold (empty)", lambda: h.policy_pub.publish(JointTrajectory(joint_names=list(PANDA.joint_names)))
    )
    moving_chunk()
    expect_hold("implausible", lambda: h.send(HOME + 100.0, [1.0]))
    expect_hold("oversized", lambda: h.send(np.repeat(HOME[None], 2000, 0), 1e-3 * np.arange(1, 2001)))
    moving_chunk()

    def duplicate_names():
        state["names"] = [*PANDA.joint_names[:-1], PANDA.joint_names[0]]

    expect_hold("joint_states duplicate names", duplicate_names)
    state["names"] = list(PANDA.joint_names)
    ros_client.spin_for(0.2)

    moving_chunk()
    estop = node.create_publisher(Bool, contract.ESTOP, QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
    assert ros_client.spin_until(lambda: estop.get_subscription_count() > 0, 10.0)
    expect_hold("e-stop", lambda: estop.publish(Bool(data=True)))
    expect_hold("e-stop latched: chunk answered", lambda: h.send(HOME, [1.0]))
    estop.publish(Bool(data=False))
    assert ros_client.spin_until(lambda: h.reset_estop().success, 5.0) and h.set_enabled(True).success

    moving_chunk()
    expect_hold("disable", lambda: h.set_enabled(False))
    expect_hold("disabled: chunk answered", lambda: h.send(HOME, [1.0]))
    assert h.set_enabled(True).success

    moving_chunk()
    expect_hold("watchdog: commands stopped", lambda: None, timeout_s=3.0)
    moving_chunk()
    expect_hold("watchdog: joint states stale", lambda: state.update(on=False), timeout_s=3.0)
    state["on"] = True
    ros_client.spin_for(0.3)

    moving_chunk()

    runaway: list[np.ndarray] = []

    def overspeed():  # the measured arm runs away at 3x its limit (a broken driver or a collision)
        state["on"], t0, q0 = False, h.now(), robot.sample(h.now())
        for k in range(40):  # stamps 10 ms apart whatever the machine's load
            q = q0 + np.eye(PANDA.n_joints)[0] * 3.0 * PANDA.vmax[0] * 0.01 * k
            runaway.append(q)
            js_pub.publish(joint_state_msg(PANDA.joint_names, q, stamp=t0 + 0.01 * k))
            ros_client.spin_for(0.01)
        state["on"] = True

    expect_hold("velocity monitor", overspeed)
    ros_client.spin_for(0.3)  # the filter measures the robot where it really is again

    n = len(h.outputs)
    assert stop_nodes(procs) == [0]
    h.hold_after(n, timeout_s=3.0)
    kinds[len(h.outputs) - 1] = "shutdown"
    assert h.is_hold(h.outputs[-1]), "the last message must be a hold"

    before, _ = replay(h.outputs, h.received)
    assert len(kinds) == 16, kinds
    for i, kind in kinds.items():
        msg, t = h.outputs[i], h.received[i]
        assert jtc_reason(msg, t) is None, f"{kind}: JTC rejects the hold: {jtc_reason(msg, t)}"
        assert len(msg.points) >= 1 and all(math.isfinite(x) for p in msg.points for x in p.positions)
        stop = np.asarray(msg.points[-1].positions)
        if kind == "velocity monitor":  # a runaway arm is held where it was measured, not pulled back
            assert runaway[0][0] < stop[0] <= runaway[-1][0] and np.allclose(stop[1:], runaway[0][1:]), stop
            continue
        # It stops the arm where it was commanded when the hold arrived (within the latency).
        assert np.all(np.abs(stop - before[i]) <= PANDA.vmax * 0.05 + 1e-9), f"{kind}: stops at {stop}, not {before[i]}"
        assert not msg.points[-1].velocities or not any(msg.points[-1].velocities), f"{kind}: ends moving"
