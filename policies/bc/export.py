"""Export a trained BC run to a policy directory: `policy.onnx` + `manifest.json`.

    dexstack export --run RUN_DIR --out EXPORT_DIR
    dexstack store publish EXPORT_DIR        # assigns name, version and checksums

The ONNX graph is the network in normalised space (inputs: normalised joint positions (B, J),
scaled RGB images (B, H, W, 3) float32; output: normalised chunk (B, H_chunk, J)). The
normalisation lives in the manifest (`inputs[*].normalization`, `outputs.chunk_normalization`),
and the runtime applies it, so the statistics are visible and checkable, not buried in a graph.
The export fails unless onnxruntime reproduces torch within `atol` on sample inputs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dexstack import contract
from dexstack.policies.bc.config import FAMILY, BCConfig
from dexstack.policies.bc.model import IMAGE_SCALE, JOINT_DELTA, BCPolicy, NormalizationStats, input_names
from dexstack.policies.bc.train import load_trained

GRAPH_FILE = "policy.onnx"
OUTPUT_NAME = "chunk_normalized"
OPSET = 17


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch model."""


def build_manifest(config: BCConfig, run_info: dict[str, Any], stats: NormalizationStats) -> dict[str, Any]:
    """The manifest of an export directory (the store adds name, version and file checksums)."""
    joint_names = list(run_info["joint_names"])
    inputs: list[dict[str, Any]] = [{
        "name": contract.JOINT_POSITIONS, "kind": "joint_positions", "source": contract.JOINT_STATES,
        "names": joint_names, "shape": [len(joint_names)], "dtype": "float32",
        "normalization": {"type": "mean_std", "mean": stats.joint_mean.tolist(), "std": stats.joint_std.tolist()},
    }]
    for cam in config.cameras:
        inputs.append({
            "name": contract.rgb_key(cam), "kind": "rgb", "source": contract.camera_color_topic(cam),
            "shape": list(run_info["image_shapes"][cam]), "dtype": "uint8",
            "normalization": {"type": "scale", "scale": IMAGE_SCALE},
        })
    return {
        "schema_version": 1,
        "family": FAMILY,
        "robot_profile": run_info["robot_profile"],
        "graphs": {"policy": GRAPH_FILE},
        "inputs": inputs,
        "outputs": {
            "kind": "joint_position_chunk", "joint_names": joint_names,
            "chunk_length": config.chunk_length, "dt": 1.0 / float(run_info["fps"]),
            # Per (chunk step, joint) statistics of the training targets; with relative_to set, the
            # graph predicts offsets from the current joint positions: target = q + out * std + mean.
            "chunk_normalization": {
                "type": "mean_std", "mean": stats.target_mean.tolist(), "std": stats.target_std.tolist(),
                "relative_to": contract.JOINT_POSITIONS if stats.relative else None,
            },
        },
        "provenance": {
            "code_commit": run_info.get("code_commit", "unknown"),
            "dataset_hash": run_info.get("dataset_hash", ""),
            "dataset": Path(run_info.get("dataset", "")).name,  # the hash identifies it; no machine paths
            "config": config.to_dict(),
            "training_time_s": round(float(run_info.get("training_time_s", 0.0)), 3),
            "epochs_trained": len(run_info.get("history", [])) - 1,
            "final_val_loss": _finite_or_none((run_info.get("history") or [{}])[-1].get("val_loss")),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "evaluation": {},
        "runtime": runtime_settings(config, stats),
    }


def runtime_settings(config: BCConfig, stats: NormalizationStats) -> dict[str, Any]:
    """manifest["runtime"]: the BC runtime's stateful extras. Both assume act() is called once per
    policy step (outputs.dt) and reset() at the start of an episode."""
    settings: dict[str, Any] = {}
    if config.joint_delta_input:
        # q_k - q_{k-1} (the previous call's observation; zero after reset) feeds this graph input.
        settings["joint_delta"] = {
            "graph_input": JOINT_DELTA,
            "normalization": {"type": "mean_std", "mean": stats.delta_mean.tolist(), "std": stats.delta_std.tolist()},
        }
    if config.temporal_ensemble:
        settings["temporal_ensemble"] = {"decay": config.temporal_ensemble_decay}
    return settings


def _finite_or_none(value: Any) -> float | None:
    # NaN (no validation episodes) is not valid strict JSON; the manifest stays strict.
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def sample_inputs(model: BCPolicy, stats: NormalizationStats, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Normalised network inputs: joint positions around the data mean, random images."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.as_tensor(stats.joint_mean) + torch.as_tensor(stats.joint_std) * torch.randn(batch, model.n_joints, generator=gen)
    q_norm = (q - torch.as_tensor(stats.joint_mean)) / torch.as_tensor(stats.joint_std)
    extra = [torch.randn(batch, model.n_joints, generator=gen)] if model.uses_joint_delta else []
    images = []
    for cam in model.cameras:
        h, w = model.encoders[cam].image_hw
        images.append(torch.randint(0, 256, (batch, h, w, 3), generator=gen).to(torch.float32) * IMAGE_SCALE)
    return [q_norm.to(torch.float32), *extra, *images]


def export_onnx(model: BCPolicy, stats: NormalizationStats, path: Path) -> None:
    """torch -> ONNX with a dynamic batch axis. The legacy TorchScript exporter handles this
    conv/GroupNorm/softmax/MLP network directly and needs no onnxscript at export time."""
    names = input_names(model.cameras, model.uses_joint_delta)
    dynamic = {name: {0: "batch"} for name in names + [OUTPUT_NAME]}
    with warnings.catch_warnings():
        # The legacy exporter's deprecation notice, and GroupNorm's trace-time check that a group
        # holds more than one value (true for every batch size here).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, tuple(sample_inputs(model, stats, 1)), str(path), input_names=names,
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def check_onnx_matches(model: BCPolicy, stats: NormalizationStats, path: Path, atol: float = 1e-4) -> float:
    """Run onnxruntime and torch on the same sample inputs (batch 1 and 5); returns the largest
    absolute difference in the normalised outputs, raises ExportError above `atol`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = input_names(model.cameras, model.uses_joint_delta)
    worst = 0.0
    for batch, seed in ((1, 1), (5, 2)):
        inputs = sample_inputs(model, stats, batch, seed)
        with torch.no_grad():
            expected = model(*inputs).numpy()
        (got,) = session.run([OUTPUT_NAME], {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
        worst = max(worst, float(np.max(np.abs(got - expected))))
    if not worst <= atol:
        raise ExportError(f"onnxruntime and torch differ by {worst:.3g} (> {atol:g}) on sample inputs; "
                          f"{path.name} not written")
    return worst


def export(run_dir: str | Path, out_dir: str | Path, atol: float = 1e-4) -> Path:
    """Export the run in `run_dir` into the new directory `out_dir` (must not exist or be empty).

    Written into a temporary sibling directory and renamed at the end, so a failed export
    leaves nothing half-written. Returns `out_dir`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"export directory {out_dir} exists and is not empty; choose a new --out")
    model, normalizer, config, run_info = load_trained(run_dir)
    stats = NormalizationStats.from_dict(json.loads((Path(run_dir) / "stats.json").read_text()))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        export_onnx(model, stats, tmp / GRAPH_FILE)
        max_diff = check_onnx_matches(model, stats, tmp / GRAPH_FILE, atol)
        manifest = build_manifest(config, run_info, stats)
        manifest["provenance"]["onnx_max_abs_diff"] = max_diff
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
