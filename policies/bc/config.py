"""Behaviour cloning with chunked actions: every hyperparameter in one dataclass.

The defaults are the ones that produce the documented baseline (`docs/BENCHMARKS.md`,
`dexstack train bc --dataset DIR --out RUN_DIR`). Plain Python (no torch) so the CLI, the
exporter and the run directory's `config.json` can read it cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

FAMILY = "bc"


@dataclass
class BCConfig:
    # --- data -------------------------------------------------------------------------
    cameras: tuple[str, ...] = ("wrist", "scene")  # rgb features `<camera>_rgb` of the dataset
    chunk_length: int = 8  # H: future joint targets predicted per observation (dt = 1 / fps)
    only_successful: bool = True  # train on episodes whose `success` is not False
    val_fraction: float = 0.05  # episodes held out for the validation loss (at least one when > 1 episode)
    std_floor: float = 1e-3  # rad or m; keeps near-constant dimensions from exploding when normalised

    # --- model ------------------------------------------------------------------------
    # Per camera: conv stack with GroupNorm, then a 1x1 conv to keypoint heat maps and a spatial
    # softmax (expected x, y per keypoint). Much smaller than diffusion_policy's ResNet-18 so it
    # trains from scratch on a 2-core CPU.
    conv_channels: tuple[int, ...] = (16, 32, 32)
    group_norm_groups: int = 8
    num_keypoints: int = 32
    hidden_dim: int = 256
    hidden_layers: int = 2
    # Targets are action[k + i] - joint_positions[k], normalised per (i, joint): small, centred
    # numbers, and a policy that outputs zeros simply holds still.
    predict_relative: bool = True
    # Also feed q_k - q_{k-1} (one policy step, normalised; zero on an episode's first step, in
    # training and in the runtime alike). It lowers the validation loss (0.094 vs 0.137 on 150 sim
    # demos) but the policy then copies its own motion: 15% vs 45% success in closed loop. Off.
    joint_delta_input: bool = False

    # --- serving (written to manifest["runtime"]; no retraining needed to change) ------------
    # ACT-style temporal ensembling: each executed target is the weighted mean of every chunk
    # that predicted it, a prediction made a steps ago weighted exp(decay * a). Smooths the
    # closed loop (in-process pick_lift, 50 episodes: 20% without, 56% with); needs act() once
    # per policy step.
    temporal_ensemble: bool = True
    temporal_ensemble_decay: float = 0.1

    # --- optimisation -----------------------------------------------------------------
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 1.0
    random_shift_px: int = 4  # DrQ-style random shift (edge padding + crop) on training images
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    torch_threads: int = 0  # 0: one per CPU core
    num_eval_batches: int = 0  # 0: evaluate the whole validation set each epoch

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BCConfig:
        """Inverse of `to_dict`; unknown keys are an error so a typo never goes unnoticed."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown BC config keys {unknown}; known: {sorted(names)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)
