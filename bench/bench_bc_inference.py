"""Per-call latency of the BC policy at batch 1: onnxruntime (the serving runtime) vs torch eager.

    .venv/bin/python bench/bench_bc_inference.py [--run RUN_DIR] [--calls 2000] [--threads 1]

Both sides do the whole call the policy node makes: normalise the observation, run the network,
turn the normalised chunk into absolute joint targets. Calls alternate between the two so that
both see the same machine load. Without --run, a freshly initialised network of the default
config is used (latency does not depend on the weights). Prints one JSON line.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="trained run directory (default: untrained default config)")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per backend")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per backend first")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both backends")
    args = parser.parse_args()

    import torch

    from dexstack import contract
    from dexstack.hardware.profiles import PANDA
    from dexstack.policies.bc.config import BCConfig
    from dexstack.policies.bc.export import build_manifest, export_graph
    from dexstack.policies.bc.model import BCPolicy, NormalizationStats, Normalizer, predict_chunk
    from dexstack.policies.bc.runtime import Runtime
    from dexstack.policies.bc.train import load_trained
    from dexstack.policies.common.training import count_parameters

    torch.set_num_threads(args.threads)
    if args.run:
        model, normalizer, config, run_info = load_trained(args.run)
        stats = NormalizationStats.from_dict(json.loads((args.run / "stats.json").read_text()))
    else:
        config = BCConfig()
        shapes = {cam: [PANDA.camera(cam).height, PANDA.camera(cam).width, 3] for cam in config.cameras}
        run_info = {
            "joint_names": list(PANDA.joint_names),
            "image_shapes": shapes,
            "robot_profile": PANDA.name,
            "fps": contract.POLICY_HZ,
        }
        torch.manual_seed(0)
        model = BCPolicy(config, PANDA.n_joints, {c: tuple(s[:2]) for c, s in shapes.items()}).eval()
        h, j = config.chunk_length, PANDA.n_joints
        stats = NormalizationStats(
            np.asarray(PANDA.home, np.float32),
            np.full(j, 0.3, np.float32),
            np.zeros((h, j), np.float32),
            np.full((h, j), 0.1, np.float32),
            True,
            np.zeros(j, np.float32),
            np.full(j, 0.02, np.float32),
        )
        normalizer = Normalizer(stats)

    with tempfile.TemporaryDirectory() as tmp:
        export_graph(model, stats, Path(tmp) / "policy.onnx")
        runtime = Runtime(Path(tmp), build_manifest(config, run_info, stats), threads=args.threads)

        rng = np.random.default_rng(0)
        observation = {contract.JOINT_POSITIONS: np.asarray(PANDA.home) + rng.normal(0, 0.05, PANDA.n_joints)}
        for spec in runtime.manifest["inputs"]:
            if spec["kind"] == "rgb":
                observation[spec["name"]] = rng.integers(0, 256, spec["shape"], dtype=np.uint8)

        ort_chunk = runtime.act(observation)
        torch_chunk = predict_chunk(model, normalizer, observation)
        max_diff = float(np.abs(ort_chunk - torch_chunk).max())

        def timed(fn) -> float:
            t0 = time.perf_counter()
            fn(observation)
            return (time.perf_counter() - t0) * 1e3

        torch_call = lambda obs: predict_chunk(model, normalizer, obs)  # noqa: E731
        for _ in range(args.warmup):
            runtime.act(observation)
            torch_call(observation)
        ort_ms, torch_ms = [], []
        for _ in range(args.calls):  # interleaved: both backends see the same load
            ort_ms.append(timed(runtime.act))
            torch_ms.append(timed(torch_call))

    def pct(values: list[float]) -> dict[str, float]:
        return {"p50": round(float(np.percentile(values, 50)), 4), "p99": round(float(np.percentile(values, 99)), 4)}

    ort_p, torch_p = pct(ort_ms), pct(torch_ms)
    print(
        json.dumps(
            {
                "bench": "bc_inference",
                "batch": 1,
                "calls": args.calls,
                "threads": args.threads,
                "parameters": count_parameters(model),
                "chunk_shape": list(ort_chunk.shape),
                "onnxruntime_ms": ort_p,
                "torch_eager_ms": torch_p,
                "speedup_p50": round(torch_p["p50"] / ort_p["p50"], 2),
                "speedup_p99": round(torch_p["p99"] / ort_p["p99"], 2),
                "max_abs_diff": max_diff,
                "trained": bool(args.run),
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "onnxruntime": __import__("onnxruntime").__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
