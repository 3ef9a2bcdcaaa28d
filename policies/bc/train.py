"""Train the BC policy on a dexstack dataset. Reads top to bottom: data, statistics, model, loop.

    dexstack train bc --dataset DIR --out RUN_DIR [--epochs N] [--seed S] [--resume]

A training sample is frame k of an episode: the observation at k (joint positions + one RGB
image per camera) and the target chunk action[k : k + H], padded at the episode end by
repeating the last action (the robot holds). `action[k]` is the absolute joint target the
robot was commanded for t_k + 1/fps, so point i of a chunk is due (i + 1) / fps after the
observation, which is what the runtime interface promises.

The run directory holds: `run.json` (family, dataset and its hash, code commit), `config.json`,
`stats.json` (normalisation), `checkpoint.pt` (rewritten after every epoch; `--resume` continues
from it), `history.json` and `loss.png`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dexstack import contract
from dexstack.policies.bc.config import FAMILY, BCConfig
from dexstack.policies.bc.model import BCPolicy, NormalizationStats, Normalizer
from dexstack.policies.common import runs
from dexstack.policies.common.training import (
    count_parameters,
    new_run_info,
    pick_device,
    split_episodes,
    warmup_cosine,
)
from dexstack.policies.common.vision import random_shift

CHECKPOINT = runs.CHECKPOINT


# --- data ------------------------------------------------------------------------------------
@dataclass
class DemoCache:
    """Every training frame preloaded in memory (images stay uint8: 150 x 80 frames x 2 cameras
    at 96x96 is ~660 MB)."""

    joint_positions: np.ndarray  # (N, J) float32, rad / m
    joint_deltas: np.ndarray  # (N, J) float32: q_k - q_{k-1} within the episode, 0 at its first frame
    actions: np.ndarray  # (N, J) float32, absolute joint targets
    images: dict[str, np.ndarray]  # camera -> (N, H, W, 3) uint8
    chunk_index: np.ndarray  # (N, H) int64: rows of `actions` forming each frame's target chunk
    episode_of_frame: np.ndarray  # (N,) int64: dataset episode index of each frame
    episode_ids: list[int]  # dataset episode indices that were loaded


def load_demonstrations(dataset: Any, config: BCConfig) -> DemoCache:
    """Read the dataset's episodes (all successful ones, if so configured) into one cache."""
    episodes = runs.training_episodes(dataset, config.cameras, config.only_successful)
    total = sum(int(ep["length"]) for _, ep in episodes)
    n_joints = len(dataset.joint_names)
    cache = DemoCache(
        joint_positions=np.empty((total, n_joints), np.float32),
        joint_deltas=np.zeros((total, n_joints), np.float32),
        actions=np.empty((total, n_joints), np.float32),
        images={
            c: np.empty((total, *dataset.meta["features"][contract.rgb_key(c)]["shape"]), np.uint8)
            for c in config.cameras
        },
        chunk_index=np.empty((total, config.chunk_length), np.int64),
        episode_of_frame=np.empty(total, np.int64),
        episode_ids=[int(ep["index"]) for _, ep in episodes],
    )
    start = 0
    for pos, ep in episodes:
        data = dataset.episode(pos)
        length = len(data["action"])
        if length != int(ep["length"]):
            raise ValueError(f"episode {ep['index']}: {length} frames on disk, meta says {ep['length']}")
        end = start + length
        cache.joint_positions[start:end] = data[contract.JOINT_POSITIONS]
        cache.joint_deltas[start + 1 : end] = np.diff(cache.joint_positions[start:end], axis=0)
        cache.actions[start:end] = data["action"]
        for cam in config.cameras:
            cache.images[cam][start:end] = data[contract.rgb_key(cam)]
        steps = np.arange(length)[:, None] + np.arange(config.chunk_length)[None, :]
        cache.chunk_index[start:end] = start + np.minimum(steps, length - 1)  # pad by holding the last action
        cache.episode_of_frame[start:end] = int(ep["index"])
        start = end
    return cache


# --- normalisation -----------------------------------------------------------------------------
def compute_stats(cache: DemoCache, frames: np.ndarray, config: BCConfig) -> NormalizationStats:
    """Per-joint mean/std of the inputs and per-(chunk step, joint) mean/std of the targets."""
    q = cache.joint_positions[frames].astype(np.float64)
    targets = cache.actions[cache.chunk_index[frames]].astype(np.float64)  # (n, H, J)
    if config.predict_relative:
        targets = targets - q[:, None, :]
    return NormalizationStats(
        joint_mean=q.mean(0).astype(np.float32),
        joint_std=np.maximum(q.std(0), config.std_floor).astype(np.float32),
        target_mean=targets.mean(0).astype(np.float32),
        target_std=np.maximum(targets.std(0), config.std_floor).astype(np.float32),
        relative=config.predict_relative,
        delta_mean=cache.joint_deltas[frames].mean(0).astype(np.float32) if config.joint_delta_input else None,
        delta_std=(
            np.maximum(cache.joint_deltas[frames].std(0), config.std_floor).astype(np.float32)
            if config.joint_delta_input
            else None
        ),
    )


def make_batch(
    cache: DemoCache, frames: np.ndarray, cameras: tuple[str, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Raw (un-normalised) tensors: joint positions (B, J), joint deltas (B, J), uint8 images
    (B, H, W, 3) per camera, target actions (B, H, J)."""
    q = torch.from_numpy(cache.joint_positions[frames]).to(device)
    dq = torch.from_numpy(cache.joint_deltas[frames]).to(device)
    images = [torch.from_numpy(cache.images[cam][frames]).to(device) for cam in cameras]
    actions = torch.from_numpy(cache.actions[cache.chunk_index[frames]]).to(device)
    return q, dq, images, actions


def network_inputs(
    model: BCPolicy, normalizer: Normalizer, q: torch.Tensor, dq: torch.Tensor, images: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Normalised inputs in forward() order."""
    extra = [normalizer.deltas(dq)] if model.uses_joint_delta else []
    return [normalizer.joints(q), *extra, *[normalizer.image(img) for img in images]]


# --- the loop ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: BCPolicy,
    normalizer: Normalizer,
    cache: DemoCache,
    frames: np.ndarray,
    config: BCConfig,
    device: torch.device,
    max_batches: int = 0,
) -> float:
    """Mean L1 loss on normalised targets, without augmentation."""
    if len(frames) == 0:
        return float("nan")
    model.eval()
    total, count = 0.0, 0
    for b, start in enumerate(range(0, len(frames), config.batch_size)):
        if max_batches and b >= max_batches:
            break
        q, dq, images, actions = make_batch(cache, frames[start : start + config.batch_size], model.cameras, device)
        pred = model(*network_inputs(model, normalizer, q, dq, images))
        total += F.l1_loss(pred, normalizer.targets(actions, q), reduction="sum").item() / pred[0].numel()
        count += len(q)
    model.train()
    return total / count


def train(
    dataset_root: str | Path,
    run_dir: str | Path,
    config: BCConfig | None = None,
    *,
    resume: bool = False,
    epochs: int | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train (or, with `resume`, continue) a BC run; returns the per-epoch history.

    Epoch 0 of the history is the loss of the untrained network. `epochs` overrides the config's
    total epoch count (useful with `resume` to train further)."""
    run_dir, dataset, dataset_hash, config, run_info, profile = runs.open_run(
        run_dir, dataset_root, resume, config, BCConfig, epochs
    )
    checkpoint_path = run_dir / CHECKPOINT

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.torch_threads or os.cpu_count() or 1)
    device = pick_device(config.device)

    cache = load_demonstrations(dataset, config)
    train_eps, val_eps = split_episodes(cache.episode_ids, config.val_fraction, config.seed)
    train_frames = np.flatnonzero(np.isin(cache.episode_of_frame, train_eps))
    val_frames = np.flatnonzero(np.isin(cache.episode_of_frame, val_eps))

    if resume:
        stats = NormalizationStats.from_dict(json.loads((run_dir / "stats.json").read_text()))
    else:
        stats = compute_stats(cache, train_frames, config)
        run_dir.mkdir(parents=True, exist_ok=True)
        image_shapes = {cam: list(cache.images[cam].shape[1:]) for cam in config.cameras}
        run_info = new_run_info(
            FAMILY, dataset_root, dataset, dataset_hash, profile.name, image_shapes, train_eps, val_eps
        )
        runs.write_json(run_dir / "run.json", run_info)
        runs.write_json(run_dir / "stats.json", stats.to_dict())
    runs.write_json(run_dir / "config.json", config.to_dict())

    image_hw = {cam: tuple(cache.images[cam].shape[1:3]) for cam in config.cameras}
    model = BCPolicy(config, len(dataset.joint_names), image_hw).to(device)
    normalizer = Normalizer(stats).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_frames) / config.batch_size)
    total_steps = max(1, config.epochs * steps_per_epoch)

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.warmup_steps, total_steps)
    )
    rng = np.random.default_rng(config.seed)
    shift_gen = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start_epoch, training_time_s = 0, 0.0

    if resume:
        ckpt = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        shift_gen.set_state(ckpt["shift_rng"])
        history, start_epoch, training_time_s = ckpt["history"], ckpt["epoch"], ckpt["training_time_s"]
    else:
        # The untrained network's loss is the reference a run has to beat.
        initial_train = evaluate(model, normalizer, cache, train_frames[:2048], config, device)
        history.append(
            {
                "epoch": 0,
                "train_loss": initial_train,
                "val_loss": evaluate(model, normalizer, cache, val_frames, config, device),
                "lr": 0.0,
            }
        )

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]bc[/] epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
    )
    model.train()
    with Progress(*columns, disable=not progress) as bar:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            task = bar.add_task("train", total=steps_per_epoch, epoch=f"{epoch}/{config.epochs}", loss=float("nan"))
            order = rng.permutation(train_frames)
            running, seen = 0.0, 0
            for start in range(0, len(order), config.batch_size):
                q, dq, images, actions = make_batch(
                    cache, order[start : start + config.batch_size], model.cameras, device
                )
                images = [random_shift(img, config.random_shift_px, shift_gen) for img in images]
                pred = model(*network_inputs(model, normalizer, q, dq, images))
                loss = F.l1_loss(pred, normalizer.targets(actions, q))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                running += loss.item() * len(q)
                seen += len(q)
                bar.update(task, advance=1, loss=running / seen)
            training_time_s += time.perf_counter() - t0
            val_loss = evaluate(model, normalizer, cache, val_frames, config, device, config.num_eval_batches)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": running / seen,
                    "val_loss": val_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "time_s": training_time_s,
                }
            )
            bar.remove_task(task)
            if progress:
                bar.console.print(f"epoch {epoch}/{config.epochs}: train {running / seen:.4f}  val {val_loss:.4f}")
            runs.save_checkpoint(
                checkpoint_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "numpy_rng": rng.bit_generator.state,
                    "shift_rng": shift_gen.get_state(),
                    "epoch": epoch,
                    "history": history,
                    "training_time_s": training_time_s,
                    "parameters": count_parameters(model),
                },
            )
            runs.write_json(run_dir / "history.json", history)
            plot_losses(history, run_dir / "loss.png")
    return history


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    runs.plot_losses(history, path, ylabel="L1 loss, normalised targets", title="BC training")


def load_trained(run_dir: str | Path, device: str = "cpu") -> tuple[BCPolicy, Normalizer, BCConfig, dict[str, Any]]:
    """The trained model (eval mode), its normaliser, config and run info from a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).exists():
        raise FileNotFoundError(f"{run_dir} has no {CHECKPOINT}; train first (dexstack train bc --out {run_dir})")
    config = BCConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    run_info = json.loads((run_dir / "run.json").read_text())
    stats = NormalizationStats.from_dict(json.loads((run_dir / "stats.json").read_text()))
    image_hw = {cam: tuple(run_info["image_shapes"][cam][:2]) for cam in config.cameras}
    model = BCPolicy(config, len(run_info["joint_names"]), image_hw)
    ckpt = torch.load(run_dir / CHECKPOINT, map_location=device, weights_only=False)
    model.load_state_dict(ckpt["model"])
    model.eval()
    run_info["training_time_s"] = ckpt["training_time_s"]
    run_info["history"] = ckpt["history"]
    return model, Normalizer(stats).eval(), config, run_info
