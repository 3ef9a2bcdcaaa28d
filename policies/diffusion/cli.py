"""`dexstack train diffusion ARGS...` (the family's `train` entry, dexstack/families.py).

    dexstack train diffusion --dataset DIR --out RUN_DIR [--epochs N] [--seed S] [--resume] [--past-tokens K]
                             [--config JSON] [--encoder-run RUN --embeddings CACHE]

Torch is imported only when the command runs, so `--help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

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
def train_diffusion(
    dataset: DatasetOption,
    out: OutOption,
    epochs: EpochsOption = None,
    seed: SeedOption = None,
    resume: ResumeOption = False,
    past_tokens: Annotated[
        int | None,
        typer.Option("--past-tokens", help="PTP: past action tokens in the loss (0 = off; at most n_obs_steps - 1)"),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config", help="JSON file of DiffusionConfig fields overriding the defaults (e.g. n_obs_steps, horizon)"
        ),
    ] = None,
    encoder_run: Annotated[
        Path | None,
        typer.Option("--encoder-run", help="PTP stage 3: freeze this trained run's encoder (needs --embeddings)"),
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(help="PTP stage 3: the encoder run's feature cache of --dataset (`dexstack train embed`)"),
    ] = None,
) -> None:
    """Diffusion policy: CNN keypoint encoders + 1-D UNet or causal transformer denoiser (DDPM or EDM)."""
    from dexstack.policies.diffusion.config import DiffusionConfig

    if resume and (
        seed is not None
        or past_tokens is not None
        or config_file is not None
        or encoder_run is not None
        or embeddings is not None
    ):
        fail(
            "--seed, --past-tokens, --config, --encoder-run and --embeddings cannot change when resuming "
            "(the run keeps its own)"
        )
    if (encoder_run is None) != (embeddings is None):
        fail(
            "--encoder-run and --embeddings go together (PTP stage 3: train on the cached features of a frozen encoder)"
        )
    fields = DiffusionConfig().to_dict()
    try:
        if config_file is not None:
            overrides = json.loads(config_file.read_text())
            if not isinstance(overrides, dict):
                raise ValueError(f"{config_file} must hold a JSON object of config fields")
            fields.update(overrides)
        if seed is not None:
            fields["seed"] = seed
        if past_tokens is not None:
            fields["past_tokens_in_loss"] = past_tokens
        config = DiffusionConfig.from_dict(fields)
    except (OSError, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        fail(f"bad diffusion config: {exc}")
    from dexstack.policies.diffusion.train import train

    train_and_report(train, dataset, out, config, resume, epochs, encoder_run=encoder_run, embeddings=embeddings)


def main(argv: list[str]) -> int:
    """Run the command on `argv`; returns the exit code."""
    return run_family_command(app, argv, "diffusion")
