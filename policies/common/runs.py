"""What every trainer writes into its run directory: checkpoints, JSON records, the loss plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write then rename: an interrupted save never leaves a truncated checkpoint behind."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def plot_losses(
    history: list[dict[str, float]], path: Path, *, ylabel: str, title: str, val_label: str = "validation"
) -> None:
    """Train/validation loss per epoch (log scale) as a PNG; epoch 0 is the untrained model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train (augmented)")
    if any(math.isfinite(h["val_loss"]) for h in history):
        ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label=val_label)
    ax.set(xlabel="epoch (0 = untrained)", ylabel=ylabel, yscale="log", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def open_run(run_dir: str | Path, dataset_root: str | Path, resume: bool, config, config_cls, epochs: int | None):
    """Start or resume a run: returns (run_dir, dataset, dataset_hash, config, run_info or None, profile).

    Resuming reads the run's own config and refuses another dataset; starting refuses a
    directory that already holds a run. The dataset's joints must be its robot profile's."""
    from dexstack.dataset import Dataset  # numpy-only core module
    from dexstack.hardware.profiles import get_profile

    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT
    dataset = Dataset(dataset_root)
    dataset_hash = dataset.content_hash()
    run_info = None
    if resume:
        if not checkpoint_path.exists():
            raise FileNotFoundError(f"--resume: no {CHECKPOINT} in {run_dir}")
        config = config_cls.from_dict(json.loads((run_dir / "config.json").read_text()))
        run_info = json.loads((run_dir / "run.json").read_text())
        if run_info["dataset_hash"] != dataset_hash:
            raise ValueError(
                f"--resume: dataset {dataset_root} differs from the one the run started with "
                f"({run_info['dataset']}, hash {run_info['dataset_hash'][:12]}...)"
            )
    else:
        if checkpoint_path.exists():
            raise FileExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        config = config or config_cls()
    if epochs is not None:
        config.epochs = epochs
    profile = get_profile(dataset.meta.get("robot_profile", "panda"))
    if tuple(dataset.joint_names) != profile.joint_names:
        raise ValueError(
            f"dataset joints {list(dataset.joint_names)} are not robot profile {profile.name!r}'s "
            f"joints in its order {list(profile.joint_names)}"
        )
    return run_dir, dataset, dataset_hash, config, run_info, profile


def training_episodes(dataset: Any, cameras: tuple[str, ...], only_successful: bool) -> list[tuple[int, dict]]:
    """(position, meta entry) of the episodes to train on, after checking the dataset has joint
    positions, actions and an (H, W, 3) image per camera; raises ValueError saying what is missing."""
    from dexstack import contract

    root = getattr(dataset, "root", "")
    features = dataset.meta["features"]
    needed = [contract.JOINT_POSITIONS, "action"] + [contract.rgb_key(c) for c in cameras]
    missing = [k for k in needed if k not in features]
    if missing:
        raise ValueError(f"dataset {root} lacks features {missing}; it has {sorted(features)}")
    for cam in cameras:
        shape = tuple(features[contract.rgb_key(cam)]["shape"])
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"feature {contract.rgb_key(cam)} has shape {shape}, expected (H, W, 3)")
    # Dataset.episode() takes the position in meta["episodes"]
    episodes = [
        (pos, ep)
        for pos, ep in enumerate(dataset.meta["episodes"])
        if not (only_successful and ep.get("success") is False)
    ]
    if not episodes:
        raise ValueError(f"dataset {root} has no episodes to train on (only_successful={only_successful})")
    return episodes
