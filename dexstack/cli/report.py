"""What an evaluation leaves behind: the JSON summary, an MP4 and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def percentile(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def summary(policy: str, task: str, successes: list[bool], inference_ms: list[float] | None = None,
            **extra: object) -> dict:
    """The one JSON line `dexstack eval` and `make demo` end with."""
    out = {
        "policy": policy,
        "task": task,
        "episodes": len(successes),
        "success_rate": round(float(np.mean(successes)), 4) if successes else 0.0,
    }
    if inference_ms is not None:
        out["inference_ms_p50"] = percentile(inference_ms, 50)
        out["inference_ms_p99"] = percentile(inference_ms, 99)
    out.update(extra)
    return out


def json_line(data: dict) -> str:
    return json.dumps(data, sort_keys=False)


def write_video(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """RGB frames -> MP4 (mp4v), upscaled so a 96-px camera is watchable."""
    import cv2

    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    scale = max(1, 384 // max(h, w))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w * scale, h * scale))
    for frame in frames:
        big = cv2.resize(frame, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_plot(successes: list[bool], latency_ms: list[float] | None, path: str | Path, title: str,
               latency_series: list[tuple[float, float, float]] | None = None) -> Path:
    """Cumulative success rate per episode, and inference latency: the distribution of every call
    (in-process) or the policy node's reported p50/p99 over the run (through ROS)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    episodes = np.arange(1, len(successes) + 1)
    axes[0].plot(episodes, np.cumsum(successes) / episodes, marker="o")
    axes[0].set(xlabel="episode", ylabel="success rate so far", ylim=(0, 1.05), title="success")
    if latency_ms:
        axes[1].hist(latency_ms, bins=40)
        axes[1].axvline(np.percentile(latency_ms, 99), color="r", linestyle="--", label="p99")
        axes[1].legend()
        axes[1].set(xlabel="ms", ylabel="count", title="inference latency")
    elif latency_series:
        t, p50, p99 = (np.array(c) for c in zip(*latency_series, strict=True))
        axes[1].plot(t, p50, label="p50")
        axes[1].plot(t, p99, label="p99")
        axes[1].set_ylim(bottom=0)
        axes[1].legend()
        axes[1].set(xlabel="wall s", ylabel="ms", title="policy node inference latency (diagnostics)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
