"""Training cost per epoch of a long-context diffusion policy: end to end vs on cached embeddings.

    .venv/bin/python bench/bench_ptp_training.py [--steps 20] [--threads 1] [--frames 11078] \
        [--set 'conv_channels=[32,32,64]' pooled_features=0]

Both arms run the trainer's own loss (`DiffusionPolicy.forward`) + backward + AdamW step on the
same long-context model (To=16, Tp=32, the stage-3 UNet and the stage-1 encoder of
`ptp_experiment.py`, wrist + scene 96x96 cameras, Panda joints) at the same batch size:

- end to end: the window's 16 frames x 2 cameras go through the keypoint CNN (with the
  random-shift augmentation), gradients flow into the encoder;
- cached: the window's 16 cached feature vectors go straight to the denoiser (PTP stage 3).

Steps alternate between the arms so both see the same machine load. Per-epoch time = steps per
epoch (frames / batch) x median step time; `--frames` defaults to the cover_pick dataset's 11,078
frames. `--set KEY=JSON` overrides config fields in both arms (e.g. the first recipe's encoder,
as in the example). Cost does not depend on the weights or data values, so random inputs are used.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=11078, help="dataset frames per epoch")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="config overrides, both arms")
    args = parser.parse_args()

    import torch

    from dexstack.hardware.profiles import PANDA
    from dexstack.policies.common.vision import random_shift
    from dexstack.policies.diffusion.config import DiffusionConfig
    from dexstack.policies.diffusion.model import Batch, DiffusionPolicy
    from dexstack.policies.diffusion.ptp_experiment import STAGE1, STAGE3, VARIANTS, parse_overrides
    from dexstack.policies.diffusion.train import ENCODER_FIELDS

    torch.set_num_threads(args.threads)
    encoder = {k: v for k, v in STAGE1.items() if k in ENCODER_FIELDS}  # stage 3 inherits stage 1's encoder
    fields = {**DiffusionConfig().to_dict(), **STAGE3, **encoder, **VARIANTS["ptp"], **parse_overrides(args.set)}
    config = DiffusionConfig.from_dict(fields)
    b, to, tp, j = config.batch_size, config.n_obs_steps, config.horizon, PANDA.n_joints
    hw = {cam: (PANDA.camera(cam).height, PANDA.camera(cam).width) for cam in config.cameras}
    stats = {"joint_mean": [0.0] * j, "joint_std": [1.0] * j, "action_mean": [0.0] * j, "action_std": [1.0] * j}
    torch.manual_seed(0)
    models = {"end_to_end": DiffusionPolicy(config, j, hw, stats), "cached": DiffusionPolicy(config, j, hw, stats)}
    models["cached"].encoder.requires_grad_(False)
    optims = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    feature_dim = models["cached"].encoder.out_dim
    actions = torch.randn(b, tp, j)
    joints = torch.randn(b, to, j)
    images = [torch.from_numpy(rng.integers(0, 256, (b, to, *hw[c], 3), dtype=np.uint8)) for c in config.cameras]
    features = torch.randn(b, to, feature_dim)

    def step(arm: str) -> float:
        t0 = time.perf_counter()
        if arm == "end_to_end":
            # the trainer's augmentation: one shift per window, the same for its To frames
            shifted = [
                random_shift(img.permute(0, 2, 3, 1, 4).reshape(b, *img.shape[2:4], -1), config.random_shift_px, gen)
                .reshape(b, *img.shape[2:4], to, 3)
                .permute(0, 3, 1, 2, 4)
                for img in images
            ]
            batch = Batch(joints, shifted, actions)
        else:
            batch = Batch(joints, [], actions, features)
        loss = models[arm](batch, gen)
        optims[arm].zero_grad(set_to_none=True)
        loss.backward()
        optims[arm].step()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"end_to_end": [], "cached": []}
    for i in range(args.warmup + args.steps):
        for arm in times:
            dt = step(arm)
            if i >= args.warmup:
                times[arm].append(dt)
    steps_per_epoch = math.ceil(args.frames / b)
    out: dict[str, object] = {
        "bench": "ptp_training",
        "batch": b,
        "n_obs_steps": to,
        "horizon": tp,
        "down_dims": list(config.down_dims),
        "conv_channels": list(config.conv_channels),
        "pooled_features": config.pooled_features,
        "frames_per_epoch": args.frames,
        "steps_per_epoch": steps_per_epoch,
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    for arm, ts in times.items():
        med = float(np.median(ts))
        out[arm] = {"step_ms_p50": round(med * 1e3, 1), "epoch_s": round(med * steps_per_epoch, 1)}
    out["speedup_per_epoch"] = round(out["end_to_end"]["epoch_s"] / out["cached"]["epoch_s"], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
