"""In-process evaluation with the safety filter between the runtime and the sim, as the ROS graph
has it: separates what the filter does to a policy from what the ROS transport does.

    .venv/bin/python bench/inprocess_with_safety_filter.py --policy ptp_cover_pick@2 --task cover_pick --episodes 50

Prints one JSON line: successes, per-seed outcomes and holds. Seeds 1000 + i, like `dexstack eval`.
Compare with `dexstack eval` in-process (no filter) and `--through-ros` on the same seeds.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from dexstack.hardware.profiles import PANDA
from dexstack.hardware.safety import SafetyFilter
from dexstack.runtime import load_runtime
from dexstack.sim.env import ManipulationEnv
from dexstack.store import PolicyStore
from dexstack.trajectory import ActionChunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--task", default="pick_lift")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    loaded = PolicyStore().load(args.policy, PANDA)
    runtime = load_runtime(loaded.path, loaded.manifest, profile=PANDA, rate_hz=None)
    names, dt = tuple(loaded.manifest["outputs"]["joint_names"]), float(loaded.manifest["outputs"]["dt"])
    env = ManipulationEnv(task=args.task)
    outcomes, holds = [], 0
    for i in range(args.episodes):
        obs, info = env.reset(args.seed + i)
        runtime.reset()
        safety = SafetyFilter(PANDA, start_enabled=True)  # the sim graph's filter starts enabled too
        while True:
            chunk = ActionChunk.uniform(names, runtime.act(obs), dt, stamp=obs["time"])
            safe, _ = safety.filter(chunk, obs["joint_positions"], obs["time"], measured_time=obs["time"])
            if safe is None:  # a hold: no points, the sim keeps its current command
                holds += 1
                safe = ActionChunk(names, np.zeros((0, len(names))), np.zeros(0), obs["time"])
            obs, _, terminated, truncated, info = env.step(safe)
            if terminated or truncated:
                break
        outcomes.append(bool(info["success"]))
    seeds = [args.seed + i for i in range(args.episodes)]
    print(
        json.dumps(
            {
                "policy": args.policy,
                "task": args.task,
                "mode": "in_process_with_safety_filter",
                "successes": sum(outcomes),
                "episodes": args.episodes,
                "holds": holds,
                "seeds": seeds,
                "outcomes": outcomes,
            }
        )
    )


if __name__ == "__main__":
    main()
