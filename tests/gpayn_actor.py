"""The G-PAYN test actor shared by the serving and evaluation tests: an untrained SAC actor (small
MLP, small frozen encoder) exported by export_actor. Its output layer is
scaled down and biased so the action is ~UP_ACTION on palm_z and ~0 elsewhere: the open hand rises
slowly, whatever it sees."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dexstack.policies.gpayn.action import ACTION_DIM

UP_ACTION = 0.25  # palm_z action: the palm rises 2.5 mm per 10 Hz step, 2.5 cm per second


def export_rising_actor(
    obs: dict[str, np.ndarray], observation_spec: dict, out_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """Export the test actor into `out_dir` (new); its normaliser is fitted around `obs` (a GraspEnv
    observation). Returns (export directory, its manifest)."""
    import torch

    from dexstack.policies.gpayn.encoder import ImageEncoder, encode_images, freeze
    from dexstack.policies.gpayn.export import export_actor
    from dexstack.policies.gpayn.sac import SAC, SACConfig, vector_spec

    torch.set_num_threads(1)
    encoder = freeze(ImageEncoder(16, channels=(8, 8, 8, 8)))
    spec = vector_spec(observation_spec, visual_dim=16)
    sac = SAC(spec, ACTION_DIM, SACConfig(hidden=(32, 32)), seed=0, device="cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    batch = {
        k: np.stack([obs[k] + 0.01 * rng.standard_normal(obs[k].shape) for _ in range(8)])
        for k in spec
        if k != "visual"
    }
    sac.update_normalizer(batch | {"visual": encode_images(encoder, images)})
    sac.freeze_normalizer()
    with torch.no_grad():
        last = sac.actor.net[-1]
        last.weight[:ACTION_DIM] *= 0.01
        last.bias[:ACTION_DIM] = 0.0
        last.bias[2] = math.atanh(UP_ACTION)
    out = export_actor(sac, spec, out_dir, encoder=encoder, checks=2)
    # Read directly: the store's validator learns schema 2 with the policy node's side of issue 13.
    return out, json.loads((out / "manifest.json").read_text())
