"""The PTP results table (issue 3), one task at a time, resumable at every step.

    python -m dexstack.policies.diffusion.ptp_experiment run --task cover_pick --seeds 0 1 2   # into runs/ptp_v3
    python -m dexstack.policies.diffusion.ptp_experiment report > table.md
    python -m dexstack.policies.diffusion.ptp_experiment run --task cover_pick --first-recipe --root runs/ptp
    python -m dexstack.policies.diffusion.ptp_experiment probe --data data/cue_choice runs/ptp_v3/cue_choice/embeddings.npz

For a task's dataset (`data/<task>`, scripted demos) it runs PTP's multistage recipe once:

1. stage 1: a short-context policy (To=1) trained end to end with its encoder and an auxiliary
   regression head (STAGE1);
2. stage 2: every frame of the dataset embedded by that frozen encoder, cached (`embeddings.npz`);

then, per training seed, trains three denoisers on the cached features (stage 3, same frozen
encoder, same data, same step budget) and evaluates four rows with `dexstack eval`'s code path:

| row      | trained as                                   | served with                  |
|----------|----------------------------------------------|------------------------------|
| `to2`    | To=2, Tp=16 (no history)                     | one sample per plan          |
| `long`   | To=16, Tp=32, loss on current+future tokens  | one sample per plan          |
| `ptp`    | To=16, Tp=32, loss on all 15 past tokens too | one sample per plan          |
| `ptp_sv` | the `ptp` run                                | best of N=8 samples per plan |

Each plan's 8 actions execute open loop (one per 10 Hz policy period) before the next plan.

Every step is skipped when its output exists (a stopped run resumes where it was; a half-trained
run continues from its checkpoint; a run trained to other settings is refused: one root, one
recipe). Evaluations are in-process (the runtime the policy node serves, on the sim node's physics
core) with seeds 1000 + i, and write one JSON per cell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Stage 1 ("v3" in RESULTS.md): the auxiliary L1 head on the horizon's actions gives the encoder a
# direct signal, where the denoising loss reaches it only through noised targets; it lifted every
# row of the table (docs/RESULTS.md has both tables). FIRST_RECIPE keeps the first table reproducible.
STAGE1 = {
    "n_obs_steps": 1,
    "horizon": 32,
    "n_action_steps": 8,
    "down_dims": [32, 64, 128],
    "epochs": 40,
    "batch_size": 64,
    "lr": 3e-4,
    "warmup_steps": 200,
    "torch_threads": 2,
    "conv_channels": [16, 32, 32],
    "pooled_features": 8,
    "aux_regression_weight": 1.0,
}
# Stage 3: same denoiser size, optimiser and budget for every row; only context and loss differ.
# Plans execute open loop for their 8 actions (diffusion_policy's Ta): 8x fewer samples per episode.
# lr 1e-3 at batch 64 reached half the validation loss of 5e-4 at batch 128 for the same compute
# (cover_pick, To=2: 0.022 vs 0.057).
STAGE3 = {
    "n_action_steps": 8,
    "replan_every": 8,
    "down_dims": [32, 64, 128],
    "epochs": 40,
    "batch_size": 64,
    "lr": 1e-3,
    "warmup_steps": 200,
    "torch_threads": 1,
}
FIRST_RECIPE = {  # overrides (stage1, stage3) that give the first table: `--first-recipe`
    "stage1": {
        "horizon": 16,
        "down_dims": [64, 128, 256],
        "epochs": 15,
        "torch_threads": 1,
        "conv_channels": [32, 32, 64],
        "pooled_features": 0,
        "aux_regression_weight": 0.0,
    },
    "stage3": {"epochs": 20},
}
VARIANTS = {
    "to2": {"n_obs_steps": 2, "horizon": 16, "past_tokens_in_loss": 0},
    "long": {"n_obs_steps": 16, "horizon": 32, "past_tokens_in_loss": 0},
    "ptp": {"n_obs_steps": 16, "horizon": 32, "past_tokens_in_loss": 15},
}
ROWS = {  # row -> (trained variant, self-verification candidates)
    "to2": ("to2", None),
    "long": ("long", None),
    "ptp": ("ptp", None),
    "ptp_sv": ("ptp", 8),
}
ROW_TITLES = {
    "to2": "no history (To=2)",
    "long": "long context (To=16), no PTP",
    "ptp": "long context + PTP",
    "ptp_sv": "long context + PTP + self-verification (N=8)",
}
TASK_ORDER = ("cover_pick", "cue_choice", "pick_lift")
EVAL_SEED = 1000


def _log(message: str) -> None:
    print(f"[ptp {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _train(dataset: Path, run_dir: Path, fields: dict[str, Any], **frozen: Any) -> None:
    from dexstack.policies.diffusion.config import DiffusionConfig
    from dexstack.policies.diffusion.train import CHECKPOINT, train

    config = DiffusionConfig.from_dict({**DiffusionConfig().to_dict(), **fields})
    if (run_dir / CHECKPOINT).exists():
        # Resuming (or skipping) a run trained to another recipe would mix recipes in one table.
        # A field newer than the run counts as its default (the behaviour the run trained with).
        stored = {**DiffusionConfig().to_dict(), **json.loads((run_dir / "config.json").read_text())}
        wanted = config.to_dict()
        differ = sorted(k for k in fields if k != "epochs" and stored[k] != wanted[k])
        if differ:
            changes = ", ".join(f"{k}: {stored[k]!r} there, {wanted[k]!r} asked" for k in differ)
            raise ValueError(f"{run_dir} was trained with another recipe ({changes}); use another --root")
        history = json.loads((run_dir / "history.json").read_text())
        if history[-1]["epoch"] >= config.epochs:
            return
        _log(f"resuming {run_dir} at epoch {history[-1]['epoch']}")
        train(dataset, run_dir, resume=True, progress=False)
        return
    _log(f"training {run_dir}")
    train(dataset, run_dir, config, progress=False, **frozen)


def _export(run_dir: Path, out: Path, self_verification: int | None) -> Path:
    from dexstack.policies.diffusion.export import export_run

    if not (out / "manifest.json").exists():
        export_run(run_dir, out, self_verification=self_verification)
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs, each value JSON (`epochs=40`, `conv_channels=[16,32,32]`), into config fields."""
    from dexstack.policies.diffusion.config import DiffusionConfig

    known = set(DiffusionConfig().to_dict())
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise ValueError(f"{pair!r}: expected key=value with key one of {sorted(known)}")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{pair!r}: the value must be JSON ({err})") from None
    return fields


def run_task(
    root: Path,
    data_root: Path,
    task: str,
    seeds: list[int],
    episodes: int,
    rows: list[str],
    stage1: dict[str, Any] | None = None,
    stage3: dict[str, Any] | None = None,
) -> None:
    """The recipe above for one task; `stage1` / `stage3` override fields of STAGE1 / STAGE3."""
    from dexstack.cli.evaluate import run_eval
    from dexstack.policies.diffusion.embeddings import embed_dataset
    from dexstack.store import PolicyStore

    dataset = data_root / task
    task_dir = root / task
    encoder = task_dir / "encoder"
    stage1_fields = {**STAGE1, **(stage1 or {})}
    _train(dataset, encoder, stage1_fields)
    cache = task_dir / "embeddings.npz"
    if not cache.exists():
        t0 = time.perf_counter()
        embed_dataset(encoder, dataset, cache)
        _log(f"embedded {dataset} in {time.perf_counter() - t0:.1f} s")
    store = PolicyStore()
    results = task_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for row in rows:
            variant, candidates = ROWS[row]
            run_dir = task_dir / f"{variant}_s{seed}"
            _train(
                dataset,
                run_dir,
                {**STAGE3, **(stage3 or {}), **VARIANTS[variant], "seed": seed},
                encoder_run=encoder,
                embeddings=cache,
            )
            out = results / f"{row}_s{seed}.json"
            if out.exists():
                continue
            export = _export(run_dir, task_dir / "exports" / f"{row}_s{seed}", candidates)
            name = f"ptp-{task.replace('_', '-')}-{row.replace('_', '-')}-s{seed}"
            if not any(entry["name"] == name for entry in store.list()):
                store.publish(export, name)
            _log(f"evaluating {name} on {episodes} episodes")
            summary = run_eval(name, task, episodes, EVAL_SEED, through_ros=False)
            history = json.loads((run_dir / "history.json").read_text())
            summary.update(
                row=row,
                variant=variant,
                seed=seed,
                task=task,
                pooled_features=stage1_fields["pooled_features"],
                stage1=stage1 or {},
                stage3=stage3 or {},
                train_time_s=history[-1]["time_s"],
                epochs=history[-1]["epoch"],
                seconds_per_epoch=history[-1]["time_s"] / history[-1]["epoch"],
            )
            out.write_text(json.dumps(summary, indent=1) + "\n")
            _log(f"{name}: success {summary['success_rate']:.2f}")


def probe_cue(dataset_dir: Path, embeddings: Path, frames: tuple[int, int] = (3, 11), folds: int = 5) -> dict[str, Any]:
    """Does one frame of the cue, through the frozen encoder, tell the answer? A small MLP trained
    on the cached features of frames `frames` (the cue is in view) to predict the target's side
    (the sim is reset with each episode's recorded seed to read it), accuracy on held-out episodes.
    Memory can only help a policy built on these features if this is well above chance."""
    import torch

    from dexstack.dataset import Dataset
    from dexstack.policies.diffusion.embeddings import load_embeddings
    from dexstack.sim.core import SimCore

    dataset = Dataset(dataset_dir)
    cache = load_embeddings(embeddings, dataset)
    sim = SimCore(task="cue_choice", render=False)
    x, y, episode = [], [], []
    for pos, features in enumerate(cache.episodes):
        source = dataset.meta["episodes"][pos]["source"]  # "sim:cue_choice:seed=N"
        if not source.startswith("sim:cue_choice:seed="):
            raise ValueError(f"episode {pos} was not collected in sim for cue_choice ({source!r})")
        sim.reset(int(source.rsplit("=", 1)[1]))
        side = float(sim.object_pose()[0][1]) > 0
        x.extend(features[frames[0] : frames[1]])
        y.extend([side] * (frames[1] - frames[0]))
        episode.extend([pos] * (frames[1] - frames[0]))
    x_all = np.asarray(x, np.float32)
    x_all = (x_all - x_all.mean(0)) / (x_all.std(0) + 1e-6)
    y_all, episode_all = np.asarray(y, np.float32), np.asarray(episode)
    accuracies = []
    for fold in range(folds):
        train_rows = episode_all % folds != fold
        torch.manual_seed(fold)
        net = torch.nn.Sequential(torch.nn.Linear(x_all.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
        optimizer = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
        xs, ys = torch.from_numpy(x_all[train_rows]), torch.from_numpy(y_all[train_rows])
        for _ in range(600):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xs)[:, 0], ys)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            guess = net(torch.from_numpy(x_all[~train_rows]))[:, 0].numpy() > 0
        accuracies.append(float((guess == (y_all[~train_rows] > 0.5)).mean()))
    return {
        "embeddings": str(embeddings),
        "held_out_accuracy": float(np.mean(accuracies)),
        "per_fold": accuracies,
        "chance": float(max(y_all.mean(), 1 - y_all.mean())),
        "frames": list(frames),
    }


def collect(root: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """task -> row -> per-seed result dicts, from the cells written so far."""
    table: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for path in sorted(root.glob("*/results/*.json")):
        cell = json.loads(path.read_text())
        table.setdefault(cell["task"], {}).setdefault(cell["row"], []).append(cell)
    return table


def report(root: Path) -> str:
    """The markdown table: success mean ± std over seeds (episodes per seed), per row and task."""
    table = collect(root)
    tasks = [t for t in TASK_ORDER if t in table] + sorted(set(table) - set(TASK_ORDER))
    lines = ["| row | " + " | ".join(f"`{t}`" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for row, title in ROW_TITLES.items():
        cells = []
        for task in tasks:
            runs = table.get(task, {}).get(row, [])
            if not runs:
                cells.append("—")
                continue
            rates = np.array([r["success_rate"] for r in runs]) * 100
            episodes = sorted({int(r["episodes"]) for r in runs})
            cells.append(f"{rates.mean():.0f} ± {rates.std():.0f}% ({len(runs)}×{'/'.join(map(str, episodes))})")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Training wall-clock per epoch (s, mean over seeds; torch threads per run in brackets, "
        "two runs sharing 2 cores):",
        "",
        "| run | " + " | ".join(f"`{t}`" for t in tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    timing_rows = [("stage 1: To=1, end to end (images through the CNN)", ["encoder"])]
    timing_rows += [(f"stage 3 on cached embeddings: `{v}`", [f"{v}_s{s}" for s in range(10)]) for v in VARIANTS]
    for title, names in timing_rows:
        cells = []
        for task in tasks:
            per_epoch, threads = [], set()
            for name in names:
                path = root / task / name / "history.json"
                if path.exists():
                    last = json.loads(path.read_text())[-1]
                    per_epoch.append(last["time_s"] / max(last["epoch"], 1))
                    threads.add(json.loads((path.parent / "config.json").read_text())["torch_threads"])
            cells.append(f"{np.mean(per_epoch):.1f} ({'/'.join(map(str, sorted(threads)))})" if per_epoch else "—")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--task", required=True)
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--episodes", type=int, default=50)
    run.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    run.add_argument("--root", type=Path, default=Path("runs/ptp_v3"))
    run.add_argument("--data", type=Path, default=Path("data"))
    run.add_argument(
        "--first-recipe",
        action="store_true",
        help="the first table's recipe (FIRST_RECIPE); --stage1/--stage3 still apply on top",
    )
    run.add_argument(
        "--stage1",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="override STAGE1 fields of the encoder run, e.g. epochs=60 aux_regression_weight=0",
    )
    run.add_argument(
        "--stage3",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="override STAGE3 fields of every stage-3 run, e.g. epochs=20",
    )
    probe = sub.add_parser("probe", help="does one cached cue frame tell the answer? (cue_choice)")
    probe.add_argument("--data", type=Path, default=Path("data/cue_choice"))
    probe.add_argument("embeddings", type=Path, nargs="+")
    rep = sub.add_parser("report")
    rep.add_argument("--root", type=Path, default=Path("runs/ptp_v3"))
    args = parser.parse_args(argv)
    if args.command == "probe":
        for path in args.embeddings:
            print(json.dumps(probe_cue(args.data, path)))
        return
    if args.command == "report":
        print(report(args.root))
        return
    # Results publish into their own store, not the user's.
    os.environ.setdefault("DEXSTACK_HOME", str((args.root / "home").resolve()))
    stage1 = FIRST_RECIPE["stage1"] if args.first_recipe else {}
    stage3 = FIRST_RECIPE["stage3"] if args.first_recipe else {}
    run_task(
        args.root,
        args.data,
        args.task,
        args.seeds,
        args.episodes,
        args.rows,
        {**stage1, **parse_overrides(args.stage1)},
        {**stage3, **parse_overrides(args.stage3)},
    )


if __name__ == "__main__":
    sys.exit(main())
