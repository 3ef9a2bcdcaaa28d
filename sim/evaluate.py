"""In-process evaluation: the same runtime object the policy node serves, stepped in the
gym-style env on the same physics core as the sim node (fast, no ROS)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dexstack import contract
from dexstack.hardware.profiles import RobotProfile
from dexstack.runtime import PolicyRuntime
from dexstack.sim.env import ManipulationEnv
from dexstack.sim.experts import EXPERTS
from dexstack.trajectory import ActionChunk


@dataclass
class EvalResult:
    successes: list[bool] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    episode_sim_s: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # scene camera, first episode
    wall_s: float = 0.0


class ExpertPolicy:
    """The scripted expert behind the runtime interface, so one evaluator serves both."""

    def __init__(self, profile: RobotProfile, task: str = "pick_lift") -> None:
        self.expert = EXPERTS[task](profile)
        self.joint_names = profile.joint_names

    def reset(self) -> None:
        self.expert.reset()

    def chunk(self, obs: dict) -> ActionChunk:
        pose = obs["object_pose"]
        return self.expert.act(obs["time"], obs[contract.JOINT_POSITIONS], pose[:3], pose[3:])


def evaluate_in_process(policy: PolicyRuntime | ExpertPolicy, task: str, episodes: int, seed: int, *,
                        cameras: bool = True, keep_frames: bool = False,
                        progress: Callable[[int, bool], None] | None = None) -> EvalResult:
    result = EvalResult()
    env = ManipulationEnv(task=task, cameras=cameras)
    start = time.monotonic()
    if isinstance(policy, ExpertPolicy):
        make_chunk = policy.chunk
    else:
        out = policy.manifest["outputs"]
        names, dt = tuple(out["joint_names"]), float(out["dt"])

        def make_chunk(obs: dict) -> ActionChunk:
            t0 = time.perf_counter()
            action = policy.act(obs)
            result.inference_ms.append((time.perf_counter() - t0) * 1e3)
            return ActionChunk.uniform(names, action, dt, stamp=obs["time"])

    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        policy.reset()
        while True:
            if keep_frames and i == 0:
                result.frames.append(obs[contract.rgb_key("scene")].copy())
            obs, _, terminated, truncated, info = env.step(make_chunk(obs))
            if terminated or truncated:
                break
        result.successes.append(bool(info["success"]))
        result.seeds.append(seed + i)
        result.episode_sim_s.append(float(obs["time"]))
        if progress:
            progress(i + 1, bool(info["success"]))
    result.wall_s = time.monotonic() - start
    return result
