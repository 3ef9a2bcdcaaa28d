"""Gymnasium-style env on the shared physics core, for fast in-process rollouts and evaluation.

`step(chunk)` submits an action chunk at the current sim time (exactly what the sim node does
with a chunk that arrives with zero latency) and advances physics by one policy period.
Observations use the contract's keys, so a policy runtime takes them unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dexstack import contract
from dexstack.hardware.profiles import PANDA, RobotProfile
from dexstack.sim.core import SimCore
from dexstack.trajectory import ActionChunk

OBJECT_POSE = "object_pose"  # privileged (7,): xyz m + quaternion wxyz, world frame; experts only
TIME = "time"  # seconds of sim time since reset


class ManipulationEnv:
    """reset(seed) -> (obs, info); step(chunk) -> (obs, reward, terminated, truncated, info):
    the evaluator's env protocol (sim/evaluate.py).

    terminated: success held for the task's `success_hold_s` (the sim node's rule);
    truncated: the task's time limit reached, or the physics diverged (info["failure"] says how,
    and the episode failed). info["sim_s"]: sim time since reset; at the
    episode's end info["metrics"]: the task's `episode_metrics`.
    """

    def __init__(
        self,
        task: str = "pick_lift",
        cameras: bool = True,
        camera_size: tuple[int, int] | None = None,
        policy_hz: float = contract.POLICY_HZ,
        profile: RobotProfile = PANDA,
    ) -> None:
        self.core = SimCore(task, profile, render=cameras, camera_size=camera_size)
        self.profile = profile
        self.cameras = cameras
        self.policy_hz = float(policy_hz)
        steps = 1.0 / (self.policy_hz * self.core.dt)
        if self.policy_hz <= 0 or abs(steps - round(steps)) > 1e-6:
            raise ValueError(f"policy_hz {policy_hz} must divide the physics rate {1.0 / self.core.dt:g} Hz")
        self.steps_per_action = int(round(steps))
        self._success_since: float | None = None
        self.seed: int | None = None

    @property
    def task(self):
        return self.core.task

    def observation(self) -> dict[str, Any]:
        q, _, _ = self.core.joint_state()
        obs: dict[str, Any] = {contract.JOINT_POSITIONS: q.astype(np.float64), TIME: self.core.time}
        if self.cameras:
            for cam in self.profile.camera_names:
                rgb, depth = self.core.render(cam)
                obs[contract.rgb_key(cam)] = rgb
                obs[contract.depth_key(cam)] = depth
        pos, quat = self.core.object_pose()
        obs[OBJECT_POSE] = np.concatenate([pos, quat])
        return obs

    def _info(self, success_now: bool) -> dict[str, Any]:
        held = self._success_since is not None and self.core.time - self._success_since >= self.task.success_hold_s
        return {
            "success": bool(held),
            "success_now": bool(success_now),
            "reward_terms": self.task.reward_terms(),
            "object": self.task.object_name,
            "instruction": self.task.instruction,
            "seed": self.seed,
            "sim_s": self.core.time,
        }

    def reset(self, seed: int, options: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """New episode from `seed` (object, pose); the arm starts at the profile's home. The
        Panda tasks take no options (see `PickLiftTask.options`)."""
        if options:
            raise ValueError(f"task {self.task.name!r} takes no options, got {sorted(options)}")
        self.seed = int(seed)
        self.core.reset(self.seed)
        self._success_since = None
        return self.observation(), self._info(False)

    def step(self, chunk: ActionChunk) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Execute `chunk` from now and advance one policy period (1 / policy_hz seconds)."""
        if self.seed is None:
            raise RuntimeError("call reset(seed) before step()")
        self.core.submit(chunk)
        self.core.step(self.steps_per_action)
        success_now = self.task.success()
        if success_now:
            if self._success_since is None:
                self._success_since = self.core.time
        else:
            self._success_since = None
        info = self._info(success_now)
        terminated = info["success"]
        truncated = not terminated and self.core.time >= self.task.max_time_s - 1e-9
        if self.core.divergence is not None:  # the physics blew up: the episode fails (the sim node's rule)
            info["success"], info["failure"] = False, self.core.divergence
            terminated, truncated = False, True
        if terminated or truncated:
            info["metrics"] = self.task.episode_metrics(info["success"], self.core.time)
        return self.observation(), self.task.reward(), terminated, truncated, info

    def frame(self, obs: dict[str, Any]) -> np.ndarray | None:
        """The scene camera's image in `obs` (for a video), None without cameras."""
        return obs.get(contract.rgb_key("scene"))

    def close(self) -> None:
        self.core.close()


def make_expert(env: ManipulationEnv):
    """The scripted expert for the env's task, at the env's policy rate."""
    from dexstack.sim.experts import EXPERTS

    try:
        expert_cls = EXPERTS[env.task.name]
    except KeyError:
        raise ValueError(f"no scripted expert for task {env.task.name!r}; experts: {sorted(EXPERTS)}") from None
    return expert_cls(env.profile, policy_hz=env.policy_hz)


def rollout_expert(env: ManipulationEnv, seed: int, expert=None, record: bool = False) -> dict[str, Any]:
    """Run one scripted-expert episode in process.

    Returns seed, task, object, instruction, success, steps (policy steps), sim_time (s) and
    return (summed reward); with `record`, also `observations` (one dict per policy step,
    before acting) and `actions` (the chunk positions, (T, J) each, profile order).
    """
    expert = expert if expert is not None else getattr(env, "_expert", None) or make_expert(env)
    env._expert = expert  # building the expert's IK model costs ~0.1 s; reuse it
    expert.reset()
    obs, info = env.reset(seed)
    observations, actions = [], []
    total, steps, done = 0.0, 0, False
    while not done:
        pose = obs[OBJECT_POSE]
        chunk = expert.act(obs[TIME], obs[contract.JOINT_POSITIONS], pose[:3], pose[3:])
        if record:
            observations.append(obs)
            actions.append(chunk.positions)
        obs, reward, terminated, truncated, info = env.step(chunk)
        total += reward
        steps += 1
        done = terminated or truncated
    result = {
        "seed": int(seed),
        "task": env.task.name,
        "object": info["object"],
        "instruction": info["instruction"],
        "success": info["success"],
        "steps": steps,
        "sim_time": env.core.time,
        "return": total,
    }
    if record:
        result["observations"] = observations
        result["actions"] = actions
    return result


def main(argv: list[str] | None = None) -> None:
    """`python -m dexstack.sim.env --episodes 100`: scripted-expert success rate, one JSON line."""
    import argparse
    import json
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--task", default="pick_lift")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--cameras", action="store_true", help="render the cameras too (slower)")
    args = parser.parse_args(argv)
    env = ManipulationEnv(args.task, cameras=args.cameras)
    start = time.perf_counter()
    results = [rollout_expert(env, s) for s in range(args.first_seed, args.first_seed + args.episodes)]
    failures = [{"seed": r["seed"], "object": r["object"]} for r in results if not r["success"]]
    print(
        json.dumps(
            {
                "task": args.task,
                "episodes": len(results),
                "success_rate": sum(r["success"] for r in results) / len(results),
                "mean_sim_time_s": float(np.mean([r["sim_time"] for r in results])),
                "wall_s": round(time.perf_counter() - start, 2),
                "failures": failures,
            }
        )
    )


if __name__ == "__main__":
    main()
