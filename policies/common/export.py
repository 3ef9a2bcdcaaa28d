"""The export tail the imitation families (bc, diffusion) share: torch -> ONNX, the check against
torch, the manifest's observation inputs and provenance, and the atomic write of a policy directory.

Graphs use the legacy TorchScript exporter (opset 17, dynamic batch axis): it handles these
conv / GroupNorm / MLP / attention networks directly and needs no onnxscript at export time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexstack import contract
from dexstack.policies.common import normalization
from dexstack.policies.common.export_check import accept_graph
from dexstack.store import file_checksums

OPSET = 17


@contextlib.contextmanager
def exportable() -> Iterator[None]:
    """Disable the fused multi-head-attention fast path (the legacy exporter cannot trace it) and
    silence the legacy exporter's notices (deprecation, GroupNorm's trace-time check); restores the
    previous setting."""
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


def export_onnx(model: nn.Module, inputs: list[torch.Tensor], names: list[str], output: str, path: Path) -> None:
    """Trace `model` (eval mode) on `inputs` into an ONNX graph with inputs `names`, one output."""
    dynamic = {n: {0: "batch"} for n in [*names, output]}
    model.eval()
    with exportable():
        torch.onnx.export(
            model,
            tuple(inputs),
            str(path),
            input_names=names,
            output_names=[output],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def onnx_max_abs_diff(
    model: nn.Module, path: Path, names: list[str], output: str, batches: list[list[torch.Tensor]]
) -> float:
    """Largest absolute difference between onnxruntime on the graph at `path` and torch, over `batches`."""
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


def export_checked(
    model: nn.Module,
    path: str | Path,
    names: list[str],
    output: str,
    trace_inputs: list[torch.Tensor],
    check_batches: list[list[torch.Tensor]],
    atol: float,
) -> float:
    """Export, then check against torch on `check_batches`: returns the largest absolute difference,
    or deletes the graph and raises ExportError above `atol`."""
    path = Path(path)
    export_onnx(model, trace_inputs, names, output, path)
    return accept_graph(onnx_max_abs_diff(model, path, names, output, check_batches), atol, path)


def refuse_existing(out_dir: str | Path) -> Path:
    """`out_dir` as a Path; FileExistsError unless it is absent or an empty directory."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"export directory {out_dir} exists and is not empty; choose a new --out")
    return out_dir


def write_policy_dir(out_dir: str | Path, manifest: dict[str, Any], write_graphs: Callable[[Path], Any]) -> Path:
    """Create the policy directory `out_dir` (must not exist or be empty): `write_graphs(tmp)` writes
    and checks the graphs into a temporary sibling and returns their ONNX-vs-torch differences
    (recorded as `provenance.onnx_max_abs_diff`), then `manifest.json` is written, with the sha256
    of every file ("files", which `dexstack store publish` checks), and the directory renamed into
    place, so a failed export leaves nothing behind. Returns `out_dir`."""
    out_dir = refuse_existing(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        diffs = write_graphs(tmp)
        manifest = {
            **manifest,
            "provenance": {**manifest["provenance"], "onnx_max_abs_diff": diffs},
            "files": file_checksums(tmp),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def observation_inputs(
    joint_names: list[str],
    joint_mean: Any,
    joint_std: Any,
    cameras: tuple[str, ...],
    image_shapes: dict[str, list[int]],
    image_scale: float,
) -> list[dict[str, Any]]:
    """manifest["inputs"] of a policy that sees joint positions (mean/std per joint, rad / m) and one
    uint8 RGB image per camera (scaled by `image_scale`), in that order."""
    inputs: list[dict[str, Any]] = [
        {
            "name": contract.JOINT_POSITIONS,
            "kind": "joint_positions",
            "source": contract.JOINT_STATES,
            "names": list(joint_names),
            "shape": [len(joint_names)],
            "dtype": "float32",
            "normalization": normalization.mean_std(joint_mean, joint_std),
        }
    ]
    for cam in cameras:
        inputs.append(
            {
                "name": contract.rgb_key(cam),
                "kind": "rgb",
                "source": contract.camera_color_topic(cam),
                "shape": list(image_shapes[cam]),
                "dtype": "uint8",
                "normalization": normalization.scale(image_scale),
            }
        )
    return inputs


def finite_or_none(value: Any) -> float | None:
    """NaN (no validation episodes) is not valid strict JSON; the manifest stays strict."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def run_provenance(run_info: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """manifest["provenance"] of a trained run: code, data (by hash: no machine paths in a shipped
    manifest), the config, training time and the final validation loss."""
    history = run_info.get("history") or [{}]
    return {
        "code_commit": run_info.get("code_commit", "unknown"),
        "dataset_hash": run_info.get("dataset_hash", ""),
        "dataset": Path(run_info.get("dataset", "")).name,
        "config": config,
        "training_time_s": round(float(run_info.get("training_time_s", 0.0)), 3),
        "epochs_trained": len(history) - 1,
        "final_val_loss": finite_or_none(history[-1].get("val_loss")),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
