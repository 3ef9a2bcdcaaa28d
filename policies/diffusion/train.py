"""Train the diffusion policy on a dexstack dataset. Reads top to bottom: data, windows,
statistics, the frozen encoder of PTP's stage 3, the loop. The model and its loss are `model.py`,
the windows' indexing and PTP's past-token mask `history.py`.

    dexstack train diffusion --dataset DIR --out RUN_DIR [--epochs N] [--seed S] [--resume] [--past-tokens K]
    torchrun --nproc-per-node G -m dexstack.policies.diffusion.train --dataset DIR --out RUN_DIR

A training sample is frame k of an episode: observations k-To+1 .. k (joint positions + one RGB
image per camera) and the Tp actions starting at k-To+1, the runtime's indexing (`config.py`).
Indices before the episode start repeat its first frame, after its end its last action (the
robot holds). Token To-1 of the action window is the action commanded at frame k; tokens
0 .. To-2 are the past actions already executed.

Loss (`model.DiffusionPolicy`): DDPM eps-prediction (or EDM when `config.sampler == "edm"`) on
mean/std normalised actions, masked per token: current and future tokens always count, the
`past_tokens_in_loss` past tokens nearest to the present count too (PTP); the others are hidden.
Extra condition vectors (`config.extra_cond_dims`) are read from the dataset feature of that name,
the window's current frame.

Runs as one process on CPU (default) or GPU, and unchanged under `torchrun` (WORLD_SIZE > 1:
DistributedDataParallel + DistributedSampler; only rank 0 writes). The run directory holds
`run.json`, `config.json`, `stats.json`, `checkpoint.pt` (every epoch; `--resume` continues it,
with EMA weights), `history.json` and `loss.png`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexstack import contract
from dexstack.policies.common import runs
from dexstack.policies.common.training import new_run_info, split_episodes, warmup_cosine
from dexstack.policies.common.vision import random_shift
from dexstack.policies.diffusion.config import FAMILY, DiffusionConfig
from dexstack.policies.diffusion.embeddings import encoder_hash, load_embeddings
from dexstack.policies.diffusion.history import future_rows, window_indices
from dexstack.policies.diffusion.model import Batch, DiffusionPolicy, load_trained

CHECKPOINT = runs.CHECKPOINT


# --- data ------------------------------------------------------------------------------------
@dataclass
class WindowCache:
    """Every frame of the training episodes in memory, plus each frame's window indices."""

    joint_positions: np.ndarray  # (N, J) float32, rad / m
    actions: np.ndarray  # (N, J) float32, absolute joint targets
    images: dict[str, np.ndarray]  # camera -> (N, H, W, 3) uint8 (empty when training on cached features)
    obs_index: np.ndarray  # (N, To) int64: rows of frames k-To+1 .. k (clamped to the episode)
    action_index: np.ndarray  # (N, Tp) int64: rows of actions k-To+1 .. k-To+Tp (clamped)
    episode_of_frame: np.ndarray  # (N,) int64 dataset episode index
    episode_ids: list[int]
    features: np.ndarray | None = None  # (N, F) float32 cached frame features (PTP stage 3), else None
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # name -> (N, D) extra conditions


def load_windows(dataset: Any, config: DiffusionConfig, features: list[np.ndarray] | None = None) -> WindowCache:
    """Read the dataset's episodes (only successful ones, if so configured) into memory. With
    `features` (cached per-frame features per dataset episode position, `embeddings.py`) the
    images are not read: the window's condition is then its cached features."""
    episodes = runs.training_episodes(dataset, config.cameras, config.only_successful)
    total, n_joints = sum(int(ep["length"]) for _, ep in episodes), len(dataset.joint_names)
    cameras = () if features is not None else config.cameras
    shapes = {name: tuple(dataset.meta["features"].get(name, {}).get("shape", ())) for name in config.extra_cond_dims}
    for name, dim in config.extra_cond_dims.items():
        if shapes[name] != (dim,):
            raise ValueError(
                f"extra condition {name!r}: the dataset's feature has shape {shapes[name] or 'none'}, "
                f"the config expects ({dim},)"
            )
    cache = WindowCache(
        joint_positions=np.empty((total, n_joints), np.float32),
        actions=np.empty((total, n_joints), np.float32),
        images={
            c: np.empty((total, *dataset.meta["features"][contract.rgb_key(c)]["shape"]), np.uint8) for c in cameras
        },
        obs_index=np.empty((total, config.n_obs_steps), np.int64),
        action_index=np.empty((total, config.horizon), np.int64),
        episode_of_frame=np.empty(total, np.int64),
        episode_ids=[int(ep["index"]) for _, ep in episodes],
        features=None if features is None else np.empty((total, features[0].shape[1]), np.float32),
        extra={name: np.empty((total, dim), np.float32) for name, dim in config.extra_cond_dims.items()},
    )
    start = 0
    for pos, ep in episodes:
        data = dataset.episode(pos)
        end = start + len(data["action"])
        cache.joint_positions[start:end] = data[contract.JOINT_POSITIONS]
        cache.actions[start:end] = data["action"]
        for cam in cameras:
            cache.images[cam][start:end] = data[contract.rgb_key(cam)]
        if cache.features is not None:
            cache.features[start:end] = features[pos]
        for name, values in cache.extra.items():
            values[start:end] = data[name]
        obs, act = window_indices(end - start, config.n_obs_steps, config.horizon)
        cache.obs_index[start:end], cache.action_index[start:end] = start + obs, start + act
        cache.episode_of_frame[start:end] = int(ep["index"])
        start = end
    return cache


# --- normalisation -----------------------------------------------------------------------------
def compute_stats(cache: WindowCache, frames: np.ndarray, config: DiffusionConfig) -> dict[str, list[float]]:
    """Per-joint mean/std (rad / m) of the joint positions and of the absolute action targets."""
    q, a = cache.joint_positions[frames].astype(np.float64), cache.actions[frames].astype(np.float64)
    return {
        "joint_mean": q.mean(0).tolist(),
        "joint_std": np.maximum(q.std(0), config.std_floor).tolist(),
        "action_mean": a.mean(0).tolist(),
        "action_std": np.maximum(a.std(0), config.std_floor).tolist(),
    }


def relative_chunk_std(cache: WindowCache, frames: np.ndarray, config: DiffusionConfig) -> np.ndarray:
    """(Tp-To+1, J) std of the current and future actions minus the current joint positions: the
    scale of the auxiliary regression target (`aux_regression_weight`)."""
    actions = cache.actions[cache.action_index[frames][:, future_rows(config.n_obs_steps, config.horizon)]]
    current = cache.joint_positions[cache.obs_index[frames][:, -1]]
    return np.maximum((actions - current[:, None]).std(0), config.std_floor).astype(np.float32)


def make_batch(cache: WindowCache, frames: np.ndarray, cameras: tuple[str, ...], device: torch.device) -> Batch:
    """The windows of `frames` as a `model.Batch` on `device` (images stay uint8)."""
    obs = cache.obs_index[frames]
    actions = torch.from_numpy(cache.actions[cache.action_index[frames]]).to(device)
    extra = {name: torch.from_numpy(values[obs[:, -1]]).to(device) for name, values in cache.extra.items()}
    if cache.features is not None:
        return Batch(
            torch.from_numpy(cache.joint_positions[obs]).to(device),
            [],
            actions,
            torch.from_numpy(cache.features[obs]).to(device),
            extra,
        )
    return Batch(
        torch.from_numpy(cache.joint_positions[obs]).to(device),
        [torch.from_numpy(cache.images[cam][obs]).to(device) for cam in cameras],
        actions,
        extra=extra,
    )


# --- the loop ---------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a model's weights, used for evaluation and export.

    decay_k = min(decay, (1 + k) / (10 + k)) after k updates: early averages follow the fast
    changing weights instead of remembering the random initialisation."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for avg, cur in zip(self.model.parameters(), model.parameters(), strict=True):
                avg.lerp_(cur.detach(), 1.0 - d)
            for avg, cur in zip(self.model.buffers(), model.buffers(), strict=True):
                avg.copy_(cur)
        self.updates += 1


@dataclass
class Distributed:
    """torchrun's environment: rank, world size and the device of this process."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> Distributed:
    """One process unless torchrun set WORLD_SIZE > 1; then join the process group (NCCL on GPUs,
    gloo on CPU) and use cuda:LOCAL_RANK when GPUs are present."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if world <= 1:
        return Distributed(0, 1, torch.device(device_name))
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device(device_name)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


@torch.no_grad()
def evaluate(
    model: DiffusionPolicy,
    cache: WindowCache,
    frames: np.ndarray,
    config: DiffusionConfig,
    device: torch.device,
    max_frames: int = 2048,
) -> float:
    """Mean masked loss over `frames` (at most `max_frames`) with fixed noise and timesteps and no
    augmentation: comparable across epochs and runs."""
    frames = frames[:max_frames]
    if len(frames) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(config.eval_noise_seed)
    total = 0.0
    for start in range(0, len(frames), config.batch_size):
        chunk = frames[start : start + config.batch_size]
        total += model(make_batch(cache, chunk, config.cameras, device), gen).item() * len(chunk)
    model.train(was_training)
    return total / len(frames)


@dataclass
class FrozenEncoder:
    """PTP stage 3: the frozen encoder of a trained (short-context) run and the cache of its features."""

    policy: DiffusionPolicy  # the encoder run's EMA model: its encoder weights + joint normalisation
    config: DiffusionConfig
    run_info: dict[str, Any]
    features: list[np.ndarray]  # per dataset episode position, (T, F)
    provenance: dict[str, str]  # written into run.json: where the encoder and cache came from


ENCODER_FIELDS = ("cameras", "conv_channels", "group_norm_groups", "num_keypoints", "pooled_features")


def open_frozen_encoder(encoder_run: str | Path, embeddings: str | Path, dataset: Any) -> FrozenEncoder:
    """Load the encoder run and its feature cache; the cache must come from this dataset and this
    encoder (`load_embeddings` refuses anything else)."""
    policy, enc_config, enc_info = load_trained(encoder_run)
    enc_hash = encoder_hash(policy)
    cache = load_embeddings(embeddings, dataset, encoder=enc_hash)
    if cache.feature_dim != policy.encoder.out_dim:
        raise ValueError(
            f"{embeddings}: features are {cache.feature_dim} wide, the encoder of {encoder_run} "
            f"gives {policy.encoder.out_dim}"
        )
    return FrozenEncoder(
        policy,
        enc_config,
        enc_info,
        cache.episodes,
        {
            "encoder_run": str(Path(encoder_run).resolve()),
            "encoder_hash": enc_hash,
            "embeddings": str(Path(embeddings).resolve()),
        },
    )


def train(
    dataset_root: str | Path,
    run_dir: str | Path,
    config: DiffusionConfig | None = None,
    *,
    resume: bool = False,
    epochs: int | None = None,
    progress: bool = True,
    encoder_run: str | Path | None = None,
    embeddings: str | Path | None = None,
) -> list[dict[str, float]]:
    """Train (or, with `resume`, continue) a diffusion run; returns the per-epoch history.

    Epoch 0 is the untrained network's loss. Each later epoch records the mean training loss
    (augmented, random noise) and the EMA weights' validation loss (fixed noise). `epochs`
    overrides the config's total epoch count (with `resume`: train further).

    PTP multistage training, stage 3: with `encoder_run` (a trained run, e.g. a short-context
    policy) and `embeddings` (its cache of this dataset's frame features, `embeddings.py`), the
    encoder is that run's, frozen, and only the denoiser trains, on the cached features: no CNN
    runs in the loop. The run still holds the whole model, so export and serving are unchanged."""
    run_dir, dataset, dataset_hash, config, run_info, profile = runs.open_run(
        run_dir, dataset_root, resume, config, DiffusionConfig, epochs
    )
    checkpoint_path = run_dir / CHECKPOINT
    if resume and run_info.get("frozen_encoder"):
        encoder_run, embeddings = run_info["frozen_encoder"]["encoder_run"], run_info["frozen_encoder"]["embeddings"]
    if (encoder_run is None) != (embeddings is None):
        raise ValueError("cached-embedding training needs both encoder_run and embeddings")
    frozen = open_frozen_encoder(encoder_run, embeddings, dataset) if encoder_run is not None else None
    if frozen is not None and config.aux_regression_weight > 0:
        raise ValueError(
            "aux_regression_weight trains the encoder; a frozen encoder (cached embeddings) has "
            "nothing to learn from it: set it to 0 for stage 3"
        )
    if frozen is not None:
        # The encoder is the encoder run's: its architecture fields are that run's by definition.
        config = dataclasses.replace(config, **{f: getattr(frozen.config, f) for f in ENCODER_FIELDS})

    dist_info = setup_distributed(config.device)
    device = dist_info.device
    torch.manual_seed(config.seed)  # same initial weights on every rank
    torch.set_num_threads(config.torch_threads or os.cpu_count() or 1)

    cache = load_windows(dataset, config, frozen.features if frozen else None)
    train_eps, val_eps = split_episodes(cache.episode_ids, config.val_fraction, config.seed)
    train_frames = np.flatnonzero(np.isin(cache.episode_of_frame, train_eps))
    val_frames = np.flatnonzero(np.isin(cache.episode_of_frame, val_eps))

    if resume:
        stats = json.loads((run_dir / "stats.json").read_text())
    else:
        stats = compute_stats(cache, train_frames, config)
        if frozen is not None:  # the joint normalisation is part of the frozen encoder
            stats.update(joint_mean=frozen.policy.joint_mean.tolist(), joint_std=frozen.policy.joint_std.tolist())
        if dist_info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            image_shapes = (
                frozen.run_info["image_shapes"]
                if frozen
                else {cam: list(cache.images[cam].shape[1:]) for cam in config.cameras}
            )
            run_info = new_run_info(
                FAMILY,
                dataset_root,
                dataset,
                dataset_hash,
                profile.name,
                image_shapes,
                train_eps,
                val_eps,
                world_size=dist_info.world_size,
                frozen_encoder=frozen.provenance if frozen else None,
            )
            runs.write_json(run_dir / "run.json", run_info)
            runs.write_json(run_dir / "stats.json", stats)
    if dist_info.is_main:
        runs.write_json(run_dir / "config.json", config.to_dict())

    image_hw = (
        {cam: tuple(frozen.run_info["image_shapes"][cam][:2]) for cam in config.cameras}
        if frozen
        else {cam: tuple(cache.images[cam].shape[1:3]) for cam in config.cameras}
    )
    model = DiffusionPolicy(config, len(dataset.joint_names), image_hw, stats).to(device)
    if model.aux_head is not None:
        model.aux_delta_std.copy_(torch.from_numpy(relative_chunk_std(cache, train_frames, config)))
    if frozen is not None:
        model.encoder.load_state_dict(frozen.policy.encoder.state_dict())
        model.encoder.requires_grad_(False)
    ema = EMA(model, config.ema_decay)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    from torch.utils.data import DistributedSampler

    # Also with one process: a sampler seeded by (seed, epoch) makes --resume replay the same order.
    sampler = DistributedSampler(
        train_frames, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True, seed=config.seed
    )
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    total_steps = max(1, config.epochs * steps_per_epoch)

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.warmup_steps, total_steps)
    )
    # Different noise and shifts per rank; CPU generators so runs on CPU and GPU draw the same numbers.
    noise_gen = torch.Generator().manual_seed(config.seed * 1000 + dist_info.rank)
    shift_gen = torch.Generator().manual_seed(config.seed * 1000 + dist_info.rank + 500)
    history: list[dict[str, float]] = []
    start_epoch, training_time_s = 0, 0.0
    if resume:
        ckpt = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        ema.model.load_state_dict(ckpt["ema"])
        ema.updates = ckpt["ema_updates"]
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        noise_gen.set_state(ckpt["noise_rng"])
        shift_gen.set_state(ckpt["shift_rng"])
        history, start_epoch, training_time_s = ckpt["history"], ckpt["epoch"], ckpt["training_time_s"]
    else:
        # The untrained network's loss (fixed noise) is the reference a run has to beat.
        history.append(
            {
                "epoch": 0,
                "train_loss": evaluate(model, cache, train_frames, config, device),
                "val_loss": evaluate(model, cache, val_frames, config, device),
                "lr": 0.0,
            }
        )

    net: nn.Module = model
    if dist_info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]diffusion[/] epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
    )
    model.train()
    with Progress(*columns, disable=not (progress and dist_info.is_main)) as bar:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            task = bar.add_task("train", total=steps_per_epoch, epoch=f"{epoch}/{config.epochs}", loss=float("nan"))
            sampler.set_epoch(epoch)
            order = train_frames[np.fromiter(iter(sampler), np.int64)]
            running, seen = 0.0, 0
            for start in range(0, len(order), config.batch_size):
                batch = make_batch(cache, order[start : start + config.batch_size], config.cameras, device)
                b, to = batch.joint_positions.shape[:2]
                # One shift per window, the same for its To frames: the camera did not move between them.
                # (Cached features have no images: a frozen encoder has nothing to learn from shifts.)
                batch.images = [
                    random_shift(
                        img.permute(0, 2, 3, 1, 4).reshape(b, *img.shape[2:4], -1), config.random_shift_px, shift_gen
                    )
                    .reshape(b, *img.shape[2:4], to, 3)
                    .permute(0, 3, 1, 2, 4)
                    for img in batch.images
                ]
                loss = net(batch, noise_gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                ema.update(model)
                running += loss.item() * b
                seen += b
                bar.update(task, advance=1, loss=running / seen)
            training_time_s += time.perf_counter() - t0
            bar.remove_task(task)
            if not dist_info.is_main:
                continue
            val_loss = evaluate(ema.model, cache, val_frames, config, device)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": running / seen,
                    "val_loss": val_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "time_s": training_time_s,
                }
            )
            if progress:
                bar.console.print(
                    f"epoch {epoch}/{config.epochs}: train {running / seen:.4f}  val (EMA) {val_loss:.4f}"
                )
            runs.save_checkpoint(
                checkpoint_path,
                {
                    "model": model.state_dict(),
                    "ema": ema.model.state_dict(),
                    "ema_updates": ema.updates,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "noise_rng": noise_gen.get_state(),
                    "shift_rng": shift_gen.get_state(),
                    "epoch": epoch,
                    "history": history,
                    "training_time_s": training_time_s,
                    "parameters": sum(p.numel() for p in model.parameters()),
                },
            )
            runs.write_json(run_dir / "history.json", history)
            plot_losses(history, run_dir / "loss.png")
    if dist_info.world_size > 1:
        torch.distributed.barrier()
    return history


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    runs.plot_losses(
        history,
        path,
        ylabel="masked denoising loss",
        title="diffusion training",
        val_label="validation (EMA, fixed noise)",
    )


def main() -> None:
    """Entry point for `torchrun ... -m dexstack.policies.diffusion.train` (the CLI calls `train`)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--config", help="JSON file of DiffusionConfig fields overriding the defaults")
    args = parser.parse_args()
    overrides = json.loads(Path(args.config).read_text()) if args.config else {}
    config = DiffusionConfig.from_dict({**DiffusionConfig().to_dict(), **overrides})
    train(args.dataset, args.out, config, resume=args.resume, epochs=args.epochs)


if __name__ == "__main__":
    main()
