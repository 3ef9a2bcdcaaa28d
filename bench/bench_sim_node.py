"""Sim node real-time factor vs bare MuJoCo stepping of the same scene, side by side.

Cases: cameras off; two 128x128 RGB-D cameras at 15 Hz. "bare" steps SimCore in this
process (and renders on the same schedule); "node" runs the sim node as fast as it can
(rtf:=0, realtime pacing, holding position) and measures sim time advanced per wall second
from /clock. Prints one JSON object.

    .venv/bin/python bench/bench_sim_node.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

from dexstack import contract  # noqa: E402
from dexstack.graph import NodeSpec  # noqa: E402
from dexstack.launcher import node_environment, start_nodes, stop_nodes  # noqa: E402

CAMERA_PX = 128


def bare_rtf(cameras: bool, seconds: float) -> float:
    from dexstack.sim.core import SimCore

    core = SimCore(render=cameras, camera_size=(CAMERA_PX, CAMERA_PX))
    core.reset(0)
    every = round(1.0 / (contract.CAMERA_HZ * core.dt))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        core.step(1)
        core.joint_state()
        if cameras and steps % every == 0:
            for cam in core.profile.camera_names:
                core.render(cam)
        steps += 1
    return steps * core.dt / (time.perf_counter() - start)


def node_rtf(cameras: bool, seconds: float, domain_id: int) -> float:
    from rosgraph_msgs.msg import Clock

    from dexstack.ros_nodes.client import RosClient

    spec = NodeSpec(
        "sim_node",
        "sim",
        {
            "rtf": 0.0,
            "cameras": cameras,
            "camera_width": CAMERA_PX,
            "camera_height": CAMERA_PX,
            "auto_reset": True,
            "use_sim_time": True,
        },
    )
    procs = start_nodes(
        [spec], env=node_environment(domain_id), log_dir=os.path.join(tempfile.gettempdir(), "dexstack_bench_logs")
    )
    client = RosClient("bench_rtf", domain_id)
    samples: list[tuple[float, float]] = []
    client.node.create_subscription(
        Clock,
        contract.CLOCK,
        lambda m: samples.append((time.perf_counter(), m.clock.sec + m.clock.nanosec * 1e-9)),
        100,
    )
    try:
        client.spin_until(lambda: bool(samples), 60)
        client.spin_for(2.0 + seconds)
        window = [s for s in samples if s[0] >= samples[0][0] + 2.0]  # skip start-up
        # Episode resets add one control period; sim time is monotonic, so the slope holds.
        return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
    finally:
        client.close()
        stop_nodes(procs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    domain = 60 + os.getpid() % 30
    out = {
        "camera_px": CAMERA_PX,
        "camera_hz": contract.CAMERA_HZ,
        "physics_hz": contract.PHYSICS_HZ,
        "joint_state_hz": contract.JOINT_STATE_HZ,
    }
    for cameras in (False, True):
        key = "cameras_on" if cameras else "cameras_off"
        bare = bare_rtf(cameras, args.seconds)
        node = node_rtf(cameras, args.seconds, domain)
        out[f"bare_rtf_{key}"] = round(bare, 2)
        out[f"node_rtf_{key}"] = round(node, 2)
        out[f"node_over_bare_{key}"] = round(node / bare, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
