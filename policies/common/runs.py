"""What every trainer writes into its run directory: checkpoints, JSON records, the loss plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write then rename: an interrupted save never leaves a truncated checkpoint behind."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def plot_losses(history: list[dict[str, float]], path: Path, *, ylabel: str, title: str,
                val_label: str = "validation") -> None:
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
