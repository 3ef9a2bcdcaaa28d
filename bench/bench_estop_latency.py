"""E-stop latency through the safety filter under a flood of maximal chunks (issue 12 row 3).

    .venv/bin/python bench/bench_estop_latency.py --presses 200

A real safety_filter process (panda, enabled); a second process floods its input with chunks of
contract.MAX_CHUNK_POINTS points (in range, and far out of range so every point is rate-limited)
as fast as it can publish, and publishes joint states at 100 Hz. This process presses the e-stop
(reliable + transient-local, as the contract publishes it) and times publish -> the hold seen on
the controller topic, then releases it, resets and re-enables, and waits for a chunk to pass
again before the next press. Prints p50/p99/max in ms, the chunks the filter answered per
second, and the machine load. The issue's floor is p99 <= 20 ms; nothing here asserts it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np

FLOOD = textwrap.dedent(
    """
    import time, numpy as np, rclpy
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory
    from dexstack import contract
    from dexstack.hardware.profiles import PANDA
    from dexstack.ros_nodes.common import QOS, chunk_to_msg, joint_state_msg
    from dexstack.trajectory import ActionChunk
    K = contract.QoSKind
    rclpy.init()
    node = rclpy.create_node("chunk_flood")
    pub = node.create_publisher(JointTrajectory, PANDA.policy_output_topic, QOS[K.COMMAND])
    js = node.create_publisher(JointState, contract.JOINT_STATES, QOS[K.STATE_PUB])
    home, n = np.asarray(PANDA.home), contract.MAX_CHUNK_POINTS
    dt = contract.MAX_CHUNK_HORIZON_S / n
    t = dt * np.arange(1, n + 1)
    smooth = home + 0.05 * np.sin(2 * np.pi * t / t[-1])[:, None] * (np.arange(PANDA.n_joints) < 7)
    rough = home + np.random.default_rng(0).uniform(-0.5, 0.5, (n, PANDA.n_joints)) * (np.arange(PANDA.n_joints) < 7)
    msgs = [chunk_to_msg(ActionChunk(PANDA.joint_names, q, t, None)) for q in (smooth, rough)]
    next_js, k = 0.0, 0
    while rclpy.ok():
        now = time.monotonic()
        if now >= next_js:
            js.publish(joint_state_msg(PANDA.joint_names, home, stamp=node.get_clock().now().nanoseconds * 1e-9))
            next_js = now + 0.01
        pub.publish(msgs[k % 2])
        k += 1
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=200)
    parser.add_argument("--no-flood", action="store_true", help="joint states only: the latency floor of the machine")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 80))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    from std_msgs.msg import Bool
    from std_srvs.srv import SetBool, Trigger
    from trajectory_msgs.msg import JointTrajectory

    from dexstack import contract
    from dexstack.graph import NodeSpec
    from dexstack.hardware.profiles import PANDA
    from dexstack.launcher import node_environment, start_nodes, stop_nodes
    from dexstack.ros_nodes.client import RosClient
    from dexstack.ros_nodes.common import QOS

    procs = start_nodes([NodeSpec("safety_filter", "safety_filter", {"profile": "panda", "start_enabled": True})])
    script = FLOOD.replace("pub.publish(msgs[k % 2])", "time.sleep(0.005)") if args.no_flood else FLOOD
    flood = subprocess.Popen([sys.executable, "-c", script], env=node_environment(), start_new_session=True)
    client = RosClient("estop_bench")
    node = client.node
    seen: list[tuple[float, JointTrajectory]] = []
    node.create_subscription(
        JointTrajectory,
        PANDA.trajectory_topic,
        lambda m: seen.append((time.perf_counter(), m)),
        QOS[contract.QoSKind.COMMAND],
    )
    estop = node.create_publisher(Bool, contract.ESTOP, QOS[contract.QoSKind.LATCHED])
    latencies: list[float] = []
    try:
        assert client.spin_until(lambda: estop.get_subscription_count() > 0, 60.0), "no filter"
        assert args.no_flood or client.spin_until(lambda: len(seen) > 20, 60.0), "no flood"
        started, answered0 = time.perf_counter(), len(seen)
        client.spin_for(2.0)
        answer_hz = (len(seen) - answered0) / (time.perf_counter() - started)

        def hold_since(n: int) -> float | None:
            """When the e-stop's hold arrived: the first message after `n` starting "now" (stamp 0)."""
            return next((t for t, m in seen[n:] if m.header.stamp.sec == 0 == m.header.stamp.nanosec), None)

        for _ in range(args.presses):
            n = len(seen)
            pressed = time.perf_counter()
            estop.publish(Bool(data=True))
            if not client.spin_until(lambda n=n: hold_since(n) is not None, 5.0):
                raise RuntimeError("no hold after an e-stop press")
            latencies.append((hold_since(n) - pressed) * 1e3)
            estop.publish(Bool(data=False))
            client.spin_for(0.02)
            client.call(Trigger, "/safety_filter/reset_estop", Trigger.Request())
            client.call(SetBool, "/safety_filter/enable", SetBool.Request(data=True))
            n = len(seen)
            if not args.no_flood:
                client.spin_until(lambda n=n: any(len(m.points) > 1 for _, m in seen[n:]), 5.0)  # passing again
    finally:
        flood.kill()
        flood.wait()
        stop_nodes(procs)
        client.close()
    lat = np.asarray(latencies)
    load1, load5, _ = os.getloadavg()
    print(
        json.dumps(
            {
                "bench": "estop_latency",
                "presses": len(lat),
                "chunk_points": 0 if args.no_flood else contract.MAX_CHUNK_POINTS,
                "filter_answers_per_s": round(answer_hz, 1),
                "p50_ms": round(float(np.percentile(lat, 50)), 2),
                "p99_ms": round(float(np.percentile(lat, 99)), 2),
                "max_ms": round(float(lat.max()), 2),
                "cpus": os.cpu_count(),
                "loadavg_1m_5m": [round(load1, 2), round(load5, 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
