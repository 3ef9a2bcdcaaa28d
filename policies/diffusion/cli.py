"""`dexstack train diffusion ARGS...` (the family's `train` entry, dexstack/families.py).

    dexstack train diffusion --dataset DIR --out RUN_DIR [--epochs N] [--seed S] [--resume] [--past-tokens K]
                             [--config JSON] [--encoder-run RUN --embeddings CACHE]
    dexstack train diffusion embed --run RUN --dataset DIR --out CACHE.npz   # PTP stage 2: cache frozen features

Torch is imported only when the command runs, so `--help` stays fast.
"""

from __future__ import annotations

import json
import time
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
embed_app = typer.Typer(add_completion=False)


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
        typer.Option(
            help="PTP stage 3: the encoder run's feature cache of --dataset (`dexstack train diffusion embed`)"
        ),
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


@embed_app.command()
def embed(
    run: Annotated[Path, typer.Option(help="trained diffusion run whose (EMA) encoder embeds the frames")],
    dataset: Annotated[Path, typer.Option(help="dataset directory to embed, every frame of every episode")],
    out: Annotated[Path, typer.Option(help="cache file to write (.npz)")],
) -> None:
    """PTP stage 2: embed every frame of a dataset with a run's frozen encoder and cache the features."""
    from dexstack.policies.diffusion.embeddings import embed_dataset, load_embeddings

    t0 = time.perf_counter()
    try:
        path = embed_dataset(run, dataset, out)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    cache = load_embeddings(path, dataset)
    typer.echo(
        json.dumps(
            {
                "embeddings": str(path),
                "episodes": len(cache.episodes),
                "frames": int(sum(len(e) for e in cache.episodes)),
                "feature_dim": cache.feature_dim,
                "encoder_hash": cache.encoder_hash,
                "wall_s": round(time.perf_counter() - t0, 2),
            }
        )
    )


def main(argv: list[str]) -> int:
    """Run the command on `argv` (`embed ...` for PTP stage 2, else training); returns the exit code."""
    if argv[:1] == ["embed"]:
        return run_family_command(embed_app, argv[1:], "diffusion embed")
    return run_family_command(app, argv, "diffusion")
