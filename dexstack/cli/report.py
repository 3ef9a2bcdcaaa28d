"""What an evaluation leaves behind: the JSON summary (and the paired comparison of two), an MP4
and a PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the summary only reads the records' fields
    from dexstack.sim.evaluate import EpisodeOutcome


def percentile(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def summary(
    policy: str, task: str, outcomes: list[EpisodeOutcome], inference_ms: list[float] | None = None, **extra: object
) -> dict:
    """The one JSON line `dexstack eval` and `make demo` end with, for every task and both
    backends: the overall success rate, `extra` (mode, latency figures, ...), per-episode lists
    in episode order (`seeds`, `outcomes`, `episode_sim_s`, one list per task metric) with each
    metric's mean over the episodes that have it (`mean_<metric>`), and for a task with groups
    a `groups` block ({group: success_rate, successes, episodes, seeds, outcomes, the metric
    lists and means}); then a metric's overall mean is the mean of its group means."""
    successes = [o.success for o in outcomes]
    out: dict = {
        "policy": policy,
        "task": task,
        "episodes": len(outcomes),
        "success_rate": round(float(np.mean(successes)), 4) if successes else 0.0,
    }
    if inference_ms is not None:
        out["inference_ms_p50"] = percentile(inference_ms, 50)
        out["inference_ms_p99"] = percentile(inference_ms, 99)
    out.update(extra)
    out |= _episode_lists(outcomes)
    groups = list(dict.fromkeys(o.group for o in outcomes if o.group is not None))
    if groups:
        blocks = {}
        for group in groups:
            mine = [o for o in outcomes if o.group == group]
            wins = sum(o.success for o in mine)
            blocks[group] = {
                "success_rate": round(wins / len(mine), 4),
                "successes": wins,
                "episodes": len(mine),
            } | _episode_lists(mine)
        for name in _metric_names(outcomes):
            means = [b[f"mean_{name}"] for b in blocks.values() if b[f"mean_{name}"] is not None]
            out[f"mean_{name}"] = round(float(np.mean(means)), 3) if means else None
        out["groups"] = blocks
    return out


def _metric_names(outcomes: list[EpisodeOutcome]) -> list[str]:
    return list(dict.fromkeys(name for o in outcomes for name in o.metrics))


def _episode_lists(outcomes: list[EpisodeOutcome]) -> dict:
    """Per-episode seeds, outcomes, sim times and metrics (3 decimals), with each metric's mean."""
    out: dict = {
        "seeds": [o.seed for o in outcomes],
        "outcomes": [bool(o.success) for o in outcomes],
        "episode_sim_s": [round(float(o.sim_s), 3) for o in outcomes],
    }
    for name in _metric_names(outcomes):
        values = [o.metrics.get(name) for o in outcomes]
        present = [float(v) for v in values if v is not None]
        out[name] = [None if v is None else round(float(v), 3) for v in values]
        out[f"mean_{name}"] = round(float(np.mean(present)), 3) if present else None
    return out


def compare_outcomes(first: dict, second: dict) -> dict[str, dict]:
    """Paired comparison of two `dexstack eval` summaries of the same seeds (e.g. in-process vs
    through ROS, before vs after a change): episodes are paired by group and seed. Per group
    shared by both (a task without groups: one, "all"), over the seeds both ran: success counts,
    the episodes where they disagree (only_first, only_second) and McNemar's exact two-sided
    p-value (binomial test of the disagreements; 1.0 without any), and the same pooled under
    "all". ValueError when the summaries share no group or a group shares no seed."""
    a_groups, b_groups = _paired_episodes(first), _paired_episodes(second)
    shared = [name for name in a_groups if name in b_groups]
    if not shared:
        raise ValueError("the two evaluations share no group of episodes")
    out: dict[str, dict] = {}
    totals = {"episodes": 0, "first": 0, "second": 0, "only_first": 0, "only_second": 0}
    for name in shared:
        a, b = a_groups[name], b_groups[name]
        seeds = sorted(set(a) & set(b))
        if not seeds:
            raise ValueError(f"{name or 'all'}: the two evaluations share no seed")
        row = {
            "episodes": len(seeds),
            "first": sum(a[s] for s in seeds),
            "second": sum(b[s] for s in seeds),
            "only_first": sum(a[s] and not b[s] for s in seeds),
            "only_second": sum(b[s] and not a[s] for s in seeds),
        }
        if name is not None:
            out[name] = row | {"p_value": _mcnemar_exact(row["only_first"], row["only_second"])}
        totals = {key: totals[key] + row[key] for key in totals}
    out["all"] = totals | {"p_value": _mcnemar_exact(totals["only_first"], totals["only_second"])}
    return out


def _paired_episodes(summary: dict) -> dict[str | None, dict[int, bool]]:
    """{group (None without groups): {seed: success}}. Reads summaries from before the common
    format too: the grasp task's "objects" block, and "seeds" as [first, last]."""
    blocks = summary.get("groups") or summary.get("objects")
    if blocks:
        return {name: _by_seed(block) for name, block in blocks.items()}
    return {None: _by_seed(summary)}


def _by_seed(block: dict) -> dict[int, bool]:
    seeds, outcomes = list(block["seeds"]), list(block["outcomes"])
    if len(seeds) == 2 and len(outcomes) != 2:  # [first, last]
        seeds = list(range(seeds[0], seeds[1] + 1))
    return dict(zip(seeds, (bool(o) for o in outcomes), strict=True))


def _mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(a Binomial(b + c, 1/2) is at least as far from its mean)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def json_line(data: dict) -> str:
    return json.dumps(data, sort_keys=False)


def check_writable(path: str | Path, what: str) -> Path:
    """`path` as a Path, once a file can be created there (its folder is made if missing); OSError
    naming `what` (e.g. "--video") otherwise. Checked before a run, so that a long evaluation
    does not end in an error about where its results should go."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path}: is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise OSError(f"{what} {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def write_video(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """RGB frames -> MP4 (mp4v), upscaled so a 96-px camera is watchable. OSError if the file
    could not be written (OpenCV's writer fails silently: it is checked here)."""
    import cv2

    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    scale = max(1, 384 // max(h, w))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w * scale, h * scale))
    if not writer.isOpened():
        raise OSError(f"cannot write video {path} (OpenCV could not open it for writing)")
    for frame in frames:
        big = cv2.resize(frame, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    writer.release()
    if not path.is_file() or path.stat().st_size == 0:
        raise OSError(f"video {path} was not written")
    return path


def write_plot(
    successes: list[bool],
    latency_ms: list[float] | None,
    path: str | Path,
    title: str,
    latency_series: list[tuple[float, float, float]] | None = None,
) -> Path:
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
