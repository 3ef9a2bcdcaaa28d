"""Physics divergence: MuJoCo's silent automatic reset (mj_checkPos/Vel/Acc -> mj_resetData: time
jumps back, joints to qpos0) and bad controls are detected, end the episode as failed, and never
reach /joint_states. Real MuJoCo cores; the sim node over real DDS."""

from __future__ import annotations

import json
import threading

import mujoco
import numpy as np
import pytest

from dexstack.hardware.profiles import PANDA
from dexstack.sim.core import CheckedStepper, SimCore
from dexstack.sim.episodes import EpisodeClock

PENDULUM = """<mujoco><worldbody><body><joint name="j" type="hinge"/><geom size=".1" mass="1" pos=".2 0 0"/>
</body></worldbody><actuator><position joint="j" kp="100"/></actuator></mujoco>"""


def blow_up(core: SimCore) -> None:
    """A force no joint can integrate: the next step's qacc is huge (mjWARN_BADQACC)."""
    core.data.qfrc_applied[core._arm_dof[1]] = 1e30


@pytest.fixture(scope="module")
def core():
    c = SimCore("pick_lift", PANDA, render=False)
    yield c
    c.close()


def test_checked_stepper_reports_reset_and_bad_control_and_keeps_time_monotonic():
    model = mujoco.MjModel.from_xml_string(PENDULUM)
    data = mujoco.MjData(model)
    stepper = CheckedStepper(model, data)
    for _ in range(10):
        assert stepper.step() is None
    t = data.time
    data.qvel[0] = 1e30
    reason = stepper.step()
    assert "mjWARN_BADQVEL" in reason and "MuJoCo reset the state" in reason
    assert data.time == t  # put back: the automatic reset had set it to ~0

    mujoco.mj_resetData(model, data)
    data.ctrl[0] = np.nan
    reason = stepper.step()
    assert "mjWARN_BADCTRL" in reason and "controls were zeroed" in reason


def test_sim_core_stops_on_divergence_and_reset_clears_it(core):
    core.reset(3)
    core.step(100)
    assert core.divergence is None
    t = core.time
    blow_up(core)
    core.step(10)
    assert core.divergence is not None and "mjWARN_BADQACC" in core.divergence
    assert core.time == pytest.approx(t)  # the clock did not jump back, and nothing advanced after
    core.step(10)
    assert core.time == pytest.approx(t)
    core.reset(3)
    assert core.divergence is None
    core.step(5)
    assert core.time > 0 and core.divergence is None


def test_hand_core_stops_on_divergence_too():
    from dexstack.sim.cores import HandCore

    hand = HandCore(object_name="sugar_box")
    try:
        assert hand.reset(1) is None
        hand.step(10)
        t = hand.time
        hand.sim.data.qvel[:] = 1e30
        hand.step(5)
        assert "mjWARN_BADQ" in hand.divergence and hand.time == pytest.approx(t)
        hand.reset(1)
        assert hand.divergence is None
    finally:
        hand.close()


def test_episode_clock_fails_the_episode_with_the_reason(core):
    clock = EpisodeClock(core, first_seed=5, policy_rate_hz=10.0)
    clock.start()
    core.step(25)
    assert clock.check_end() is None
    blow_up(core)
    core.step(1)
    assert clock.check_end() is False and clock.done
    info = clock.info("pick_lift", "done", False)
    assert "physics diverged" in info["failure"] and info["success"] is False
    assert clock.divergences == 1
    clock.start()
    assert clock.failure == "" and "failure" not in clock.info("pick_lift", "running", False)


def test_in_process_env_truncates_a_diverged_episode():
    from dexstack.sim.env import ManipulationEnv
    from dexstack.trajectory import ActionChunk

    env = ManipulationEnv("pick_lift", cameras=False)
    try:
        env.reset(0)
        blow_up(env.core)
        home = np.asarray(PANDA.home)[None]
        _, _, terminated, truncated, info = env.step(ActionChunk.uniform(PANDA.joint_names, home, 0.1, env.core.time))
        assert truncated and not terminated and info["success"] is False
        assert "mjWARN_BADQACC" in info["failure"]
    finally:
        env.close()


@pytest.mark.ros
def test_sim_node_fails_the_episode_reports_error_and_never_publishes_the_teleported_state(ros_client):
    """The sim node runs in this process on the default context (so the test can break its
    physics) with its own executor; everything is observed over DDS by a plain client."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from dexstack import contract
    from dexstack.ros_nodes.common import QOS, joint_positions
    from dexstack.ros_nodes.sim_node import SimNode

    rclpy.init(args=["--ros-args", "-r", "__node:=sim", "-p", "cameras:=false", "-p", "seed:=11"])
    node = SimNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        states: list[JointState] = []
        episodes: list[dict] = []
        errors: list[str] = []
        client = ros_client.node
        client.create_subscription(
            JointState,
            contract.JOINT_STATES,
            states.append,
            QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE),
        )
        client.create_subscription(
            String, contract.SIM_EPISODE, lambda m: episodes.append(json.loads(m.data)), QOS[contract.QoSKind.LATCHED]
        )
        client.create_subscription(
            DiagnosticArray,
            contract.DIAGNOSTICS,
            lambda m: errors.extend(
                s.message for s in m.status if s.name.endswith("/sim") and s.level == DiagnosticStatus.ERROR
            ),
            QoSProfile(depth=10),
        )
        assert ros_client.spin_until(lambda: len(states) > 20 and episodes, 30), "sim never came up"
        with node.wake:  # between two physics steps
            blow_up(node.core)
        assert ros_client.spin_until(lambda: any(e["status"] == "done" for e in episodes), 20), episodes
        done = next(e for e in episodes if e["status"] == "done")
        assert done["seed"] == 11 and done["success"] is False and "mjWARN_BADQACC" in done["failure"]
        assert ros_client.spin_until(lambda: any("physics diverged" in m for m in errors), 10), errors
        # The next episode runs normally.
        assert ros_client.spin_until(lambda: any(e["seed"] == 12 and e["status"] == "running" for e in episodes), 10)
        ros_client.spin_for(0.3)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        spinner.join(timeout=5)
    # Never the teleported state (the model's qpos0 puts joint4 at 0, outside the Panda's limits),
    # and the clock never ran backwards.
    q = np.array([joint_positions(s, PANDA.joint_names) for s in states])
    assert np.all(q >= PANDA.lower - 0.05) and np.all(q <= PANDA.upper + 0.05)
    stamps = np.array([s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in states])
    assert np.all(np.diff(stamps) >= 0)
