"""Policy node latency and loop jitter at 50 Hz in real-time mode.

robot: the policy node on the system clock (as on a robot), fed by a driver-like publisher
       in another process: /joint_states at 500 Hz, two RGB cameras at 30 Hz (frames rendered
       by the sim once), system-time stamps. Figures from the node's /diagnostics, plus the
       latency a controller sees (chunk arrival - observation stamp) measured here.
sim:   the full graph (sim realtime rtf 1 + safety filter + policy node) on sim time.
Prints one JSON object.

    .venv/bin/python bench/bench_policy_node.py [--seconds 20] [--policy bc_pick_lift]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import numpy as np  # noqa: E402

from dexstack import contract  # noqa: E402
from dexstack.graph import DEFAULT_POLICY, NodeSpec, node_list, parse_launch_args  # noqa: E402
from dexstack.launcher import node_environment, start_nodes, stop_nodes  # noqa: E402

RATE_HZ = 50.0
JOINT_HZ = 500.0
CAMERA_HZ = 30.0


def driver(domain_id: int, seconds: float) -> None:
    """A robot driver stand-in: real sim frames, published at driver rates with system stamps."""
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from dexstack.ros_nodes import common
    from dexstack.sim.core import SimCore

    core = SimCore()
    core.reset(3)
    frames = {cam: core.render(cam)[0] for cam in core.profile.camera_names}
    q = core.joint_state()[0]
    rclpy.init()
    node = rclpy.create_node("bench_driver")
    pub_j = node.create_publisher(JointState, contract.JOINT_STATES, common.QOS[contract.QoSKind.STATE_PUB])
    pub_c = {c: node.create_publisher(Image, contract.camera_color_topic(c), qos_profile_sensor_data) for c in frames}
    start = time.monotonic()
    n = 0
    every = round(JOINT_HZ / CAMERA_HZ)
    while time.monotonic() - start < seconds:
        stamp = time.time()
        pub_j.publish(common.joint_state_msg(core.profile.joint_names, q, stamp=stamp))
        if n % every == 0:
            for cam, rgb in frames.items():
                pub_c[cam].publish(common.rgb_msg(rgb, cam, stamp))
        n += 1
        time.sleep(max(0.0, start + n / JOINT_HZ - time.monotonic()))
    node.destroy_node()
    rclpy.shutdown()


def listen(domain_id: int, seconds: float, policy_topic: str) -> tuple[dict[str, str], list[float]]:
    """Collect the policy node's diagnostics and chunk arrival latencies (system clock)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from trajectory_msgs.msg import JointTrajectory

    from dexstack.ros_nodes.client import RosClient

    client = RosClient("bench_listener", domain_id)
    node = client.node
    diag: dict[str, str] = {}
    arrivals: list[float] = []

    def on_diag(msg):
        for s in msg.status:
            if s.name.endswith("/policy"):
                diag.update({kv.key: kv.value for kv in s.values})

    def on_chunk(msg):
        if msg.points:
            arrivals.append((time.time() - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)) * 1e3)

    node.create_subscription(DiagnosticArray, contract.DIAGNOSTICS, on_diag, 10)
    node.create_subscription(JointTrajectory, policy_topic, on_chunk, 10)
    client.spin_for(seconds)
    client.close()
    return diag, arrivals


def figures(diag: dict[str, str]) -> dict[str, float | None]:
    keys = [
        "inference_ms_p50",
        "inference_ms_p99",
        "e2e_ms_p50",
        "e2e_ms_p99",
        "loop_period_ms_p50",
        "loop_jitter_ms_p99",
        "observation_age_ms_p99",
        "hold_count",
        "chunks",
    ]
    out = {}
    for k in keys:
        try:
            out[k] = round(float(diag[k]), 3)
        except (KeyError, ValueError):
            out[k] = None
    return out


def robot_mode(policy: str, seconds: float, domain: int) -> dict:
    spec = NodeSpec(
        "policy_node",
        "policy",
        {"policy": policy, "rate": RATE_HZ, "trigger": "timer", "use_sim_time": False, "start_enabled": True},
    )
    procs = start_nodes(
        [spec], env=node_environment(domain), log_dir=os.path.join(tempfile.gettempdir(), "dexstack_bench_logs")
    )
    drv = mp.get_context("spawn").Process(target=driver, args=(domain, seconds + 8.0))
    drv.start()
    try:
        listen(domain, 6.0, "/policy/arm_controller/joint_trajectory")  # warm-up: discovery, first inferences
        diag, arrivals = listen(domain, seconds, "/policy/arm_controller/joint_trajectory")
    finally:
        drv.join()
        stop_nodes(procs)
    out = figures(diag)
    out["controller_sees_ms_p50"] = round(float(np.percentile(arrivals, 50)), 3) if arrivals else None
    out["controller_sees_ms_p99"] = round(float(np.percentile(arrivals, 99)), 3) if arrivals else None
    return out


def sim_mode(policy: str, seconds: float, domain: int) -> dict:
    specs = node_list(parse_launch_args([f"policy:={policy}", "rtf:=1.0", f"policy_rate:={RATE_HZ}"]))
    procs = start_nodes(
        specs, env=node_environment(domain), log_dir=os.path.join(tempfile.gettempdir(), "dexstack_bench_logs")
    )
    try:
        listen(domain, 8.0, "/policy/arm_controller/joint_trajectory")
        diag, _ = listen(domain, seconds, "/policy/arm_controller/joint_trajectory")
    finally:
        stop_nodes(procs)
    return figures(diag)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--policy", default=DEFAULT_POLICY)
    args = parser.parse_args()
    domain = 30 + os.getpid() % 30
    out = {
        "policy": args.policy,
        "rate_hz": RATE_HZ,
        "joint_state_hz": JOINT_HZ,
        "camera_hz": CAMERA_HZ,
        "robot_system_clock": robot_mode(args.policy, args.seconds, domain),
        "sim_realtime": sim_mode(args.policy, args.seconds, domain),
    }
    r = out["robot_system_clock"]
    if r["e2e_ms_p99"] is not None and r["inference_ms_p99"] is not None:
        out["e2e_p99_minus_inference_p99_ms"] = round(r["e2e_ms_p99"] - r["inference_ms_p99"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
