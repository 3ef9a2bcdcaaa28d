"""The manifest's normalisation records, written by exporters and read by runtimes (numpy only).

An input's `normalization` is one of
- `{"type": "mean_std", "mean": m, "std": s}`: normalised = (raw - m) / s (per element or scalar),
- `{"type": "scale", "scale": k, "offset": o}`: normalised = raw * k + o (`offset` optional, 0),
- `{"type": "none"}` (or absent): raw values.
`outputs.chunk_normalization` is a mean_std record mapping the graph's output back to raw units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("mean_std", "scale", "none")


def mean_std(mean: Any, std: Any) -> dict[str, Any]:
    """A mean_std record (arrays become JSON lists)."""
    return {"type": "mean_std", "mean": np.asarray(mean).tolist(), "std": np.asarray(std).tolist()}


def scale(factor: float) -> dict[str, Any]:
    """A scale record without offset, e.g. uint8 pixels -> [0, 1]."""
    return {"type": "scale", "scale": factor}


@dataclass(frozen=True)
class Normalization:
    """A parsed record. Each runtime applies it with its own arithmetic (kept as it was when its
    shipped policies were validated, so their outputs stay bit-identical)."""

    type: str
    mean: np.ndarray | None = None  # mean_std: float32
    std: np.ndarray | None = None  # mean_std: float32
    scale: np.float32 | None = None  # scale
    offset: float = 0.0  # scale


def parse(norm: dict[str, Any] | None, where: str) -> Normalization:
    """Read a record; an unknown type or a missing field raises ValueError naming `where`."""
    norm = norm or {"type": "none"}
    kind = norm.get("type")
    try:
        if kind == "mean_std":
            return Normalization(
                kind, mean=np.asarray(norm["mean"], np.float32), std=np.asarray(norm["std"], np.float32)
            )
        if kind == "scale":
            return Normalization(kind, scale=np.float32(norm["scale"]), offset=float(norm.get("offset", 0.0)))
    except KeyError as exc:
        raise ValueError(f"{where}: {kind} normalization lacks {exc.args[0]!r}") from None
    if kind == "none":
        return Normalization(kind)
    raise ValueError(f"{where}: normalization type {kind!r} is not supported; expected one of {list(KINDS)}")


def chunk_mean_std(out: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """float64 (mean, std) of `outputs.chunk_normalization` (identity when absent); only mean_std exists."""
    norm = out.get("chunk_normalization") or {"type": "mean_std", "mean": 0.0, "std": 1.0}
    if norm.get("type") != "mean_std":
        raise ValueError(f"outputs.chunk_normalization type {norm.get('type')!r} is not supported")
    return np.asarray(norm["mean"], np.float64), np.asarray(norm["std"], np.float64)
