"""One way every family's runtime opens an ONNX graph (numpy + onnxruntime only: serving imports no torch)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def open_session(path: str | Path, threads: int) -> ort.InferenceSession:
    """A CPU session with `threads` intra-op threads and nothing running in parallel besides: the
    robot computer also runs drivers or the sim, so serving takes few cores and predictable ones.
    A missing or corrupt graph raises ValueError naming the file."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for missing or corrupt graphs
        raise ValueError(f"cannot load ONNX graph {path}: {exc}") from exc
