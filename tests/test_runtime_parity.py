"""Runtime parity: for the same observations, in-process evaluation and the policy node
(over real DDS) produce the same actions, with the policy shipped in the repo."""

from __future__ import annotations

import time

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.graph import DEFAULT_POLICY, NodeSpec
from dexstack.hardware.profiles import PANDA
from dexstack.ros_nodes import common
from dexstack.runtime import load_runtime
from dexstack.sim.env import ManipulationEnv
from dexstack.store import PolicyStore
from dexstack.trajectory import ActionChunk

pytestmark = pytest.mark.ros


def shipped_runtime():
    loaded = PolicyStore().load(DEFAULT_POLICY, PANDA)
    return loaded, load_runtime(loaded.path, loaded.manifest, profile=PANDA)


def test_policy_node_and_in_process_runtime_act_the_same(ros_client, launch_nodes, dexstack_home):
    loaded, runtime = shipped_runtime()
    out = loaded.manifest["outputs"]
    # Observations from a real in-process episode (the runtime drives the env).
    env = ManipulationEnv(task="pick_lift", cameras=True)
    obs, _ = env.reset(seed=11)
    observations = []
    for _ in range(4):
        observations.append(obs)
        action = runtime.act(obs)
        obs, *_ = env.step(ActionChunk.uniform(out["joint_names"], action, out["dt"], stamp=obs["time"]))
    runtime.reset()
    expected = [runtime.act(o) for o in observations]

    launch_nodes(
        [
            NodeSpec(
                "policy_node",
                "policy",
                {"policy": DEFAULT_POLICY, "trigger": "observation", "use_sim_time": False, "start_enabled": True},
            )
        ]
    )
    got: dict[float, JointTrajectory] = {}
    answers = ros_client.node.create_subscription(
        JointTrajectory,
        PANDA.policy_output_topic,
        lambda m: got.setdefault(common.to_sec(m.header.stamp), m),
        QoSProfile(depth=10),
    )
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub_joints = ros_client.node.create_publisher(JointState, contract.JOINT_STATES, reliable)
    pub_rgb = {
        cam: ros_client.node.create_publisher(Image, contract.camera_color_topic(cam), reliable)
        for cam in PANDA.camera_names
    }
    pubs = [pub_joints, *pub_rgb.values()]
    assert ros_client.spin_until(lambda: all(p.get_subscription_count() > 0 for p in pubs), 30)
    # Answers are reliable once the node's publisher has matched our subscription.
    assert ros_client.spin_until(lambda: answers.get_publisher_count() > 0, 30)

    stamps = []
    for obs in observations:
        # The node acts only on a complete set; cameras are best-effort, so a dropped frame
        # means no answer and no action: send the same observation again with a fresh stamp.
        for _ in range(10):
            stamp = time.time()
            for cam, pub in pub_rgb.items():
                pub.publish(common.rgb_msg(obs[contract.rgb_key(cam)], cam, stamp))
            pub_joints.publish(common.joint_state_msg(PANDA.joint_names, obs[contract.JOINT_POSITIONS], stamp=stamp))
            if ros_client.spin_until(lambda s=stamp: any(abs(t - s) < 1e-6 for t in got), 1.0):
                break
        assert any(abs(t - stamp) < 1e-6 for t in got), f"no answer for the observation stamped {stamp}"
        stamps.append(stamp)
    for stamp, action in zip(stamps, expected, strict=True):
        msg = next(m for t, m in got.items() if abs(t - stamp) < 1e-6)
        assert list(msg.joint_names) == list(out["joint_names"])
        served = np.array([p.positions for p in msg.points])
        assert served.shape == action.shape
        np.testing.assert_allclose(served, action, atol=1e-6)
        times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        np.testing.assert_allclose(times, out["dt"] * np.arange(1, len(times) + 1), atol=1e-9)
