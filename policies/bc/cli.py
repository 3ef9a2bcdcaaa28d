"""`dexstack train bc ARGS...` (the family's `train` entry, dexstack/families.py).

    dexstack train bc --dataset DIR --out RUN_DIR [--epochs N] [--seed S] [--resume]

Torch is imported only when the command runs, so `--help` stays fast.
"""

from __future__ import annotations

import typer

from dexstack.cli.train import (
    DatasetOption,
    EpochsOption,
    OutOption,
    ResumeOption,
    SeedOption,
    fail,
    run_family_command,
    train_and_report,
)

app = typer.Typer(add_completion=False)


@app.command()
def train_bc(
    dataset: DatasetOption,
    out: OutOption,
    epochs: EpochsOption = None,
    seed: SeedOption = None,
    resume: ResumeOption = False,
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
    return run_family_command(app, argv, "bc")
