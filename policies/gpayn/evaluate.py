"""Evaluate a grasping controller on objects: success rate and mean time-to-lift per object.

One loop serves three kinds of controller, so the results table (G-PAYN vs SAC from scratch vs
the scripted controller) compares like with like: same env, same placements (episode k of an
object is `GraspEnv.reset(seed=seed + k)` for every controller), same success test (the env's
10 cm lift):
- a trained actor in torch (`TorchPolicy`: frozen encoder + SAC, deterministic action), as the
  trainer evaluates it during training;
- the exported policy through the serving runtime (`runtime.Runtime`, numpy + onnxruntime), which
  takes GraspEnv's observation dict as it is (its input names are the env's keys);
- `ScriptedGraspDemo`, the open-loop approach-close-lift controller that makes the demonstrations.

Time to lift is sim time from the policy taking over (open hand at the pre-grasp pose) to the
step that reaches the 10 cm lift, averaged over the successful episodes (None when none succeed).

    python -m dexstack.policies.gpayn.evaluate --run RUN --episodes 50 [--objects held_out]
    python -m dexstack.policies.gpayn.evaluate --onnx EXPORT_DIR --episodes 50
    python -m dexstack.policies.gpayn.evaluate --scripted --episodes 50

Each prints one JSON line: {"controller", "objects": {name: {success_rate, mean_time_to_lift_s,
mean_return, episodes}}, "success_rate" (mean over objects), ...}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dexstack.policies.gpayn.demos import ScriptedGraspDemo
from dexstack.policies.gpayn.env import CONTROL_HZ, HELD_OUT_OBJECTS, TRAIN_OBJECTS, VALIDATION_OBJECTS, GraspEnv

DEFAULT_EVAL_SEED = 2_000_000_000  # far from the trainer's training and demo seeds


class Policy(Protocol):
    """What `evaluate_policy` drives: `act(observation) -> action (11,)`; `reset()` if it has one."""

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray: ...


class TorchPolicy:
    """A trained SAC actor (+ its frozen image encoder) acting deterministically on GraspEnv
    observations. `render` / `image_size` say which env it was trained in (evaluation uses the same)."""

    def __init__(self, sac: Any, encoder: Any | None = None, *, render: bool = True,
                 image_size: tuple[int, int] = (64, 64), visual_key: str = "visual") -> None:
        if (visual_key in sac.spec) != (encoder is not None):
            raise ValueError(f"the SAC spec {'has' if visual_key in sac.spec else 'lacks'} {visual_key!r}: "
                             f"{'pass' if visual_key in sac.spec else 'do not pass'} an image encoder")
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
        raise FileNotFoundError(f"{run_dir} has no {CHECKPOINT}; train first "
                                f"(python -m dexstack.policies.gpayn.train --out {run_dir})")
    config = GPAYNConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    checkpoint = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)
    sac = SAC.from_state_dict(checkpoint["sac"], device=device)
    encoder = load_frozen_encoder(run_dir / ENCODER_FILE, device) if config.render else None
    return TorchPolicy(sac, encoder, render=config.render, image_size=config.image_size), config



class _Scripted:
    """ScriptedGraspDemo behind the `reset(info)` / `act(obs)` interface the loop uses."""

    def __init__(self, controller: ScriptedGraspDemo) -> None:
        self.controller = controller

    def reset(self, info: dict[str, Any]) -> None:
        self.controller.reset(info)

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return self.controller.act()


class _Generic:
    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def reset(self, info: dict[str, Any]) -> None:
        if callable(getattr(self.policy, "reset", None)):
            self.policy.reset()

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return self.policy.act(observation)


def _controller(policy: Any) -> _Scripted | _Generic:
    if isinstance(policy, ScriptedGraspDemo):
        return _Scripted(policy)
    if not callable(getattr(policy, "act", None)):
        raise TypeError(f"policy must have act(observation) (a TorchPolicy, a gpayn Runtime or a "
                        f"ScriptedGraspDemo), got {type(policy).__name__}")
    return _Generic(policy)


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


def evaluate_policy(policy: Any, objects: tuple[str, ...] | list[str] = TRAIN_OBJECTS, episodes_per_object: int = 50,
                    seed: int = DEFAULT_EVAL_SEED, *, render: bool | None = None,
                    image_size: tuple[int, int] | None = None, max_episode_steps: int | None = None,
                    envs: dict[str, GraspEnv] | None = None,
                    on_episode: Callable[[str, int, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run `episodes_per_object` episodes per object; episode k of every object starts from
    `reset(seed=seed + k)`. Returns {object: {"success_rate", "mean_time_to_lift_s" (None without a
    success), "mean_return", "mean_steps", "episodes"}}.

    policy: a TorchPolicy, a gpayn `Runtime` (exported policy) or a ScriptedGraspDemo.
    render / image_size: the env's camera; by default what the policy was made for
    (`policy_env_settings`). envs: GraspEnvs to reuse ({object: env}, e.g. the trainer's); they
    are not closed here. Envs created here are closed before returning.
    on_episode(object, seed, outcome) after every episode; outcome: {"success", "time_to_lift_s"
    (None without a lift), "steps", "return"}."""
    controller = _controller(policy)
    objects = _check_objects(objects)
    if isinstance(episodes_per_object, bool) or not isinstance(episodes_per_object, int) or episodes_per_object < 1:
        raise ValueError(f"episodes_per_object must be a positive int, got {episodes_per_object!r}")
    default_render, default_size = policy_env_settings(policy)
    render = default_render if render is None else bool(render)
    image_size = default_size if image_size is None else image_size
    env_kwargs: dict[str, Any] = {"render": render, "image_size": tuple(image_size)}
    if max_episode_steps is not None:
        env_kwargs["max_episode_steps"] = max_episode_steps
    shared = envs or {}
    results: dict[str, dict[str, Any]] = {}
    for name in objects:
        env = shared.get(name) or GraspEnv(name, **env_kwargs)
        try:
            successes, times, returns, lengths = 0, [], [], []
            for k in range(episodes_per_object):
                obs, info = env.reset(seed=seed + k)
                controller.reset(info)
                total, done, steps, success = 0.0, False, 0, False
                while not done:
                    obs, reward, terminated, truncated, step_info = env.step(controller.act(obs))
                    total += reward
                    steps += 1
                    success = success or bool(step_info["success"])
                    done = terminated or truncated
                successes += success
                if success:
                    times.append(steps / CONTROL_HZ)
                returns.append(total)
                lengths.append(steps)
                if on_episode is not None:
                    on_episode(name, seed + k, {"success": success, "time_to_lift_s": steps / CONTROL_HZ if success
                                                else None, "steps": steps, "return": total})
        finally:
            if name not in shared:
                env.close()
        results[name] = {"success_rate": successes / episodes_per_object,
                         "mean_time_to_lift_s": float(np.mean(times)) if times else None,
                         "mean_return": float(np.mean(returns)), "mean_steps": float(np.mean(lengths)),
                         "episodes": episodes_per_object}
    return results


def evaluate_scripted(objects: tuple[str, ...] | list[str] = TRAIN_OBJECTS, episodes_per_object: int = 50,
                      seed: int = DEFAULT_EVAL_SEED, *, render: bool = True,
                      image_size: tuple[int, int] = (64, 64)) -> dict[str, dict[str, Any]]:
    """`evaluate_policy` of the scripted controller (camera-planned grasps by default)."""
    return evaluate_policy(ScriptedGraspDemo(), objects, episodes_per_object, seed, render=render,
                           image_size=image_size)


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over objects: success rate, return and time-to-lift (over objects with a success)."""
    times = [r["mean_time_to_lift_s"] for r in results.values() if r["mean_time_to_lift_s"] is not None]
    return {"success_rate": float(np.mean([r["success_rate"] for r in results.values()])),
            "mean_return": float(np.mean([r["mean_return"] for r in results.values()])),
            "mean_time_to_lift_s": float(np.mean(times)) if times else None}


def compare_outcomes(first: dict[str, Any], second: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Paired comparison of two evaluations of the same seeds (e.g. in-process vs through ROS):
    `first` / `second` are `dexstack eval --task grasp` summaries (their "objects" with "seeds" and
    "outcomes"). Per object shared by both, over the seeds both ran: success counts, the episodes
    where they disagree (only_first, only_second) and McNemar's exact two-sided p-value (binomial
    test of the disagreements; 1.0 without any), and the same pooled over objects under "all".
    ValueError when the summaries share no object or an object shares no seed."""
    shared = [name for name in first.get("objects", {}) if name in second.get("objects", {})]
    if not shared:
        raise ValueError("the two evaluations share no object")
    out: dict[str, dict[str, Any]] = {}
    totals = {"episodes": 0, "first": 0, "second": 0, "only_first": 0, "only_second": 0}
    for name in shared:
        a = dict(zip(first["objects"][name]["seeds"], first["objects"][name]["outcomes"], strict=True))
        b = dict(zip(second["objects"][name]["seeds"], second["objects"][name]["outcomes"], strict=True))
        seeds = sorted(set(a) & set(b))
        if not seeds:
            raise ValueError(f"{name}: the two evaluations share no seed")
        row = {"episodes": len(seeds), "first": sum(a[s] for s in seeds), "second": sum(b[s] for s in seeds),
               "only_first": sum(a[s] and not b[s] for s in seeds), "only_second": sum(b[s] and not a[s] for s in seeds)}
        out[name] = row | {"p_value": _mcnemar_exact(row["only_first"], row["only_second"])}
        totals = {key: totals[key] + row[key] for key in totals}
    out["all"] = totals | {"p_value": _mcnemar_exact(totals["only_first"], totals["only_second"])}
    return out


def _mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(a Binomial(b + c, 1/2) is at least as far from its mean)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def resolve_objects(text: str | None, default: tuple[str, ...] = TRAIN_OBJECTS) -> tuple[str, ...]:
    """'train', 'held_out', 'validation' or comma-separated object names -> names (None:
    `default`). ValueError for an empty list or a name that is not in the sim's object catalogue."""
    from dexstack.sim.objects import CATALOG

    sets = {"train": TRAIN_OBJECTS, "held_out": HELD_OUT_OBJECTS, "validation": VALIDATION_OBJECTS}
    if text is None:
        return default
    if not isinstance(text, str):
        raise TypeError(f"objects must be a string ({', '.join(sets)} or a,b,...), got {type(text).__name__}")
    if text in sets:
        return sets[text]
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError(f"no object named in {text!r}; give {', '.join(sets)} or comma-separated names")
    unknown = [name for name in names if name not in CATALOG]
    if unknown:
        raise ValueError(f"unknown object(s) {unknown}; known: {', '.join(sets)}, {sorted(CATALOG)}")
    return names



def main(argv: list[str] | None = None) -> int:
    """CLI: evaluate a run (torch), an export (onnxruntime) or the scripted controller; prints one
    JSON line. Returns the exit code."""
    parser = argparse.ArgumentParser(description="Evaluate a G-PAYN policy or the scripted controller.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", type=Path, help="training run directory (its final actor, in torch)")
    what.add_argument("--onnx", type=Path, help="exported policy directory (actor.onnx + manifest.json)")
    what.add_argument("--scripted", action="store_true", help="the scripted approach-close-lift controller")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per object (default 50)")
    parser.add_argument("--objects", help="'train', 'held_out', 'validation' or comma-separated names "
                                          "(default: the run's training objects, else train)")
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
    line = {"controller": label, "episodes_per_object": args.episodes, "seed": args.seed, **summary,
            "objects": results, "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
