"""Export the observation encoder and the per-step denoiser to ONNX, and write a policy directory.

Graphs (legacy TorchScript exporter, opset 17, dynamic batch axis):
- `encoder.onnx`: joint_positions (B, J) normalised, `<camera>_rgb` (B, H, W, 3) float32 scaled
  -> `features` (B, F), one frame.
- `denoiser.onnx`: `noisy_actions` (B, Tp, A), `timestep` (B,) float32, `cond` (B, To * F)
  -> `denoiser_out` (B, Tp, A): eps for DDPM/DDIM, the EDM network output F for EDM.
The sampler loop runs in the runtime around `denoiser.onnx` (numpy, `schedulers.py`).
Every export is checked: onnxruntime must reproduce torch within `atol` or `ExportError` is
raised and nothing is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexstack import contract
from dexstack.policies.common.export_check import ExportError, accept_graph  # noqa: F401  (ExportError: callers catch it here)
from dexstack.policies.diffusion.config import FAMILY, DiffusionConfig
from dexstack.policies.diffusion.model import IMAGE_SCALE, ObservationEncoder

OPSET = 17
ENCODER_FILE, DENOISER_FILE = "encoder.onnx", "denoiser.onnx"
FEATURES = "features"
DENOISER_INPUTS = ["noisy_actions", "timestep", "cond"]
DENOISER_OUTPUT = "denoiser_out"


@contextlib.contextmanager
def exportable() -> Iterator[None]:
    """Disable the fused multi-head-attention fast path (the legacy exporter cannot trace it) and
    silence the legacy exporter's notices; restores the previous setting."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def encoder_sample_inputs(encoder: ObservationEncoder, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """Normalised joints ~ N(0, 1) and random uint8 images scaled like the runtime scales them."""
    gen = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (batch, *cnn.image_hw, 3), generator=gen).to(torch.float32) * IMAGE_SCALE
              for cnn in encoder.cnns.values()]
    return [torch.randn(batch, encoder.n_joints, generator=gen), *images]


def denoiser_sample_inputs(horizon: int, action_dim: int, cond_dim: int, batch: int, seed: int = 0,
                           timestep_range: tuple[float, float] = (0.0, 99.0)) -> list[torch.Tensor]:
    """Noisy actions ~ N(0, 1), timesteps uniform in `timestep_range`, condition ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = timestep_range
    return [torch.randn(batch, horizon, action_dim, generator=gen), lo + (hi - lo) * torch.rand(batch, generator=gen),
            torch.randn(batch, cond_dim, generator=gen)]


def _export(model: nn.Module, inputs: list[torch.Tensor], names: list[str], output: str, path: Path) -> None:
    dynamic = {n: {0: "batch"} for n in [*names, output]}
    model.eval()
    with exportable():
        torch.onnx.export(model, tuple(inputs), str(path), input_names=names, output_names=[output],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def _max_diff(model: nn.Module, path: Path, names: list[str], output: str,
              batches: list[list[torch.Tensor]]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    model.eval()
    for inputs in batches:
        with torch.no_grad():
            expected = model(*inputs).numpy()
        (got,) = session.run([output], {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def export_encoder(encoder: ObservationEncoder, path: str | Path, atol: float = 1e-4) -> float:
    """Write `encoder` to ONNX at `path`, check batch 1 and 3 against torch; returns the largest
    absolute difference, raises ExportError (and removes the file) above `atol`."""
    path = Path(path)
    names = encoder.input_names()
    _export(encoder, encoder_sample_inputs(encoder, 1), names, FEATURES, path)
    diff = _max_diff(encoder, path, names, FEATURES, [encoder_sample_inputs(encoder, b, b) for b in (1, 3)])
    return accept_graph(diff, atol, path)


def export_denoiser(denoiser: nn.Module, path: str | Path, horizon: int, action_dim: int, cond_dim: int,
                    atol: float = 1e-4, timestep_range: tuple[float, float] = (0.0, 99.0)) -> float:
    """Write the per-step denoiser to ONNX at `path`; checked like `export_encoder` on batch 1 and 4.
    `timestep_range`: the timesteps it will see (DDPM: 0..N-1; EDM: c_noise = log(sigma) / 4)."""
    path = Path(path)
    _export(denoiser, denoiser_sample_inputs(horizon, action_dim, cond_dim, 1), DENOISER_INPUTS, DENOISER_OUTPUT,
            path)
    checks = [denoiser_sample_inputs(horizon, action_dim, cond_dim, b, b, timestep_range) for b in (1, 4)]
    diff = _max_diff(denoiser, path, DENOISER_INPUTS, DENOISER_OUTPUT, checks)
    return accept_graph(diff, atol, path)


def runtime_settings(config: DiffusionConfig, action_dim: int) -> dict[str, Any]:
    """manifest["runtime"]: horizons and the sampler the runtime runs (changeable without retraining,
    as long as the sampler matches how the denoiser was trained)."""
    return {
        "n_obs_steps": config.n_obs_steps, "horizon": config.horizon, "n_action_steps": config.n_action_steps,
        "action_dim": action_dim, "sampler": config.sampler, "replan_every": config.replan_every,
        "ddim": {"num_train_timesteps": config.num_train_timesteps, "beta_schedule": config.beta_schedule,
                 "steps": config.ddim_steps, "eta": config.ddim_eta, "clip_sample": config.clip_sample},
        "edm": {"steps": config.edm_steps, "method": config.edm_method, "sigma_min": config.sigma_min,
                "sigma_max": config.sigma_max, "rho": config.rho, "sigma_data": config.sigma_data},
    }


def build_manifest(config: DiffusionConfig, joint_names: list[str], image_shapes: dict[str, list[int]], fps: float,
                   joint_mean: np.ndarray, joint_std: np.ndarray, action_mean: np.ndarray, action_std: np.ndarray,
                   robot_profile: str = "panda", provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of an export directory (the store adds name, version and file checksums).
    Statistics are per joint (rad / m): joints and absolute action targets are mean/std normalised."""
    inputs: list[dict[str, Any]] = [{
        "name": contract.JOINT_POSITIONS, "kind": "joint_positions", "source": contract.JOINT_STATES,
        "names": list(joint_names), "shape": [len(joint_names)], "dtype": "float32",
        "normalization": {"type": "mean_std", "mean": np.asarray(joint_mean).tolist(),
                          "std": np.asarray(joint_std).tolist()},
    }]
    for cam in config.cameras:
        inputs.append({"name": contract.rgb_key(cam), "kind": "rgb", "source": contract.camera_color_topic(cam),
                       "shape": list(image_shapes[cam]), "dtype": "uint8",
                       "normalization": {"type": "scale", "scale": IMAGE_SCALE}})
    return {
        "schema_version": 1, "family": FAMILY, "robot_profile": robot_profile,
        "graphs": {"encoder": ENCODER_FILE, "denoiser": DENOISER_FILE},
        "inputs": inputs,
        "outputs": {
            "kind": "joint_position_chunk", "joint_names": list(joint_names),
            "chunk_length": config.n_action_steps, "dt": 1.0 / float(fps),
            "chunk_normalization": {"type": "mean_std", "mean": np.asarray(action_mean).tolist(),
                                    "std": np.asarray(action_std).tolist()},
        },
        "provenance": {"code_commit": "unknown", "config": config.to_dict(), "created": datetime.now(UTC).isoformat(timespec="seconds"),
                       **(provenance or {})},
        "evaluation": {},
        "runtime": runtime_settings(config, len(joint_names)),
    }


def write_policy_dir(out_dir: str | Path, encoder: ObservationEncoder, denoiser: nn.Module,
                     manifest: dict[str, Any], atol: float = 1e-4) -> Path:
    """Export both graphs and `manifest.json` into the new directory `out_dir` (must not exist or be
    empty); written into a temporary sibling and renamed, so a failed export leaves nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"export directory {out_dir} exists and is not empty; choose a new one")
    rt = manifest["runtime"]
    cond_dim = rt["n_obs_steps"] * encoder.out_dim
    edm = rt["sampler"] == "edm"
    # The timesteps the denoiser sees: c_noise over [sigma_min, sigma_max] (EDM) or 0..N-1 (DDPM).
    t_range = ((0.25 * np.log(rt["edm"]["sigma_min"]), 0.25 * np.log(rt["edm"]["sigma_max"])) if edm
               else (0.0, rt["ddim"]["num_train_timesteps"] - 1.0))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        enc_diff = export_encoder(encoder, tmp / ENCODER_FILE, atol)
        den_diff = export_denoiser(denoiser, tmp / DENOISER_FILE, rt["horizon"], rt["action_dim"], cond_dim, atol,
                                   (float(t_range[0]), float(t_range[1])))
        manifest = {**manifest, "provenance": {**manifest["provenance"], "onnx_max_abs_diff":
                                               {"encoder": enc_diff, "denoiser": den_diff}}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_run(run_dir: str | Path, out_dir: str | Path, atol: float = 1e-4,
               self_verification: int | None = None, replan_every: int | None = None) -> Path:
    """Export the EMA weights of the trained run in `run_dir` (`train.py`) into the new directory
    `out_dir` (must not exist or be empty): both graphs + manifest.json with the run's
    normalisation stats and provenance (code commit, dataset hash, config, training time).
    `self_verification` = N >= 2 turns on PTP's test-time self-verification with N candidates
    (needs a run trained with past tokens in the loss). `replan_every` overrides the run's
    `config.replan_every` (a sampling setting). Nothing is written if the export fails."""
    import math

    from dexstack.policies.diffusion.train import load_trained

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"export directory {out_dir} exists and is not empty; choose a new --out")
    model, config, run_info = load_trained(run_dir)
    if replan_every is not None:
        config = dataclasses.replace(config, replan_every=int(replan_every))  # validated by the config
    stats = run_info["stats"]
    history = run_info.get("history") or [{}]
    last_val = history[-1].get("val_loss")
    provenance = {
        "code_commit": run_info.get("code_commit", "unknown"), "dataset_hash": run_info.get("dataset_hash", ""),
        # The dataset hash identifies the data; no machine paths in a shipped manifest.
        "dataset": Path(run_info.get("dataset", "")).name, "training_time_s": round(float(run_info.get("training_time_s", 0.0)), 3),
        "epochs_trained": len(history) - 1,
        # NaN (no validation episodes) is not valid strict JSON
        "final_val_loss": float(last_val) if isinstance(last_val, float) and math.isfinite(last_val) else None,
    }
    manifest = build_manifest(config, run_info["joint_names"], run_info["image_shapes"], run_info["fps"],
                              np.asarray(stats["joint_mean"]), np.asarray(stats["joint_std"]),
                              np.asarray(stats["action_mean"]), np.asarray(stats["action_std"]),
                              robot_profile=run_info["robot_profile"], provenance=provenance)
    # Which past tokens were trained (PTP): self-verification compares only those with the executed actions.
    manifest["runtime"]["past_tokens_in_loss"] = config.past_tokens_in_loss
    if self_verification is not None:
        if isinstance(self_verification, bool) or int(self_verification) < 2:
            raise ValueError(f"self_verification={self_verification!r}: need N >= 2 candidates")
        if config.past_tokens_in_loss < 1:
            raise ValueError(f"self-verification compares predicted past actions with executed ones; run {run_dir} "
                             "was trained without past tokens in the loss (train with --past-tokens K >= 1)")
        manifest["runtime"]["self_verification"] = {"num_candidates": int(self_verification)}
    if run_info.get("frozen_encoder"):
        manifest["provenance"]["encoder_hash"] = run_info["frozen_encoder"]["encoder_hash"]
    return write_policy_dir(out_dir, model.encoder, model.denoiser, manifest, atol)
