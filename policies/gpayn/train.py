"""Train G-PAYN: SAC on the grasping env, its replay buffer pre-filled with scripted demonstrations.

    python -m dexstack.policies.gpayn.train --out RUN [--steps N] [--demos K] [--seed S] [--resume]

Reads top to bottom: frame collection + encoder pretraining (`pretrain`), demo prefill, the loop
(`train`), checkpoints, the learning curve, the CLI. The settings are `config.GPAYNConfig`; a run
is loaded by `evaluate.load_policy` and exported by `export.export_run`.

Design:
- **Frozen encoder.** With the camera on, `pretrain` collects frames (64x64 RGB and the object's
  segmentation mask at the same size) from GraspEnv rollouts on `pretrain_objects` (default: the
  training objects), with the scripted controller plus action noise and with random actions,
  pretrains `encoder.ImageEncoder` as an autoencoder with the mask channel and saves it in the run
  (`encoder.pt`, `frames.npz`). The trainer then only ever encodes: each env step's image becomes
  the `visual` key once, and the replay buffer stores vectors, never images (20k transitions are
  ~18 MB, not ~500 MB).
- **Same code path with and without demos.** `demo_episodes` scripted episodes (round robin over
  the objects, failures kept) go into the buffer before the first update, and the observation
  normaliser starts from their statistics. `demo_episodes = 0` is SAC from scratch: the same loop
  and the same env-step budget (demo steps are not counted in it, as in G-PAYN), starting with
  `random_steps` of uniform random actions before the first update, as SAC does.
- **The loop.** VectorGraspEnv steps with the actor's stochastic actions; every transition goes
  into the buffer (time-limit truncations bootstrap, terminal states do not); `utd_ratio` SAC
  updates per env step; the normaliser keeps learning from new states until `normalizer_steps`,
  then freezes (so late updates see fixed input scales). Every `eval_interval` env steps the
  deterministic actor is evaluated on every object (same placements at every evaluation and in
  every run: `evaluate.DEFAULT_EVAL_SEED`), which gives `history.json` and `learning_curve.png`.
- **Exact resume.** A checkpoint (every `checkpoint_interval` env steps) holds the SAC state (with
  its sampling generator and optimisers), the replay buffer (`replay-<step>.npz`, named in the
  checkpoint, so a crash between the two writes cannot pair a buffer with the wrong state), the
  trainer's numpy generator, counters and history. The env's physics is not saved: instead every
  checkpoint ends a *segment*: the running episodes stop there (their last transitions are stored
  as not terminal, so SAC bootstraps through them like a time limit) and all envs restart with
  seeds derived from (seed, segment). A resumed run therefore repeats exactly what the
  uninterrupted run does at that step (tested bit for bit), at the cost of cutting about one
  episode per env per checkpoint; cut episodes are left out of the training statistics.
- **Devices.** `device = "auto"` puts SAC and the encoder on a GPU when there is one; the env and
  the buffer stay numpy. On CPU `torch_threads = 1`: SAC's 256-wide MLPs at batch 256 gain nothing
  from more threads and slow down a lot on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dexstack.policies.common import runs
from dexstack.policies.gpayn.action import ACTION_DIM, ACTION_NAMES
from dexstack.policies.gpayn.config import CHECKPOINT, ENCODER_FILE, FRAMES_FILE, VISUAL_KEY, GPAYNConfig
from dexstack.policies.gpayn.demos import ScriptedGraspDemo, prefill
from dexstack.policies.gpayn.encoder import encode_images, encoder_hash, load_frozen_encoder, pretrain_encoder
from dexstack.policies.gpayn.env import MAX_EPISODE_STEPS, GraspEnv, VectorGraspEnv
from dexstack.policies.gpayn.evaluate import DEFAULT_EVAL_SEED, TorchPolicy, evaluate_policy, summarize
from dexstack.policies.gpayn.replay import ReplayBuffer
from dexstack.policies.gpayn.sac import SAC, default_device, vector_spec

FAMILY = "gpayn"


def resolve_device(name: str) -> torch.device:
    return default_device() if name == "auto" else torch.device(name)


def derived_seed(*keys: int | str) -> int:
    """A 31-bit seed from a tuple of keys (run seed, purpose, index): independent streams per purpose."""
    words = [k if isinstance(k, int) else int.from_bytes(k.encode()[:8].ljust(8, b"\0"), "little") for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1)[0] >> 1) // 1000 * 1000  # env i adds i


# --- frames and the frozen encoder ---------------------------------------------------------------


class ObjectMaskRenderer:
    """The object's segmentation mask from the scene camera at the env's image size (the env's own
    mask is at its 160x120 fitting size): the target of the encoder's mask channel."""

    def __init__(self, env: GraspEnv) -> None:
        import mujoco

        model = env.sim.model
        width, height = env.image_size
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        self._renderer.enable_segmentation_rendering()
        self._geom_type = int(mujoco.mjtObj.mjOBJ_GEOM)
        self._object_geoms = np.flatnonzero(model.geom_bodyid == model.body(env.sim.names.object_body).id)
        self._camera = model.camera(env.sim.names.camera).id

    def __call__(self, data: Any) -> np.ndarray:
        self._renderer.update_scene(data, camera=self._camera)
        seg = self._renderer.render()
        return (seg[..., 1] == self._geom_type) & np.isin(seg[..., 0], self._object_geoms)

    def close(self) -> None:
        self._renderer.close()


def collect_frames(
    objects: tuple[str, ...],
    n_frames: int,
    seed: int,
    image_size: tuple[int, int] = (64, 64),
    max_episode_steps: int = MAX_EPISODE_STEPS,
    noise: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """`n_frames` images (N, H, W, 3) uint8 and object masks (N, H, W) bool from GraspEnv episodes,
    round robin over `objects`: even episodes run the scripted grasp with Gaussian action noise
    (`noise` std; frames of the hand closing on and lifting the object), odd ones random actions.
    Every observation of an episode is kept, the reset one included."""
    if not objects:
        raise ValueError("collect_frames needs at least one object")
    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")
    width, height = image_size
    images = np.empty((n_frames, height, width, 3), np.uint8)
    masks = np.empty((n_frames, height, width), bool)
    rng = np.random.default_rng(seed)
    envs: dict[str, tuple[GraspEnv, ObjectMaskRenderer]] = {}
    count, episode = 0, 0
    try:
        while count < n_frames:
            name = objects[episode % len(objects)]
            if name not in envs:
                env = GraspEnv(name, render=True, image_size=image_size, max_episode_steps=max_episode_steps)
                envs[name] = (env, ObjectMaskRenderer(env))
            env, mask_of = envs[name]
            obs, info = env.reset(seed=seed + episode)
            scripted = ScriptedGraspDemo() if episode % 2 == 0 else None
            if scripted is not None:
                scripted.reset(info)
            done = False
            while count < n_frames:
                images[count], masks[count] = obs["image"], mask_of(env.sim.data)
                count += 1
                if done:
                    break
                action = (
                    scripted.act() + noise * rng.standard_normal(ACTION_DIM)
                    if scripted is not None
                    else rng.uniform(-1.0, 1.0, ACTION_DIM)
                )
                obs, _, terminated, truncated, _ = env.step(np.clip(action, -1.0, 1.0))
                done = terminated or truncated
            episode += 1
    finally:
        for env, mask_of in envs.values():
            mask_of.close()
            env.close()
    return images, masks


def pretrain(run_dir: str | Path, config: GPAYNConfig, *, progress: bool = True) -> list[dict[str, float]]:
    """Collect `config.pretrain_frames` frames on `config.pretrain_objects` (None: the training
    objects), pretrain the image encoder for `config.pretrain_epochs` epochs and save it in the run
    (`encoder.pt`, the frames in `frames.npz`, the per-epoch losses in `encoder_history.json`).
    Returns that history."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)  # also when called on its own, not through train()
    try:
        return _pretrain(run_dir, config, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _pretrain(run_dir: Path, config: GPAYNConfig, progress: bool) -> list[dict[str, float]]:
    t0 = time.perf_counter()
    objects = config.pretrain_objects or config.objects
    if progress:
        print(
            f"gpayn pretrain: collecting {config.pretrain_frames} frames on {len(objects)} object(s)", file=sys.stderr
        )
    images, masks = collect_frames(
        objects,
        config.pretrain_frames,
        derived_seed(config.seed, "frames"),
        config.image_size,
        config.max_episode_steps,
    )
    collect_s = time.perf_counter() - t0
    tmp = run_dir / (FRAMES_FILE + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, images=images, masks=masks)
    tmp.replace(run_dir / FRAMES_FILE)
    history = pretrain_encoder(
        images,
        config.pretrain_epochs,
        config.seed,
        run_dir / ENCODER_FILE,
        masks=masks,
        feature_dim=config.feature_dim,
        device=resolve_device(config.device),
    )
    runs.write_json(
        run_dir / "encoder_history.json",
        {
            "frames": len(images),
            "collect_s": collect_s,
            "train_s": time.perf_counter() - t0 - collect_s,
            "history": history,
        },
    )
    if progress:
        first, last = history[0], history[-1]
        print(
            f"gpayn pretrain: val loss {first['val_loss']:.4f} -> {last['val_loss']:.4f} "
            f"({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
        )
    return history


class EncodedEnv:
    """A GraspEnv whose observations are the SAC vectors: its vector keys + the frozen encoder's
    features of the image as `visual` (what the replay buffer stores). For `demos.prefill`."""

    def __init__(self, env: GraspEnv, encoder: Any | None, spec: dict[str, int]) -> None:
        self.env, self.encoder, self.spec = env, encoder, spec

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        return self.vectors(obs), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.vectors(obs), reward, terminated, truncated, info

    def vectors(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            k: v[0]
            for k, v in observation_vectors(
                {k: np.asarray(v)[None] for k, v in obs.items()}, self.encoder, self.spec
            ).items()
        }


def observation_vectors(obs: dict[str, np.ndarray], encoder: Any | None, spec: dict[str, int]) -> dict[str, np.ndarray]:
    """Stacked env observations (B, ...) -> the SAC's vectors {key: (B, dim) float32}: the spec's
    vector keys, and the encoder's features of `image` as `visual`."""
    out = {key: np.asarray(obs[key], np.float32) for key in spec if key != VISUAL_KEY}
    if VISUAL_KEY in spec:
        out[VISUAL_KEY] = encode_images(encoder, np.asarray(obs["image"]))
    return out


def prefill_demos(
    buffer: ReplayBuffer, config: GPAYNConfig, encoder: Any | None, spec: dict[str, int]
) -> dict[str, Any]:
    """`config.demo_episodes` scripted episodes into `buffer`, round robin over the objects, every
    transition kept. Returns {"episodes", "transitions", "successes", "per_object": {...}}."""
    per_object: dict[str, dict[str, float]] = {}
    n_objects = len(config.objects)
    for j, name in enumerate(config.objects):
        count = config.demo_episodes // n_objects + (j < config.demo_episodes % n_objects)
        if count == 0:
            continue
        env = GraspEnv(
            name, render=config.render, image_size=config.image_size, max_episode_steps=config.max_episode_steps
        )
        try:
            per_object[name] = prefill(
                buffer, EncodedEnv(env, encoder, spec), count, seed=derived_seed(config.seed, "demos", j)
            )
        finally:
            env.close()
    return {
        "episodes": sum(s["episodes"] for s in per_object.values()),
        "transitions": sum(s["transitions"] for s in per_object.values()),
        "successes": sum(s["successes"] for s in per_object.values()),
        "per_object": per_object,
    }


# --- the loop ------------------------------------------------------------------------------------


def _open_run(run_dir: Path, config: GPAYNConfig | None, resume: bool, total_steps: int | None) -> GPAYNConfig:
    checkpoint = run_dir / CHECKPOINT
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"--resume: no {CHECKPOINT} in {run_dir}")
        if config is not None:
            raise ValueError("a resumed run keeps its own config; pass config=None (only total_steps may change)")
        config = GPAYNConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    else:
        if checkpoint.exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        config = config or GPAYNConfig()
        if not isinstance(config, GPAYNConfig):
            raise TypeError(f"config must be a GPAYNConfig, got {type(config).__name__}")
    if total_steps is not None:
        config = dataclasses.replace(config, total_steps=total_steps)
    return config


def _segment_seed(config: GPAYNConfig, segment: int) -> int:
    return derived_seed(config.seed, "train", segment)


def train(
    run_dir: str | Path,
    config: GPAYNConfig | None = None,
    *,
    resume: bool = False,
    total_steps: int | None = None,
    encoder_path: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train (or with `resume` continue) a G-PAYN run in `run_dir`; returns the history (one entry
    per evaluation, the first at step 0 before any update). `total_steps` overrides the config's
    budget (with `resume`: train further). `encoder_path`: an `encoder.pt` to use instead of
    pretraining one (copied into the run; e.g. the same encoder for G-PAYN and SAC from scratch)."""
    run_dir = Path(run_dir)
    config = _open_run(run_dir, config, resume, total_steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    try:
        return _train(run_dir, config, resume, encoder_path, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    run_dir: Path, config: GPAYNConfig, resume: bool, encoder_path: str | Path | None, progress: bool
) -> list[dict[str, Any]]:
    device = resolve_device(config.device)
    encoder = None
    if config.render:
        if encoder_path is not None and not resume:
            if not Path(encoder_path).is_file():
                raise FileNotFoundError(f"no encoder checkpoint at {encoder_path}")
            shutil.copyfile(encoder_path, run_dir / ENCODER_FILE)
        if not (run_dir / ENCODER_FILE).exists():
            pretrain(run_dir, config, progress=progress)
        encoder = load_frozen_encoder(run_dir / ENCODER_FILE, device)
        if tuple(encoder.image_hw) != (config.image_size[1], config.image_size[0]):
            raise ValueError(
                f"the encoder takes {encoder.image_hw} (H, W) images, the config renders {config.image_size} (W, H)"
            )
    runs.write_json(run_dir / "config.json", config.to_dict())

    env_kwargs = {
        "render": config.render,
        "image_size": config.image_size,
        "max_episode_steps": config.max_episode_steps,
    }
    venv = VectorGraspEnv(config.n_envs, config.objects, seed=0, **env_kwargs)
    eval_envs: dict[str, GraspEnv] = {}
    try:
        spec = vector_spec(venv.observation_spec(), encoder.feature_dim if encoder is not None else None, VISUAL_KEY)
        sac = SAC(spec, ACTION_DIM, config.sac, seed=config.seed, device=device)
        policy = TorchPolicy(sac, encoder, render=config.render, image_size=config.image_size)
        rng = np.random.default_rng(derived_seed(config.seed, "trainer"))
        if resume:
            checkpoint = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)
            sac.load_state_dict(checkpoint["sac"])
            buffer = ReplayBuffer.load(run_dir / checkpoint["replay_file"])
            if len(buffer) != checkpoint["buffer_size"]:
                raise ValueError(
                    f"{checkpoint['replay_file']} holds {len(buffer)} transitions, the checkpoint "
                    f"expects {checkpoint['buffer_size']}"
                )
            state = checkpoint["trainer"]
            rng.bit_generator.state = state["rng"]
        else:
            buffer = ReplayBuffer(config.buffer_capacity, {k: ((d,), np.float32) for k, d in spec.items()}, ACTION_DIM)
            t0 = time.perf_counter()
            demos = (
                prefill_demos(buffer, config, encoder, spec)
                if config.demo_episodes
                else {"episodes": 0, "transitions": 0, "successes": 0, "per_object": {}}
            )
            if len(buffer):  # the normaliser starts from the demonstrations' statistics
                sac.update_normalizer({k: buffer.obs[k][: len(buffer)] for k in spec})
                if config.demo_batch_fraction > 0:
                    buffer.keep_current()
            from dexstack.policies.common.training import code_commit

            runs.write_json(
                run_dir / "run.json",
                {
                    "family": FAMILY,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "code_commit": code_commit(),
                    "device": str(device),
                    "spec": spec,
                    "action_dim": ACTION_DIM,
                    "action_names": ACTION_NAMES,
                    "objects": list(config.objects),
                    "demos": demos,
                    "encoder_hash": encoder_hash(encoder) if encoder is not None else None,
                },
            )
            state = {
                "step": 0,
                "segment": 0,
                "update_credit": 0.0,
                "history": [],
                "episodes": [],
                "first_update": None,
                "demo_transitions": demos["transitions"],
                "timing": {
                    "demos_s": time.perf_counter() - t0,
                    "env_s": 0.0,
                    "update_s": 0.0,
                    "eval_s": 0.0,
                    "checkpoint_s": 0.0,
                    "wall_s": 0.0,
                },
            }
            state["history"].append(_evaluate(policy, config, state, eval_envs, {}))
        return _loop(run_dir, config, venv, encoder, spec, sac, policy, buffer, rng, state, eval_envs, progress)
    finally:
        venv.close()
        for env in eval_envs.values():
            env.close()


def _evaluate(
    policy: TorchPolicy,
    config: GPAYNConfig,
    state: dict[str, Any],
    eval_envs: dict[str, GraspEnv],
    losses: dict[str, list[float]],
) -> dict[str, Any]:
    """One history entry: the deterministic actor on every object, training episodes since the last
    entry, mean SAC losses since the last entry."""
    t0 = time.perf_counter()
    for name in config.objects:
        if name not in eval_envs:
            eval_envs[name] = GraspEnv(
                name, render=config.render, image_size=config.image_size, max_episode_steps=config.max_episode_steps
            )
    results = evaluate_policy(policy, config.objects, config.eval_episodes, DEFAULT_EVAL_SEED, envs=eval_envs)
    state["timing"]["eval_s"] += time.perf_counter() - t0
    last_step = state["history"][-1]["step"] if state["history"] else -1
    recent = [e for e in state["episodes"] if e["step"] > last_step]
    sac = policy.sac
    return {
        "step": state["step"],
        "updates": sac.updates,
        **summarize(results),
        "objects": results,
        "train_episodes": len(recent),
        "train_success_rate": float(np.mean([e["success"] for e in recent])) if recent else None,
        "train_return": float(np.mean([e["return"] for e in recent])) if recent else None,
        "alpha": sac.alpha,
        **{k: float(np.mean(v)) for k, v in losses.items() if v},
        "wall_s": state["timing"]["wall_s"],
    }


def _loop(
    run_dir: Path,
    config: GPAYNConfig,
    venv: VectorGraspEnv,
    encoder: Any | None,
    spec: dict[str, int],
    sac: SAC,
    policy: TorchPolicy,
    buffer: ReplayBuffer,
    rng: np.random.Generator,
    state: dict[str, Any],
    eval_envs: dict[str, GraspEnv],
    progress: bool,
) -> list[dict[str, Any]]:
    n = config.n_envs
    timing = state["timing"]
    learning_starts = 0 if config.demo_episodes else config.random_steps
    losses: dict[str, list[float]] = {}

    def start_segment() -> dict[str, np.ndarray]:
        obs, _ = venv.reset(seed=_segment_seed(config, state["segment"]))
        return observation_vectors(obs, encoder, spec)

    def crossed(before: int, interval: int) -> bool:
        return state["step"] // interval > before // interval

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]gpayn[/] {task.fields[label]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("eval success {task.fields[success]}  alpha {task.fields[alpha]:.3f}"),
        TimeRemainingColumn(),
    )
    last_eval = state["history"][-1]["success_rate"] if state["history"] else float("nan")
    session_start = time.perf_counter()
    wall_at_start = timing["wall_s"]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(
            "train",
            total=config.total_steps,
            completed=state["step"],
            success=f"{last_eval:.2f}",
            alpha=sac.alpha,
            label="demos" if config.demo_episodes else "scratch",
        )
        obs_vec = start_segment() if state["step"] < config.total_steps else None
        ep_return, ep_length = np.zeros(n), np.zeros(n, int)
        while state["step"] < config.total_steps:
            t0 = time.perf_counter()
            if state["step"] < learning_starts:
                actions = rng.uniform(-1.0, 1.0, (n, ACTION_DIM)).astype(np.float32)
            else:
                actions = sac.act(obs_vec)
            next_obs, rewards, terminated, truncated, infos = venv.step(actions)
            next_vec = observation_vectors(next_obs, encoder, spec)
            stored_next = {k: v.copy() for k, v in next_vec.items()}
            done = np.flatnonzero(terminated | truncated)
            if len(done):  # what the finished episodes ended in, not the new episodes' first observation
                finals = {k: np.stack([infos[i]["final_observation"][k] for i in done]) for k in next_obs}
                for k, v in observation_vectors(finals, encoder, spec).items():
                    stored_next[k][done] = v
            buffer.add_batch(obs_vec, actions, rewards, stored_next, terminated, truncated)
            if state["step"] < config.normalizer_steps:
                sac.update_normalizer(obs_vec)
            ep_return += rewards
            ep_length += 1
            for i in done:
                state["episodes"].append(
                    {
                        "step": state["step"] + n,
                        "object": venv.envs[i].object_name,
                        "return": float(ep_return[i]),
                        "length": int(ep_length[i]),
                        "success": bool(infos[i]["final_info"]["success"]),
                    }
                )
                ep_return[i], ep_length[i] = 0.0, 0
            before = state["step"]
            state["step"] += n
            if state["step"] >= config.normalizer_steps:
                sac.freeze_normalizer()
            t1 = time.perf_counter()
            timing["env_s"] += t1 - t0
            if state["step"] >= learning_starts and len(buffer) >= config.batch_size:
                if state["first_update"] is None:
                    state["first_update"] = {
                        "step": state["step"],
                        "buffer_size": len(buffer),
                        "demo_transitions": state["demo_transitions"],
                    }
                state["update_credit"] += config.utd_ratio * n
                while state["update_credit"] >= 1.0:
                    metrics = sac.update(buffer.sample(config.batch_size, rng, config.demo_batch_fraction))
                    for key in ("critic_loss", "actor_loss", "bc_loss", "entropy", "q_mean"):
                        losses.setdefault(key, []).append(metrics[key])
                    state["update_credit"] -= 1.0
            timing["update_s"] += time.perf_counter() - t1
            obs_vec = next_vec
            finished = state["step"] >= config.total_steps
            timing["wall_s"] = wall_at_start + time.perf_counter() - session_start
            if crossed(before, config.eval_interval) or finished:
                entry = _evaluate(policy, config, state, eval_envs, losses)
                state["history"].append(entry)
                losses = {}
                last_eval = entry["success_rate"]
                if progress:
                    bar.console.print(
                        f"step {state['step']}: eval success {entry['success_rate']:.2f} "
                        f"return {entry['mean_return']:.2f}, training episodes {entry['train_episodes']} "
                        f"(success {_fmt(entry['train_success_rate'])}), alpha {sac.alpha:.3f}"
                    )
            if crossed(before, config.checkpoint_interval) or finished:
                # A segment ends: save, then restart every env from the next segment's seeds.
                state["segment"] += 1
                t2 = time.perf_counter()
                _save(run_dir, config, sac, buffer, rng, state)
                timing["checkpoint_s"] += time.perf_counter() - t2
                if not finished:
                    obs_vec = start_segment()
                    ep_return[:], ep_length[:] = 0.0, 0
            bar.update(task, completed=state["step"], success=f"{last_eval:.2f}", alpha=sac.alpha)
    return state["history"]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _save(
    run_dir: Path, config: GPAYNConfig, sac: SAC, buffer: ReplayBuffer, rng: np.random.Generator, state: dict[str, Any]
) -> None:
    """Checkpoint: the buffer under a step-stamped name first, then the checkpoint naming it (atomic),
    then older buffers go; history.json and the learning curve follow."""
    replay_file = f"replay-{state['step']:09d}.npz"
    buffer.save(run_dir / replay_file)
    state["rng"] = rng.bit_generator.state
    runs.save_checkpoint(
        run_dir / CHECKPOINT,
        {
            "sac": sac.state_dict(),
            "replay_file": replay_file,
            "buffer_size": len(buffer),
            "trainer": state,
            "config": config.to_dict(),
        },
    )
    for old in run_dir.glob("replay-*.npz"):
        if old.name != replay_file:
            old.unlink()
    runs.write_json(run_dir / "history.json", state["history"])
    summary = {
        "step": state["step"],
        "updates": sac.updates,
        "buffer_size": len(buffer),
        "first_update": state["first_update"],
        "training_episodes": len(state["episodes"]),
        "timing": state["timing"],
    }
    runs.write_json(run_dir / "progress.json", summary)
    plot_learning_curve(
        state["history"],
        state["episodes"],
        run_dir / "learning_curve.png",
        title=f"G-PAYN ({'demos' if config.demo_episodes else 'SAC from scratch'}, seed {config.seed})",
    )


def plot_learning_curve(
    history: list[dict[str, Any]], episodes: list[dict[str, Any]], path: Path, title: str = "G-PAYN"
) -> None:
    """Success rate and return vs env steps: deterministic evaluations (mean over objects, and each
    object thin), and the training episodes (stochastic actions) between evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (ax_success, ax_return) = plt.subplots(1, 2, figsize=(11, 4))
    eval_style = {"marker": "o", "lw": 2, "color": "C0", "label": "eval (deterministic, mean over objects)"}
    train_style = {"ls": "--", "marker": ".", "color": "C1", "label": "training episodes (stochastic)"}
    ax_success.plot(steps, [h["success_rate"] for h in history], **eval_style)
    names = list(history[0]["objects"]) if history else []
    for k, name in enumerate(names if len(names) > 1 else []):  # one object: its line is the mean
        ax_success.plot(
            steps,
            [h["objects"][name]["success_rate"] for h in history],
            lw=0.8,
            alpha=0.6,
            color=f"C{k + 2}",
            label=name,
        )
    train_points = [
        (h["step"], h["train_success_rate"], h["train_return"])
        for h in history
        if h.get("train_success_rate") is not None
    ]
    if train_points:
        ax_success.plot([p[0] for p in train_points], [p[1] for p in train_points], **train_style)
        ax_return.plot([p[0] for p in train_points], [p[2] for p in train_points], **train_style)
    ax_return.plot(steps, [h["mean_return"] for h in history], **eval_style)
    ax_success.set(xlabel="env steps", ylabel="success rate (10 cm lift)", ylim=(-0.05, 1.05), title=title)
    ax_return.set(xlabel="env steps", ylabel="episode return", title=f"{len(episodes)} training episodes")
    for ax in (ax_success, ax_return):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- CLI -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints a JSON summary line and returns the exit code."""
    import os

    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = argparse.ArgumentParser(description="Train G-PAYN (SAC + scripted demonstrations) on GraspEnv.")
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument(
        "--steps", type=int, help="total env steps (default: the config's; with --resume: train further)"
    )
    parser.add_argument("--demos", type=int, help="demonstration episodes to pre-fill (0 = SAC from scratch)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--n-envs", type=int)
    parser.add_argument("--objects", help="comma-separated object names (default: the five training objects)")
    parser.add_argument("--config", type=Path, help="JSON file of GPAYNConfig fields overriding the defaults")
    parser.add_argument("--encoder", type=Path, help="use this encoder.pt instead of pretraining one")
    parser.add_argument("--device", help="auto, cpu or cuda[:N]")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {
        "demo_episodes": args.demos,
        "seed": args.seed,
        "n_envs": args.n_envs,
        "device": args.device,
        "objects": tuple(args.objects.split(",")) if args.objects else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        if args.resume:
            if overrides or args.config or args.encoder:
                raise ValueError("only --steps may change when resuming (the run keeps its own config)")
            config = None
        else:
            fields = GPAYNConfig().to_dict()
            if args.config is not None:
                extra = json.loads(args.config.read_text())
                if not isinstance(extra, dict):
                    raise ValueError(f"{args.config} must hold a JSON object of GPAYNConfig fields")
                fields.update(extra)
            config = GPAYNConfig.from_dict({**fields, **overrides})
        history = train(
            args.out,
            config,
            resume=args.resume,
            total_steps=args.steps,
            encoder_path=args.encoder,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    last = history[-1]
    print(
        json.dumps(
            {
                "run": str(args.out),
                "steps": last["step"],
                "updates": last["updates"],
                "eval_success_rate": last["success_rate"],
                "eval_return": last["mean_return"],
                "learning_curve": str(args.out / "learning_curve.png"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
