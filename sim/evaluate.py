"""The evaluator's in-process half: one episode loop for every task, and the records both
backends (this loop and `ros_nodes/eval_client.py`) produce.

The loop drives an env through `Env` (reset(seed, options) -> (obs, info); step(command) ->
(obs, reward, terminated, truncated, info), with info["success"], info["sim_s"] and, at the
episode's end, info["metrics"] from the task's `episode_metrics`) with a `Controller`
(reset(info); act(obs) -> command). Which env and controller a policy gets is its family's
`in_process` entry (default `manipulation_in_process`: `ManipulationEnv` + `load_runtime`) or, for
the scripted expert, the task's `expert` entry. A task's `options` expand into groups of
episodes (`task_groups`): episode k of every group starts from `reset(seed + k, group options)`.
No ROS, nothing from policies/.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dexstack import contract
from dexstack.hardware.profiles import RobotProfile, get_profile
from dexstack.trajectory import ActionChunk


@dataclass(frozen=True)
class EpisodeOutcome:
    """One evaluated episode. group: the task's group (the grasp task's object), None for a task
    without options; sim_s: the episode's sim time at its end; metrics: the task's
    `episode_metrics`."""

    group: str | None
    seed: int
    success: bool
    sim_s: float
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalResult:
    outcomes: list[EpisodeOutcome] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)  # every controller call, when it is a policy
    frames: list[np.ndarray] = field(default_factory=list)  # the first episode's camera images
    wall_s: float = 0.0


class Env(Protocol):
    def reset(self, seed: int, options: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]: ...

    def step(self, command: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]: ...

    def frame(self, obs: dict[str, Any]) -> np.ndarray | None: ...

    def close(self) -> None: ...


class Controller(Protocol):
    def reset(self, info: dict[str, Any]) -> None: ...

    def act(self, obs: dict[str, Any]) -> Any: ...


@dataclass
class InProcess:
    """What an `in_process` entry (family) or `expert` entry (task) returns. timed: the
    controller's calls are inference whose latency the summary reports."""

    env: Env
    controller: Controller
    timed: bool = True


def task_class(task: str) -> Any:
    from dexstack.sim.tasks import get_task_class

    return get_task_class(task)


def task_profile(task: str) -> RobotProfile:
    """The profile of the robot whose scene `task` runs on."""
    from dexstack.sim.tasks import task_robot

    return get_profile(task_robot(task))


def task_groups(task: str, options: dict[str, str]) -> list[tuple[str | None, dict[str, str]]]:
    """The task's groups of episodes for `options` (`--option KEY=VALUE`): (name, group options).
    ValueError naming the task's options for an option it does not declare."""
    cls = task_class(task)
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        known = ", ".join(f"{k} ({v})" for k, v in cls.options.items()) or "none"
        raise ValueError(f"task {task!r} has no option {', '.join(unknown)}; its options: {known}")
    return cls.episode_groups(dict(options))


def run_episodes(
    setup: InProcess,
    groups: list[tuple[str | None, dict[str, str]]],
    episodes: int,
    seed: int,
    *,
    keep_frames: bool = False,
    progress: Callable[[EpisodeOutcome], None] | None = None,
    on_episode: Callable[[EpisodeOutcome, dict[str, Any]], None] | None = None,
) -> EvalResult:
    """`episodes` episodes per group with seeds seed ... seed + episodes - 1; the env is closed
    at the end. keep_frames: keep the env's `frame` of every step of the first episode.
    on_episode(outcome, last info) after every episode, then progress(outcome)."""
    env, controller = setup.env, setup.controller
    result = EvalResult()
    start = time.monotonic()
    try:
        for group, options in groups:
            for k in range(episodes):
                obs, info = env.reset(seed + k, options)
                controller.reset(info)
                first = keep_frames and not result.outcomes
                while True:
                    if first:
                        frame = env.frame(obs)
                        if frame is not None:
                            result.frames.append(frame.copy())
                    t0 = time.perf_counter()
                    command = controller.act(obs)
                    if setup.timed:
                        result.inference_ms.append((time.perf_counter() - t0) * 1e3)
                    obs, _, terminated, truncated, info = env.step(command)
                    if terminated or truncated:
                        break
                outcome = EpisodeOutcome(
                    group, seed + k, bool(info["success"]), float(info["sim_s"]), dict(info.get("metrics", {}))
                )
                result.outcomes.append(outcome)
                if on_episode is not None:
                    on_episode(outcome, info)
                if progress is not None:
                    progress(outcome)
    finally:
        env.close()
    result.wall_s = time.monotonic() - start
    return result


# --- the Panda tasks: ManipulationEnv --------------------------------------------------------
class RuntimeController:
    """A policy runtime's joint targets as the ActionChunk ManipulationEnv executes."""

    def __init__(self, runtime: Any) -> None:
        out = runtime.manifest["outputs"]
        self.runtime, self.names, self.dt = runtime, tuple(out["joint_names"]), float(out["dt"])

    def reset(self, info: dict[str, Any]) -> None:
        self.runtime.reset()

    def act(self, obs: dict[str, Any]) -> ActionChunk:
        return ActionChunk.uniform(self.names, self.runtime.act(obs), self.dt, stamp=obs["time"])


class ExpertController:
    """The task's scripted expert on the privileged object pose."""

    def __init__(self, profile: RobotProfile, task: str) -> None:
        from dexstack.sim.experts import EXPERTS

        self.expert = EXPERTS[task](profile)

    def reset(self, info: dict[str, Any]) -> None:
        self.expert.reset()

    def act(self, obs: dict[str, Any]) -> ActionChunk:
        pose = obs["object_pose"]
        return self.expert.act(obs["time"], obs[contract.JOINT_POSITIONS], pose[:3], pose[3:])


def manipulation_in_process(
    policy_dir: Path, manifest: dict[str, Any], *, task: str, profile: RobotProfile
) -> InProcess:
    """The default `in_process` entry: the runtime the policy node serves (`load_runtime`) in
    ManipulationEnv."""
    from dexstack.runtime import load_runtime
    from dexstack.sim.env import ManipulationEnv

    runtime = load_runtime(policy_dir, manifest, profile=profile)
    return InProcess(ManipulationEnv(task=task), RuntimeController(runtime))


def panda_expert(task: str, profile: RobotProfile) -> InProcess:
    """The Panda tasks' `expert` entry: the scripted expert in ManipulationEnv."""
    from dexstack.sim.env import ManipulationEnv

    return InProcess(ManipulationEnv(task=task), ExpertController(profile, task), timed=False)
