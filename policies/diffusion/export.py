"""Export the observation encoder and the per-step denoiser to ONNX, and write a policy directory.

Graphs (legacy TorchScript exporter, opset 17, dynamic batch axis; `policies/common/export.py`):
- `encoder.onnx`: joint_positions (B, J) normalised, `<camera>_rgb` (B, H, W, 3) float32 scaled
  -> `features` (B, F), one frame.
- `denoiser.onnx`: `noisy_actions` (B, Tp, A), `timestep` (B,) float32, `cond` (B, To * F), then
  one input (B, D) per extra condition vector (`config.extra_cond_dims`, in its order)
  -> `denoiser_out` (B, Tp, A): eps for DDPM/DDIM, the EDM network output F for EDM.
The sampler loop runs in the runtime around `denoiser.onnx` (numpy, `schedulers.py`). Extra
condition vectors are manifest inputs of kind "vector" (float32, no normalisation) that the
runtime feeds to the denoiser (`manifest["runtime"]["extra_cond"]` names them).
Every export is checked: onnxruntime must reproduce torch within `atol` or `ExportError`
(`policies/common/export_check.py`) is raised and nothing is written.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexstack.policies.common import export as common_export
from dexstack.policies.common import normalization
from dexstack.policies.diffusion.config import FAMILY, DiffusionConfig
from dexstack.policies.diffusion.model import IMAGE_SCALE, ObservationEncoder, load_trained
from dexstack.policies.diffusion.runtime import DENOISER_INPUTS, DENOISER_OUTPUT, FEATURES

ENCODER_FILE, DENOISER_FILE = "encoder.onnx", "denoiser.onnx"


def encoder_sample_inputs(encoder: ObservationEncoder, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Normalised joints ~ N(0, 1) and random uint8 images scaled like the runtime scales them."""
    gen = torch.Generator().manual_seed(seed)
    images = [
        torch.randint(0, 256, (batch, *cnn.image_hw, 3), generator=gen).to(torch.float32) * IMAGE_SCALE
        for cnn in encoder.cnns.values()
    ]
    return [torch.randn(batch, encoder.n_joints, generator=gen), *images]


def denoiser_sample_inputs(
    horizon: int,
    action_dim: int,
    cond_dim: int,
    batch: int,
    seed: int = 0,
    timestep_range: tuple[float, float] = (0.0, 99.0),
    extra_dims: tuple[int, ...] = (),
) -> list[torch.Tensor]:
    """Noisy actions ~ N(0, 1), timesteps uniform in `timestep_range`, condition and extra condition
    vectors (widths `extra_dims`) ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = timestep_range
    return [
        torch.randn(batch, horizon, action_dim, generator=gen),
        lo + (hi - lo) * torch.rand(batch, generator=gen),
        torch.randn(batch, cond_dim, generator=gen),
        *[torch.randn(batch, d, generator=gen) for d in extra_dims],
    ]


def export_encoder(encoder: ObservationEncoder, path: str | Path, atol: float = 1e-4) -> float:
    """Write `encoder` to ONNX at `path`, check batch 1 and 3 against torch; returns the largest
    absolute difference, raises ExportError (and removes the file) above `atol`."""
    checks = [encoder_sample_inputs(encoder, b, b) for b in (1, 3)]
    return common_export.export_checked(
        encoder, path, encoder.input_names(), FEATURES, encoder_sample_inputs(encoder, 1), checks, atol
    )


def export_denoiser(
    denoiser: nn.Module,
    path: str | Path,
    horizon: int,
    action_dim: int,
    cond_dim: int,
    atol: float = 1e-4,
    timestep_range: tuple[float, float] = (0.0, 99.0),
    extra_cond_dims: dict[str, int] | None = None,
) -> float:
    """Write the per-step denoiser to ONNX at `path`; checked like `export_encoder` on batch 1 and 4.
    `timestep_range`: the timesteps it will see (DDPM: 0..N-1; EDM: c_noise = log(sigma) / 4);
    `extra_cond_dims`: its extra condition inputs (name -> width), in forward() order."""
    extra = dict(extra_cond_dims or {})
    names, dims = [*DENOISER_INPUTS, *extra], tuple(extra.values())
    trace = denoiser_sample_inputs(horizon, action_dim, cond_dim, 1, extra_dims=dims)
    checks = [denoiser_sample_inputs(horizon, action_dim, cond_dim, b, b, timestep_range, dims) for b in (1, 4)]
    return common_export.export_checked(denoiser, path, names, DENOISER_OUTPUT, trace, checks, atol)


def runtime_settings(config: DiffusionConfig, action_dim: int) -> dict[str, Any]:
    """manifest["runtime"]: horizons and the sampler the runtime runs (changeable without retraining,
    as long as the sampler matches how the denoiser was trained)."""
    return {
        "n_obs_steps": config.n_obs_steps,
        "horizon": config.horizon,
        "n_action_steps": config.n_action_steps,
        "action_dim": action_dim,
        "sampler": config.sampler,
        "replan_every": config.replan_every,
        # Inputs the runtime feeds to the denoiser, in its input order (absent without extra conditions).
        **({"extra_cond": list(config.extra_cond_dims)} if config.extra_cond_dims else {}),
        "ddim": {
            "num_train_timesteps": config.num_train_timesteps,
            "beta_schedule": config.beta_schedule,
            "steps": config.ddim_steps,
            "eta": config.ddim_eta,
            "clip_sample": config.clip_sample,
        },
        "edm": {
            "steps": config.edm_steps,
            "method": config.edm_method,
            "sigma_min": config.sigma_min,
            "sigma_max": config.sigma_max,
            "rho": config.rho,
            "sigma_data": config.sigma_data,
        },
    }


def build_manifest(
    config: DiffusionConfig,
    joint_names: list[str],
    image_shapes: dict[str, list[int]],
    fps: float,
    joint_mean: np.ndarray,
    joint_std: np.ndarray,
    action_mean: np.ndarray,
    action_std: np.ndarray,
    robot_profile: str = "panda",
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of an export directory (the store adds name, version and file checksums).
    Statistics are per joint (rad / m): joints and absolute action targets are mean/std normalised."""
    inputs = common_export.observation_inputs(
        joint_names, joint_mean, joint_std, config.cameras, image_shapes, IMAGE_SCALE
    )
    for name, dim in config.extra_cond_dims.items():  # fed to the denoiser as given, no normalisation
        inputs.append(
            {"name": name, "kind": "vector", "shape": [dim], "dtype": "float32", "normalization": {"type": "none"}}
        )
    return {
        "schema_version": 1,
        "family": FAMILY,
        "robot_profile": robot_profile,
        "graphs": {"encoder": ENCODER_FILE, "denoiser": DENOISER_FILE},
        "inputs": inputs,
        "outputs": {
            "kind": "joint_position_chunk",
            "joint_names": list(joint_names),
            "chunk_length": config.n_action_steps,
            "dt": 1.0 / float(fps),
            "chunk_normalization": normalization.mean_std(action_mean, action_std),
        },
        "provenance": {
            "code_commit": "unknown",
            "config": config.to_dict(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **(provenance or {}),
        },
        "evaluation": {},
        "runtime": runtime_settings(config, len(joint_names)),
    }


def write_policy_dir(
    out_dir: str | Path, encoder: ObservationEncoder, denoiser: nn.Module, manifest: dict[str, Any], atol: float = 1e-4
) -> Path:
    """Export both graphs and `manifest.json` into the new directory `out_dir` (must not exist or be
    empty); nothing is left behind if the export fails."""
    rt = manifest["runtime"]
    cond_dim = rt["n_obs_steps"] * encoder.out_dim
    edm = rt["sampler"] == "edm"
    # The timesteps the denoiser sees: c_noise over [sigma_min, sigma_max] (EDM) or 0..N-1 (DDPM).
    t_range = (
        (0.25 * np.log(rt["edm"]["sigma_min"]), 0.25 * np.log(rt["edm"]["sigma_max"]))
        if edm
        else (0.0, rt["ddim"]["num_train_timesteps"] - 1.0)
    )
    widths = {spec["name"]: spec["shape"][0] for spec in manifest["inputs"]}
    extra = {name: int(widths[name]) for name in rt.get("extra_cond", [])}

    def write_graphs(tmp: Path) -> dict[str, float]:
        return {
            "encoder": export_encoder(encoder, tmp / ENCODER_FILE, atol),
            "denoiser": export_denoiser(
                denoiser,
                tmp / DENOISER_FILE,
                rt["horizon"],
                rt["action_dim"],
                cond_dim,
                atol,
                (float(t_range[0]), float(t_range[1])),
                extra,
            ),
        }

    return common_export.write_policy_dir(out_dir, manifest, write_graphs)


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    atol: float = 1e-4,
    self_verification: int | None = None,
    replan_every: int | None = None,
) -> Path:
    """Export the EMA weights of the trained run in `run_dir` (`train.py`) into the new directory
    `out_dir` (must not exist or be empty): both graphs + manifest.json with the run's
    normalisation stats and provenance (code commit, dataset hash, config, training time).
    `self_verification` = N >= 2 turns on PTP's test-time self-verification with N candidates
    (needs a run trained with past tokens in the loss). `replan_every` overrides the run's
    `config.replan_every` (a sampling setting). Nothing is written if the export fails."""
    common_export.refuse_existing(out_dir)
    model, config, run_info = load_trained(run_dir)
    if replan_every is not None:
        config = dataclasses.replace(config, replan_every=int(replan_every))  # validated by the config
    stats = run_info["stats"]
    provenance = common_export.run_provenance(run_info, config.to_dict())
    manifest = build_manifest(
        config,
        run_info["joint_names"],
        run_info["image_shapes"],
        run_info["fps"],
        np.asarray(stats["joint_mean"]),
        np.asarray(stats["joint_std"]),
        np.asarray(stats["action_mean"]),
        np.asarray(stats["action_std"]),
        robot_profile=run_info["robot_profile"],
        provenance=provenance,
    )
    # Which past tokens were trained (PTP): self-verification compares only those with the executed actions.
    manifest["runtime"]["past_tokens_in_loss"] = config.past_tokens_in_loss
    if self_verification is not None:
        if isinstance(self_verification, bool) or int(self_verification) < 2:
            raise ValueError(f"self_verification={self_verification!r}: need N >= 2 candidates")
        if config.past_tokens_in_loss < 1:
            raise ValueError(
                f"self-verification compares predicted past actions with executed ones; run {run_dir} "
                "was trained without past tokens in the loss (train with --past-tokens K >= 1)"
            )
        manifest["runtime"]["self_verification"] = {"num_candidates": int(self_verification)}
    if run_info.get("frozen_encoder"):
        manifest["provenance"]["encoder_hash"] = run_info["frozen_encoder"]["encoder_hash"]
    return write_policy_dir(out_dir, model.encoder, model.denoiser, manifest, atol)
