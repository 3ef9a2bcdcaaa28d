"""How many camera frames reach a best-effort subscriber (the policy node's image QoS) from a camera
driver process, and how late, with Fast DDS's built-in transports and with the shipped profile for
large images (config/fastdds_large_images.xml).

    .venv/bin/python bench/camera_transport.py --seconds 10 --rate 15

For each resolution and transport it runs tests/camera_driver.py (reliable, like realsense-ros) in
its own process and counts, in this one, the frames of one camera received and their latency
(arrival wall clock - header stamp); then the policy node's conversion and crop + resize cost per
frame. Prints absolute figures and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 80))


def measure(client, topic: str, driver_cmd: list[str], env: dict[str, str], seconds: float) -> tuple[int, list[float]]:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    latencies: list[float] = []

    def on_image(msg: Image) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((time.time_ns() - stamp) / 1e6)

    sub = client.node.create_subscription(Image, topic, on_image, qos_profile_sensor_data)
    driver = subprocess.Popen(driver_cmd, env=env)
    try:
        if not client.spin_until(lambda: sub.get_publisher_count() > 0, 30):
            raise RuntimeError("the camera driver never appeared")
        client.spin_for(1.0)  # discovery settles
        latencies.clear()
        client.spin_for(seconds)
        return len(latencies), list(latencies)
    finally:
        driver.terminate()
        driver.wait(10)
        client.node.destroy_subscription(sub)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=15.0)
    args = parser.parse_args()

    from dexstack import contract
    from dexstack.launcher import node_environment
    from dexstack.ros_nodes.client import RosClient

    client = RosClient("camera_transport_bench")
    profile = REPO / "config" / "fastdds_large_images.xml"
    print(
        f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f} (1 min) at start; {args.rate:g} Hz for {args.seconds:g} s"
    )
    print(f"{'camera':>10} {'transport':>10} {'frames':>8} {'of':>5} {'p50 ms':>8} {'p99 ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for h, w in [(480, 640), (720, 1280)]:
            frame = Path(tmp) / f"{w}x{h}.npy"
            np.save(frame, np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
            cmd = [sys.executable, str(REPO / "tests" / "camera_driver.py"), "--rate", str(args.rate), f"bench={frame}"]
            for name, extra in [("built-in", {}), ("profile", {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile)})]:
                env = node_environment(extra=extra)
                if not extra:  # the built-in transports, whatever this shell sets
                    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
                count, lat = measure(client, contract.camera_color_topic("bench"), cmd, env, args.seconds)
                p50, p99 = np.percentile(lat, [50, 99]) if lat else (float("nan"),) * 2
                print(
                    f"{f'{w}x{h}':>10} {name:>10} {count:>8} {int(args.rate * args.seconds):>5} {p50:>8.1f} {p99:>8.1f}"
                )
    print(f"load {os.getloadavg()[0]:.2f} (1 min) at end")
    client.close()
    conversion_cost()


def conversion_cost(repeats: int = 50) -> None:
    """What the policy node spends per frame: message -> pixels (convert_input, on arrival) and
    crop + resize to 96x96 (fit_image, when it acts), median of `repeats`."""
    from sensor_msgs.msg import Image

    from dexstack.images import fit_image
    from dexstack.ros_nodes.inputs import convert_input

    spec = {"name": "rgb", "kind": "rgb", "source": "/c", "shape": [96, 96, 3], "dtype": "uint8", "max_age_s": 1.0}
    print(f"{'camera':>10} {'encoding':>9} {'convert ms':>11} {'fit ms':>8}")
    for h, w in [(480, 640), (720, 1280)]:
        for encoding in ("rgb8", "bgr8"):
            data = np.random.default_rng(0).integers(0, 256, h * w * 3, dtype=np.uint8).tobytes()
            msg = Image(height=h, width=w, encoding=encoding, step=w * 3, data=data)
            convert, fit = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                pixels = convert_input(spec, msg)
                t1 = time.perf_counter()
                fit_image(pixels, spec)
                convert.append(t1 - t0)
                fit.append(time.perf_counter() - t1)
            print(f"{f'{w}x{h}':>10} {encoding:>9} {np.median(convert) * 1e3:>11.2f} {np.median(fit) * 1e3:>8.2f}")


if __name__ == "__main__":
    main()
