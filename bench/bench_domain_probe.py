"""What verifying a private ROS domain costs, and how fast a busy one is recognised.

free: `claim_domain` on an empty domain (probe process start + the full discovery period), the
      start-up cost every `dexstack eval --through-ros`, `demo` and `record-demos` now pays.
busy: `probe` of a domain with a live node on it (another process): seconds until it is seen,
      and how many probes missed it (must be 0).
Prints one JSON object with absolute figures and the machine load.

    .venv/bin/python bench/bench_domain_probe.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import numpy as np  # noqa: E402

from dexstack.ros_nodes import domains  # noqa: E402

# Outside the range tools pick from (20..99), so the bench never takes a tool's domain.
FREE, BUSY = 200 + os.getpid() % 10 * 2, 201 + os.getpid() % 10 * 2


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50_s": round(float(np.percentile(a, 50)), 2), "max_s": round(float(a.max()), 2), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    free = []
    for _ in range(args.runs):
        start = time.monotonic()
        assert domains.claim_domain(env={}, candidates=[FREE]) == FREE
        free.append(time.monotonic() - start)
        domains._release(FREE)
    node = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import rclpy\nrclpy.init(domain_id={BUSY})\nrclpy.spin(rclpy.create_node('robot_driver'))",
        ],
        env=dict(os.environ),
    )
    try:
        time.sleep(3.0)  # the node is up
        busy, missed = [], 0
        for _ in range(args.runs):
            start = time.monotonic()
            found = domains.probe(BUSY)
            busy.append(time.monotonic() - start)
            missed += "robot_driver" not in found
    finally:
        node.kill()
        node.wait()
    print(
        json.dumps(
            {
                "bench": "domain_probe",
                "discovery_s": domains.DISCOVERY_S,
                "claim_free_domain": _stats(free),
                "probe_busy_domain": _stats(busy) | {"missed": missed},
                "machine": {"cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
            }
        )
    )


if __name__ == "__main__":
    main()
