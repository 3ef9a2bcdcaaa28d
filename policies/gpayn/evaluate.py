"""G-PAYN's side of the evaluator (`sim/evaluate.py`): GraspEnv, the training env, behind the
evaluator's env protocol, and the controllers that act in it, so `dexstack eval --task grasp`, the
trainer and the experiments all run the evaluator's one episode loop:
- a trained actor in torch (`TorchPolicy`: frozen encoder + SAC, deterministic action), as the
  trainer evaluates it during training;
- the exported policy through the serving runtime (`runtime.Runtime`, numpy + onnxruntime), which
  takes GraspEnv's observation dict as it is (its input names are the env's keys): the family's
  `in_process` entry (`in_process`);
- `ScriptedGraspDemo` (sim/experts/grasp.py), the open-loop approach-close-lift controller that
  makes the demonstrations: the grasp task's `expert` entry (`scripted_in_process`).
Same placements for all (episode k of an object is `GraspEnv.reset(seed=seed + k)`), same success
test (the env's 10 cm lift), same time to lift (the task's `episode_metrics`: sim time from the
policy taking over to the lift).

    python -m dexstack.policies.gpayn.evaluate --run RUN --episodes 50 [--objects held_out]
    python -m dexstack.policies.gpayn.evaluate --onnx EXPORT_DIR --episodes 50
    python -m dexstack.policies.gpayn.evaluate --scripted --episodes 50

Each prints one JSON line: {"controller", "objects": {name: {success_rate, mean_time_to_lift_s,
mean_return, episodes}}, "success_rate" (mean over objects), ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dexstack.hardware.profiles import RobotProfile
from dexstack.policies.gpayn.env import CONTROL_HZ, TRAIN_OBJECTS, GraspEnv
from dexstack.sim.evaluate import EpisodeOutcome, InProcess, run_episodes
from dexstack.sim.experts.grasp import ScriptedGraspDemo
from dexstack.sim.tasks.grasp import DEFAULT_EVAL_SEED, GraspTask, resolve_objects


class TorchPolicy:
    """A trained SAC actor (+ its frozen image encoder) acting deterministically on GraspEnv
    observations. `render` / `image_size` say which env it was trained in (evaluation uses the same)."""

    def __init__(
        self,
        sac: Any,
        encoder: Any | None = None,
        *,
        render: bool = True,
        image_size: tuple[int, int] = (64, 64),
        visual_key: str = "visual",
    ) -> None:
        if (visual_key in sac.spec) != (encoder is not None):
            raise ValueError(
                f"the SAC spec {'has' if visual_key in sac.spec else 'lacks'} {visual_key!r}: "
                f"{'pass' if visual_key in sac.spec else 'do not pass'} an image encoder"
            )
        self.sac, self.encoder, self.visual_key = sac, encoder, visual_key
        self.render, self.image_size = render, (int(image_size[0]), int(image_size[1]))

    def reset(self) -> None:
        """The actor sees only the current observation: nothing to forget."""

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        obs = {key: np.asarray(observation[key], np.float32) for key in self.sac.spec if key != self.visual_key}
        if self.encoder is not None:
            from dexstack.policies.gpayn.encoder import encode_images

            obs[self.visual_key] = encode_images(self.encoder, np.asarray(observation["image"])[None])[0]
        return self.sac.act(obs, deterministic=True)


def load_policy(run_dir: str | Path, device: str = "cpu") -> tuple[TorchPolicy, Any]:
    """The run's latest actor (and frozen encoder) as a TorchPolicy, with the run's config
    (`config.GPAYNConfig`). Imports torch (here, not at module level: evaluating an exported
    policy needs none)."""
    import torch

    from dexstack.policies.gpayn.config import CHECKPOINT, ENCODER_FILE, GPAYNConfig
    from dexstack.policies.gpayn.encoder import load_frozen_encoder
    from dexstack.policies.gpayn.sac import SAC

    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {CHECKPOINT}; train first (python -m dexstack.policies.gpayn.train --out {run_dir})"
        )
    config = GPAYNConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    checkpoint = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)
    sac = SAC.from_state_dict(checkpoint["sac"], device=device)
    encoder = load_frozen_encoder(run_dir / ENCODER_FILE, device) if config.render else None
    return TorchPolicy(sac, encoder, render=config.render, image_size=config.image_size), config


class GraspEvalEnv:
    """GraspEnv behind the evaluator's env protocol: `reset(seed, {"object": name})` resets the
    GraspEnv of that object (made when the object changes, the previous one closed; `envs`: ones
    to reuse, e.g. the trainer's, never closed here). info["sim_s"] is the policy's time (steps of
    1 / CONTROL_HZ), and at the episode's end info["metrics"] is the task's `episode_metrics` and
    info["episode_return"] the summed reward."""

    def __init__(
        self,
        *,
        render: bool = True,
        image_size: tuple[int, int] = (64, 64),
        max_episode_steps: int | None = None,
        envs: dict[str, GraspEnv] | None = None,
    ) -> None:
        self.kwargs: dict[str, Any] = {"render": render, "image_size": tuple(image_size)}
        if max_episode_steps is not None:
            self.kwargs["max_episode_steps"] = max_episode_steps
        self.shared = envs or {}
        self.env: GraspEnv | None = None
        self.object_name: str | None = None
        self._return = 0.0

    def reset(self, seed: int, options: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        name = (options or {}).get("object")
        if name is None:
            raise ValueError("GraspEvalEnv.reset needs options={'object': name}")
        if name != self.object_name:
            self._close_own()
            self.env = self.shared.get(name) or GraspEnv(name, **self.kwargs)
            self.object_name = name
        self._return = 0.0
        return self.env.reset(seed=seed)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += reward
        info["sim_s"] = info["steps"] / CONTROL_HZ
        if terminated or truncated:
            info["metrics"] = GraspTask.episode_metrics(bool(info["success"]), info["sim_s"])
            info["episode_return"] = self._return
        return obs, reward, terminated, truncated, info

    def frame(self, obs: dict[str, Any]) -> np.ndarray | None:
        """The policy's camera image (None without rendering)."""
        return obs.get("image")

    def _close_own(self) -> None:
        if self.env is not None and self.object_name not in self.shared:
            self.env.close()
        self.env = None

    def close(self) -> None:
        self._close_own()
        self.object_name = None


class ActorController:
    """An actor (TorchPolicy, a gpayn `Runtime`, anything with `act(observation)` and maybe
    `reset()`) behind the evaluator's controller protocol."""

    def __init__(self, policy: Any) -> None:
        if not callable(getattr(policy, "act", None)):
            raise TypeError(
                f"policy must have act(observation) (a TorchPolicy, a gpayn Runtime or a "
                f"ScriptedGraspDemo), got {type(policy).__name__}"
            )
        self.policy = policy

    def reset(self, info: dict[str, Any]) -> None:
        if callable(getattr(self.policy, "reset", None)):
            self.policy.reset()

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return self.policy.act(observation)


class ScriptedController:
    """ScriptedGraspDemo, planned from the reset info, behind the controller protocol."""

    def __init__(self, controller: ScriptedGraspDemo | None = None) -> None:
        self.controller = controller or ScriptedGraspDemo()

    def reset(self, info: dict[str, Any]) -> None:
        self.controller.reset(info)

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return self.controller.act()


def _setup(
    policy: Any,
    *,
    render: bool | None = None,
    image_size: tuple[int, int] | None = None,
    max_episode_steps: int | None = None,
    envs: dict[str, GraspEnv] | None = None,
) -> InProcess:
    """GraspEvalEnv (camera settings: by default what the policy was made for) and the policy's controller."""
    if isinstance(policy, ScriptedGraspDemo):
        controller: ScriptedController | ActorController = ScriptedController(policy)
    else:
        controller = ActorController(policy)
    default_render, default_size = policy_env_settings(policy)
    env = GraspEvalEnv(
        render=default_render if render is None else bool(render),
        image_size=default_size if image_size is None else image_size,
        max_episode_steps=max_episode_steps,
        envs=envs,
    )
    return InProcess(env, controller, timed=not isinstance(policy, ScriptedGraspDemo))


def in_process(policy_dir: Path, manifest: dict[str, Any], *, task: str, profile: RobotProfile) -> InProcess:
    """The gpayn family's `in_process` entry: the exported actor as the serving code loads it
    (`runtime.Runtime`: onnxruntime, no torch) in GraspEnv."""
    from dexstack.policies.gpayn.runtime import Runtime

    if task != GraspTask.name:
        raise ValueError(f"a gpayn policy runs on --task {GraspTask.name}, not --task {task}")
    return _setup(Runtime(policy_dir, manifest))


def scripted_in_process(task: str, profile: RobotProfile) -> InProcess:
    """The grasp task's `expert` entry: ScriptedGraspDemo in GraspEnv (camera-planned grasps)."""
    return _setup(ScriptedGraspDemo())


def policy_env_settings(policy: Any) -> tuple[bool, tuple[int, int]]:
    """(render, image_size (width, height)) of the env a policy was made for: a TorchPolicy says so,
    a runtime's manifest has an rgb input (H, W, 3) or none (then no camera), the scripted
    controller uses the camera-planned grasp (render on) and ignores the image."""
    if isinstance(policy, TorchPolicy):
        return policy.render, policy.image_size
    manifest = getattr(policy, "manifest", None)
    if isinstance(manifest, dict):
        rgb = [spec for spec in manifest.get("inputs", []) if spec.get("kind") == "rgb"]
        if rgb:
            height, width = rgb[0]["shape"][:2]
            return True, (int(width), int(height))
        return False, (64, 64)
    return True, (64, 64)


def _check_objects(objects: Any) -> tuple[str, ...]:
    if isinstance(objects, str) or not objects:
        raise ValueError(f"objects must be a non-empty sequence of object names, got {objects!r}")
    return tuple(objects)


def evaluate_policy(
    policy: Any,
    objects: tuple[str, ...] | list[str] = TRAIN_OBJECTS,
    episodes_per_object: int = 50,
    seed: int = DEFAULT_EVAL_SEED,
    *,
    render: bool | None = None,
    image_size: tuple[int, int] | None = None,
    max_episode_steps: int | None = None,
    envs: dict[str, GraspEnv] | None = None,
    on_episode: Callable[[str, int, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """The evaluator's loop (`sim/evaluate.run_episodes`) over `objects`, `episodes_per_object`
    each; episode k of every object starts from `reset(seed=seed + k)`. Returns {object:
    {"success_rate", "mean_time_to_lift_s" (None without a success), "mean_return", "mean_steps",
    "episodes"}}.

    policy: a TorchPolicy, a gpayn `Runtime` (exported policy) or a ScriptedGraspDemo.
    render / image_size: the env's camera; by default what the policy was made for
    (`policy_env_settings`). envs: GraspEnvs to reuse ({object: env}, e.g. the trainer's); they
    are not closed here. Envs created here are closed before returning.
    on_episode(object, seed, outcome) after every episode; outcome: {"success", "time_to_lift_s"
    (None without a lift), "steps", "return"}."""
    setup = _setup(policy, render=render, image_size=image_size, max_episode_steps=max_episode_steps, envs=envs)
    objects = _check_objects(objects)
    if isinstance(episodes_per_object, bool) or not isinstance(episodes_per_object, int) or episodes_per_object < 1:
        raise ValueError(f"episodes_per_object must be a positive int, got {episodes_per_object!r}")
    episodes: dict[str, list[dict[str, Any]]] = {name: [] for name in objects}

    def record(outcome: EpisodeOutcome, info: dict[str, Any]) -> None:
        row = {
            "success": outcome.success,
            "time_to_lift_s": outcome.metrics["time_to_lift_s"],
            "steps": info["steps"],
            "return": info["episode_return"],
        }
        episodes[outcome.group].append(row)
        if on_episode is not None:
            on_episode(outcome.group, outcome.seed, row)

    run_episodes(setup, [(name, {"object": name}) for name in objects], episodes_per_object, seed, on_episode=record)
    results: dict[str, dict[str, Any]] = {}
    for name, rows in episodes.items():
        times = [r["time_to_lift_s"] for r in rows if r["success"]]
        results[name] = {
            "success_rate": sum(r["success"] for r in rows) / episodes_per_object,
            "mean_time_to_lift_s": float(np.mean(times)) if times else None,
            "mean_return": float(np.mean([r["return"] for r in rows])),
            "mean_steps": float(np.mean([r["steps"] for r in rows])),
            "episodes": episodes_per_object,
        }
    return results


def evaluate_scripted(
    objects: tuple[str, ...] | list[str] = TRAIN_OBJECTS,
    episodes_per_object: int = 50,
    seed: int = DEFAULT_EVAL_SEED,
    *,
    render: bool = True,
    image_size: tuple[int, int] = (64, 64),
) -> dict[str, dict[str, Any]]:
    """`evaluate_policy` of the scripted controller (camera-planned grasps by default)."""
    return evaluate_policy(
        ScriptedGraspDemo(), objects, episodes_per_object, seed, render=render, image_size=image_size
    )


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over objects: success rate, return and time-to-lift (over objects with a success)."""
    times = [r["mean_time_to_lift_s"] for r in results.values() if r["mean_time_to_lift_s"] is not None]
    return {
        "success_rate": float(np.mean([r["success_rate"] for r in results.values()])),
        "mean_return": float(np.mean([r["mean_return"] for r in results.values()])),
        "mean_time_to_lift_s": float(np.mean(times)) if times else None,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: evaluate a run (torch), an export (onnxruntime) or the scripted controller; prints one
    JSON line. Returns the exit code."""
    parser = argparse.ArgumentParser(description="Evaluate a G-PAYN policy or the scripted controller.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", type=Path, help="training run directory (its final actor, in torch)")
    what.add_argument("--onnx", type=Path, help="exported policy directory (actor.onnx + manifest.json)")
    what.add_argument("--scripted", action="store_true", help="the scripted approach-close-lift controller")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per object (default 50)")
    parser.add_argument(
        "--objects",
        help="'train', 'held_out', 'validation' or comma-separated names "
        "(default: the run's training objects, else train)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="seed of episode 0 of each object")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    t0 = time.perf_counter()
    try:
        if args.run is not None:
            policy, config = load_policy(args.run)
            objects, label = resolve_objects(args.objects, tuple(config.objects)), f"run:{args.run}"
        elif args.onnx is not None:
            from dexstack.policies.gpayn.runtime import Runtime

            manifest_path = args.onnx / "manifest.json"
            if not manifest_path.is_file():
                raise FileNotFoundError(f"{args.onnx} has no manifest.json (not an exported policy)")
            policy = Runtime(args.onnx, json.loads(manifest_path.read_text()))
            objects, label = resolve_objects(args.objects, TRAIN_OBJECTS), f"onnx:{args.onnx}"
        else:
            policy, objects, label = ScriptedGraspDemo(), resolve_objects(args.objects, TRAIN_OBJECTS), "scripted"
        results = evaluate_policy(policy, objects, args.episodes, args.seed)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(results)
    line = {
        "controller": label,
        "episodes_per_object": args.episodes,
        "seed": args.seed,
        **summary,
        "objects": results,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
