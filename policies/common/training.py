"""Helpers every family's trainer shares: episode split, device, learning-rate schedule, provenance."""

from __future__ import annotations

import math
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def split_episodes(episode_ids: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) episode ids: whole episodes are held out (frames of one episode are
    strongly correlated); at least one for validation when there are two or more and val_fraction > 0."""
    ids = list(np.random.default_rng(seed).permutation(episode_ids))
    n_val = 0 if len(ids) < 2 or val_fraction <= 0 else max(1, round(val_fraction * len(ids)))
    return sorted(int(i) for i in ids[n_val:]), sorted(int(i) for i in ids[:n_val])


def pick_device(name: str) -> torch.device:
    """ "auto": cuda if available, else cpu; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor of optimiser step `step`: linear warm-up over `warmup_steps`, then cosine
    decay to zero at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def code_commit() -> str:
    """`git rev-parse HEAD` of the checkout this module lives in, or 'unknown' (e.g. installed)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def new_run_info(
    family: str,
    dataset_root: str | Path,
    dataset: Any,
    dataset_hash: str,
    robot_profile: str,
    image_shapes: dict[str, list[int]],
    train_episodes: list[int],
    val_episodes: list[int],
    **extra: Any,
) -> dict[str, Any]:
    """What `run.json` records for a new run of an imitation family (read by its exporter): the data
    and its hash, the code, the robot and the episode split; `extra` adds family-specific entries."""
    return {
        "family": family,
        "dataset": str(Path(dataset_root).resolve()),
        "dataset_hash": dataset_hash,
        "code_commit": code_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "robot_profile": robot_profile,
        "joint_names": list(dataset.joint_names),
        "fps": float(dataset.fps),
        "image_shapes": image_shapes,
        "train_episodes": train_episodes,
        "val_episodes": val_episodes,
        **extra,
    }
