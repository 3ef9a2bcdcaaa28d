"""The acceptance rule every family's ONNX export applies: onnxruntime must reproduce torch."""

from __future__ import annotations

from pathlib import Path


class ExportError(RuntimeError):
    """An exported graph (or the runtime built from it) does not reproduce the torch model."""


def accept_graph(diff: float, atol: float, path: Path) -> float:
    """Keep the graph at `path` if onnxruntime and torch differ by at most `atol` (returns `diff`);
    otherwise delete it and raise ExportError, so a failed export leaves nothing behind."""
    if not diff <= atol:
        path.unlink(missing_ok=True)
        raise ExportError(
            f"onnxruntime and torch differ by {diff:.3g} (> {atol:g}) on sample inputs; {path.name} not written"
        )
    return diff
