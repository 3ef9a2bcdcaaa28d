"""`dexstack train bc ARGS...` (the family's `train` entry, dexstack/families.py).

    dexstack train bc --dataset DIR --out RUN_DIR [--epochs N] [--seed S] [--resume]

Torch is imported only when the command runs, so `--help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dexstack.cli.train import fail, train_and_report

app = typer.Typer(add_completion=False)


@app.command()
def train_bc(
    dataset: Annotated[Path, typer.Option(help="dataset directory (meta.json + episode_*.npz)")],
    out: Annotated[Path, typer.Option(help="run directory: checkpoints, loss curve, config")],
    epochs: Annotated[int | None, typer.Option(help="total epochs (default: the config's)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: the config's)")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the run in --out from its last checkpoint")
    ] = False,
) -> None:
    """Behaviour cloning: CNN keypoint encoders + MLP predicting a chunk of joint targets."""
    from dexstack.policies.bc.config import BCConfig
    from dexstack.policies.bc.train import train

    config = BCConfig()
    if seed is not None:
        if resume:
            fail("--seed cannot change when resuming (the run keeps its own config)")
        config.seed = seed
    train_and_report(train, dataset, out, config, resume, epochs)


def main(argv: list[str]) -> int:
    """Run the command on `argv`; returns the exit code."""
    return app(args=argv, prog_name="dexstack train bc", standalone_mode=False) or 0
