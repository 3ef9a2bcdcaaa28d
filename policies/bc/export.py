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
from pathlib import Path
from typing import Any

import torch

from dexstack import contract
from dexstack.policies.bc.config import FAMILY, BCConfig
from dexstack.policies.bc.model import IMAGE_SCALE, JOINT_DELTA, BCPolicy, NormalizationStats, input_names
from dexstack.policies.bc.train import load_trained
from dexstack.policies.common import export as common_export
from dexstack.policies.common import normalization

GRAPH_FILE = "policy.onnx"
OUTPUT_NAME = "chunk_normalized"


def build_manifest(config: BCConfig, run_info: dict[str, Any], stats: NormalizationStats) -> dict[str, Any]:
    """The manifest of an export directory (the store adds name, version and file checksums)."""
    joint_names = list(run_info["joint_names"])
    return {
        "schema_version": 1,
        "family": FAMILY,
        "robot_profile": run_info["robot_profile"],
        "graphs": {"policy": GRAPH_FILE},
        "inputs": common_export.observation_inputs(
            joint_names, stats.joint_mean, stats.joint_std, config.cameras, run_info["image_shapes"], IMAGE_SCALE
        ),
        "outputs": {
            "kind": "joint_position_chunk",
            "joint_names": joint_names,
            "chunk_length": config.chunk_length,
            "dt": 1.0 / float(run_info["fps"]),
            # Per (chunk step, joint) statistics of the training targets; with relative_to set, the
            # graph predicts offsets from the current joint positions: target = q + out * std + mean.
            "chunk_normalization": {
                **normalization.mean_std(stats.target_mean, stats.target_std),
                "relative_to": contract.JOINT_POSITIONS if stats.relative else None,
            },
        },
        "provenance": common_export.run_provenance(run_info, config.to_dict()),
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
            "normalization": normalization.mean_std(stats.delta_mean, stats.delta_std),
        }
    if config.temporal_ensemble:
        settings["temporal_ensemble"] = {"decay": config.temporal_ensemble_decay}
    return settings


def sample_inputs(model: BCPolicy, stats: NormalizationStats, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Normalised network inputs: joint positions around the data mean, random images."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.as_tensor(stats.joint_mean) + torch.as_tensor(stats.joint_std) * torch.randn(
        batch, model.n_joints, generator=gen
    )
    q_norm = (q - torch.as_tensor(stats.joint_mean)) / torch.as_tensor(stats.joint_std)
    extra = [torch.randn(batch, model.n_joints, generator=gen)] if model.uses_joint_delta else []
    images = []
    for cam in model.cameras:
        h, w = model.encoders[cam].image_hw
        images.append(torch.randint(0, 256, (batch, h, w, 3), generator=gen).to(torch.float32) * IMAGE_SCALE)
    return [q_norm.to(torch.float32), *extra, *images]


def export_graph(model: BCPolicy, stats: NormalizationStats, path: Path, atol: float = 1e-4) -> float:
    """Write `policy.onnx` and check onnxruntime against torch on sample inputs (batch 1 and 5):
    returns the largest absolute difference in the normalised outputs, raises ExportError (and
    removes the graph) above `atol`."""
    names = input_names(model.cameras, model.uses_joint_delta)
    checks = [sample_inputs(model, stats, batch, seed) for batch, seed in ((1, 1), (5, 2))]
    return common_export.export_checked(model, path, names, OUTPUT_NAME, sample_inputs(model, stats, 1), checks, atol)


def export(run_dir: str | Path, out_dir: str | Path, atol: float = 1e-4) -> Path:
    """Export the run in `run_dir` into the new directory `out_dir` (must not exist or be empty);
    nothing is left behind if the export fails. Returns `out_dir`."""
    common_export.refuse_existing(out_dir)
    model, _, config, run_info = load_trained(run_dir)
    stats = NormalizationStats.from_dict(json.loads((Path(run_dir) / "stats.json").read_text()))
    return common_export.write_policy_dir(
        out_dir, build_manifest(config, run_info, stats), lambda tmp: export_graph(model, stats, tmp / GRAPH_FILE, atol)
    )
