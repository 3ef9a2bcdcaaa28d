"""Mock hardware: the logic (state mirrors command) and the node over real DDS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dexstack.hardware.interface import HardwareInterface, LifecycleState
from dexstack.hardware.mock import MockHardware
from dexstack.hardware.profiles import PANDA
from dexstack.trajectory import ActionChunk

HOME = np.asarray(PANDA.home)


def active_mock() -> MockHardware:
    hw = MockHardware(PANDA)
    hw.configure()
    hw.activate(0.0)
    return hw


def test_lifecycle_gates_read_and_write():
    hw = MockHardware(PANDA)
    assert isinstance(hw, HardwareInterface)
    with pytest.raises(RuntimeError, match="configure"):
        hw.read(0.0)
    hw.configure()
    np.testing.assert_allclose(hw.read(0.0)[0], HOME)
    with pytest.raises(RuntimeError, match="activate"):
        hw.write(None, 0.0)
    hw.activate(0.0)
    assert hw.state is LifecycleState.ACTIVE


def test_state_mirrors_command_with_velocity_and_zero_effort():
    hw = active_mock()
    target = HOME.copy()
    target[0] = 0.5
    assert hw.write(ActionChunk.uniform(PANDA.joint_names, target[None], 1.0, stamp=0.0), now=0.0) == 1
    hw.read(0.0)
    q, v, e = hw.read(0.5)
    np.testing.assert_allclose(q, HOME + 0.5 * (target - HOME))  # halfway along the 1 s segment
    np.testing.assert_allclose(v[0], 0.5)  # 0.5 rad over 1 s
    np.testing.assert_allclose(v[1:], 0.0)
    np.testing.assert_allclose(e, 0.0)
    q, v, _ = hw.read(2.0)
    np.testing.assert_allclose(q, target)


def test_hold_stops_where_commanded_and_bad_chunk_keeps_previous_command():
    hw = active_mock()
    target = HOME.copy()
    target[0] = 1.0
    hw.write(ActionChunk.uniform(PANDA.joint_names, target[None], 1.0, stamp=0.0), now=0.0)
    hw.write(None, 0.25)
    np.testing.assert_allclose(hw.read(5.0)[0][0], 0.25)
    wrong = ActionChunk.uniform(("a", "b"), np.zeros((1, 2)), 0.1, 0.0)
    with pytest.raises(ValueError, match="don't match the controller joints"):
        hw.write(wrong, 5.0)
    np.testing.assert_allclose(hw.read(6.0)[0][0], 0.25)
    assert hw.rejected == 1


def test_refused_trajectory_leaves_the_previous_one_running():
    hw = active_mock()
    target = HOME.copy()
    target[0] = 1.0
    hw.write(ActionChunk.uniform(PANDA.joint_names, target[None], 1.0, stamp=1.0), now=1.0)
    late = ActionChunk.uniform(PANDA.joint_names, HOME[None], 0.1, stamp=0.5)  # ended at 0.6
    with pytest.raises(ValueError, match="ends in the past"):
        hw.write(late, 1.5)
    np.testing.assert_allclose(hw.read(2.0)[0], target)  # the first chunk ran to its end


def test_initial_position_is_validated():
    with pytest.raises(ValueError, match="8 finite values"):
        MockHardware(PANDA, initial=[0.0, math.nan] + [0.0] * 6)


@pytest.mark.ros
def test_mock_hardware_node_follows_trajectory_holds_and_rejects(launch_nodes, ros_client):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from dexstack import contract
    from dexstack.graph import NodeSpec
    from dexstack.ros_nodes.common import QOS, chunk_to_msg, joint_positions

    launch_nodes([NodeSpec("mock_hardware", "mock_hardware", {"use_sim_time": False, "profile": "panda"})])
    node = ros_client.node
    states: list[JointState] = []
    diagnostics: list[DiagnosticStatus] = []
    node.create_subscription(JointState, contract.JOINT_STATES, states.append, QOS[contract.QoSKind.STATE_SUB])
    node.create_subscription(
        DiagnosticArray,
        contract.DIAGNOSTICS,
        lambda m: diagnostics.extend(s for s in m.status if s.name.endswith("mock_hardware")),
        QOS[contract.QoSKind.DEFAULT],
    )
    pub = node.create_publisher(JointTrajectory, PANDA.trajectory_topic, QOS[contract.QoSKind.COMMAND])
    assert ros_client.spin_until(lambda: states and pub.get_subscription_count() > 0, 30.0), "mock never came up"

    def q() -> np.ndarray:
        return joint_positions(states[-1], PANDA.joint_names)

    np.testing.assert_allclose(q(), HOME)
    assert list(states[-1].name) == list(PANDA.joint_names) and len(states[-1].velocity) == PANDA.n_joints

    # A 1.5 s move of joint 1 by +1 rad: joint states arrive at the target.
    target = HOME.copy()
    target[0] = 1.0
    pub.publish(chunk_to_msg(ActionChunk(PANDA.joint_names, np.vstack([HOME, target]), np.array([0.5, 1.5]), 0.0)))
    assert ros_client.spin_until(lambda: abs(q()[0] - 1.0) < 1e-6, 10.0), f"joint1 stuck at {q()[0]}"
    np.testing.assert_allclose(q(), target, atol=1e-9)

    # Start moving back; an empty trajectory is refused as JTC refuses it (ERROR) and the arm
    # keeps moving; JTC's own hold form (stamp 0, one point at time 0) stops it where it is.
    pub.publish(chunk_to_msg(ActionChunk(PANDA.joint_names, HOME[None], np.array([3.0]), 0.0)))
    assert ros_client.spin_until(lambda: q()[0] < 0.95, 5.0)
    pub.publish(JointTrajectory(joint_names=list(PANDA.joint_names)))
    assert ros_client.spin_until(
        lambda: any(d.level == DiagnosticStatus.ERROR and "Empty trajectory" in d.message for d in diagnostics), 5.0
    )
    moving = q()[0]
    assert ros_client.spin_until(lambda: q()[0] < moving - 0.05, 5.0), "the refused empty trajectory stopped the arm"
    here = q()
    pub.publish(chunk_to_msg(ActionChunk(PANDA.joint_names, here[None], np.array([0.0]), None)))
    ros_client.spin_for(0.5)
    held = q()[0]
    assert 0.0 < held < 0.9
    ros_client.spin_for(0.5)
    assert q()[0] == pytest.approx(held, abs=1e-9)

    # A NaN trajectory is rejected with a diagnostics ERROR and the arm keeps holding.
    bad = chunk_to_msg(ActionChunk(PANDA.joint_names, target[None], np.array([0.5]), 0.0))
    bad.points[0].positions[0] = math.nan
    pub.publish(bad)
    assert ros_client.spin_until(
        lambda: any(d.level == DiagnosticStatus.ERROR and "non-finite" in d.message for d in diagnostics), 5.0
    )
    assert q()[0] == pytest.approx(held, abs=1e-9)
