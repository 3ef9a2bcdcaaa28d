"""In-process evaluation with the safety filter between the runtime and the sim, as the ROS graph
has it: separates what the filter does to a policy from what the ROS transport does.

    .venv/bin/python bench/inprocess_with_safety_filter.py --policy ptp_cover_pick@2 --task cover_pick --episodes 50

Prints one JSON line: successes, per-seed outcomes and holds. Seeds 1000 + i, like `dexstack eval`.
Compare with `dexstack eval` in-process (no filter) and `--through-ros` on the same seeds.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dexstack.hardware.profiles import PANDA
from dexstack.hardware.safety import SafetyFilter
from dexstack.sim.evaluate import manipulation_in_process, run_episodes
from dexstack.store import PolicyStore
from dexstack.trajectory import ActionChunk


class FilteredController:
    """The evaluator's controller with a fresh safety filter per episode (the sim graph's filter
    starts enabled) between its chunk and the env; a hold is a chunk with no points."""

    def __init__(self, controller: Any) -> None:
        self.controller, self.holds = controller, 0

    def reset(self, info: dict[str, Any]) -> None:
        self.controller.reset(info)
        self.safety = SafetyFilter(PANDA, start_enabled=True)

    def act(self, obs: dict[str, Any]) -> ActionChunk:
        chunk = self.controller.act(obs)
        safe, _ = self.safety.filter(chunk, obs["joint_positions"], obs["time"], measured_time=obs["time"])
        if safe is None:
            self.holds += 1
            safe = self.safety.hold(obs["time"], obs["time"])  # what the node sends: JTC executes it as a stop
        return safe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--task", default="pick_lift")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    loaded = PolicyStore().load(args.policy, PANDA)
    setup = manipulation_in_process(loaded.path, loaded.manifest, task=args.task, profile=PANDA)
    setup.controller = filtered = FilteredController(setup.controller)
    result = run_episodes(setup, [(None, {})], args.episodes, args.seed)
    outcomes = [o.success for o in result.outcomes]
    print(
        json.dumps(
            {
                "policy": args.policy,
                "task": args.task,
                "mode": "in_process_with_safety_filter",
                "successes": sum(outcomes),
                "episodes": args.episodes,
                "holds": filtered.holds,
                "seeds": [o.seed for o in result.outcomes],
                "outcomes": outcomes,
            }
        )
    )


if __name__ == "__main__":
    main()
