"""Per-chunk sampling latency of the diffusion core at batch 1: onnxruntime vs torch eager.

    .venv/bin/python bench/bench_diffusion.py [--chunks 100] [--threads 1] [--denoiser unet]

Both backends run the SAME numpy sampler loop (`schedulers.ddim_sample` / `edm_sample`); only the
per-step network call differs (`denoiser.onnx` in onnxruntime vs the torch module in eager mode).
Samplers: DDIM with 10 steps and EDM with 3 Euler steps. Default network: the config's 1-D UNet
(down_dims 128, 256, 512: ~17M parameters for the Panda's 8 joints, Tp = 16, two 96x96 cameras).
Calls alternate between the backends so both see the same machine load. Latency does not
depend on the weights, so a freshly initialised network is used. Prints one JSON line;
"act" is the runtime's whole call (encoder + sampling + un-normalisation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100, help="timed chunks per backend and sampler")
    parser.add_argument("--warmup", type=int, default=5, help="untimed chunks per backend first")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both backends")
    parser.add_argument("--denoiser", choices=["unet", "transformer"], default="unet")
    parser.add_argument("--down-dims", type=int, nargs="+", help="UNet channels per level (default: the config's)")
    parser.add_argument(
        "--n-obs-steps", type=int, help="To (default: the config's); 16 with --horizon 32 is PTP's long context"
    )
    parser.add_argument("--horizon", type=int, help="Tp (default: the config's)")
    parser.add_argument(
        "--self-verification",
        type=int,
        default=0,
        help="also time the runtime's act() with PTP self-verification over N candidates",
    )
    args = parser.parse_args()

    import torch

    from dexstack import contract
    from dexstack.hardware.profiles import PANDA
    from dexstack.policies.common.training import count_parameters
    from dexstack.policies.diffusion import schedulers
    from dexstack.policies.diffusion.config import DiffusionConfig
    from dexstack.policies.diffusion.export import build_manifest, write_policy_dir
    from dexstack.policies.diffusion.model import ObservationEncoder, build_denoiser, torch_step_fn
    from dexstack.policies.diffusion.runtime import Runtime

    torch.set_num_threads(args.threads)
    overrides = {
        "down_dims": tuple(args.down_dims) if args.down_dims else None,
        "n_obs_steps": args.n_obs_steps,
        "horizon": args.horizon,
    }
    config = DiffusionConfig(denoiser=args.denoiser, **{k: v for k, v in overrides.items() if v is not None})
    shapes = {cam: [PANDA.camera(cam).height, PANDA.camera(cam).width, 3] for cam in config.cameras}
    j = PANDA.n_joints
    torch.manual_seed(0)
    encoder = ObservationEncoder(config, j, {c: tuple(s[:2]) for c, s in shapes.items()}).eval()
    denoiser = build_denoiser(config, j, config.n_obs_steps * encoder.out_dim).eval()
    manifest = build_manifest(
        config,
        list(PANDA.joint_names),
        shapes,
        contract.POLICY_HZ,
        np.asarray(PANDA.home),
        np.full(j, 0.3),
        np.asarray(PANDA.home),
        np.full(j, 0.3),
    )
    rng = np.random.default_rng(0)
    observation = {contract.JOINT_POSITIONS: np.asarray(PANDA.home) + rng.normal(0, 0.05, j)}
    for cam, shape in shapes.items():
        observation[contract.rgb_key(cam)] = rng.integers(0, 256, shape, dtype=np.uint8)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        policy_dir = write_policy_dir(Path(tmp) / "policy", encoder, denoiser, manifest)
        manifest = json.loads((policy_dir / "manifest.json").read_text())
        cond = np.concatenate([Runtime(policy_dir, manifest).encode(observation)] * config.n_obs_steps)[None]
        noise = rng.standard_normal((1, config.horizon, j)).astype(np.float32)
        torch_step = torch_step_fn(denoiser, cond)
        alpha_bar = schedulers.alphas_cumprod(config.num_train_timesteps)
        torch_samplers = {
            "ddim10": lambda: schedulers.ddim_sample(torch_step, noise, alpha_bar, 10),
            "edm3": lambda: schedulers.edm_sample(torch_step, noise, 3),
        }
        for name, sampler in (("ddim10", "ddim"), ("edm3", "edm")):
            m = json.loads(json.dumps(manifest))
            m["runtime"]["sampler"] = sampler
            m["runtime"]["ddim"]["steps"], m["runtime"]["edm"]["steps"] = 10, 3
            runtime = Runtime(policy_dir, m, threads=args.threads)
            ort_fn, torch_fn = (lambda rt=runtime: rt.sample(cond, noise)), torch_samplers[name]
            max_diff = float(np.abs(ort_fn() - torch_fn()).max())
            for _ in range(args.warmup):
                ort_fn(), torch_fn(), runtime.act(observation)
            times: dict[str, list[float]] = {"onnxruntime": [], "torch_eager": [], "act": []}
            for _ in range(args.chunks):
                for key, fn in (
                    ("onnxruntime", ort_fn),
                    ("torch_eager", torch_fn),
                    ("act", lambda rt=runtime: rt.act(observation)),
                ):
                    t0 = time.perf_counter()
                    fn()
                    times[key].append((time.perf_counter() - t0) * 1e3)
            ort_stats, torch_stats = percentiles(times["onnxruntime"]), percentiles(times["torch_eager"])
            results[name] = {
                "onnxruntime": ort_stats,
                "torch_eager": torch_stats,
                "ratio_torch_over_ort_p50": round(torch_stats["p50_ms"] / ort_stats["p50_ms"], 2),
                "runtime_act_onnxruntime": percentiles(times["act"]),
                "max_abs_diff_fixed_noise": max_diff,
            }
        if args.self_verification:
            m = json.loads(json.dumps(manifest))
            m["runtime"]["past_tokens_in_loss"] = config.n_obs_steps - 1
            m["runtime"]["self_verification"] = {"num_candidates": args.self_verification}
            runtime = Runtime(policy_dir, m, threads=args.threads)
            ms = []
            for i in range(args.warmup + args.chunks):  # past the warm-up the history is full: N candidates
                t0 = time.perf_counter()
                runtime.act(observation)
                if i >= args.warmup + config.n_obs_steps:
                    ms.append((time.perf_counter() - t0) * 1e3)
            results["ddim10_self_verification"] = {
                "num_candidates": args.self_verification,
                "runtime_act_onnxruntime": percentiles(ms),
            }
    print(
        json.dumps(
            {
                "bench": "diffusion_sampling",
                "n_obs_steps": config.n_obs_steps,
                "denoiser": args.denoiser,
                "down_dims": list(config.down_dims),
                "denoiser_params": count_parameters(denoiser),
                "encoder_params": count_parameters(encoder),
                "horizon": config.horizon,
                "action_dim": j,
                "cond_dim": int(cond.shape[1]),
                "batch": 1,
                "threads": args.threads,
                "chunks": args.chunks,
                "results": results,
                "floor_p99_ms_ddim10": 60.0,
                "meets_floor": results["ddim10"]["onnxruntime"]["p99_ms"] <= 60.0,
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
