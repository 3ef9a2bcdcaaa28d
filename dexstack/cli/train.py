"""dexstack train / export commands.

    dexstack train bc --dataset DIR --out RUN_DIR [--epochs N] [--seed S] [--resume]
    dexstack train diffusion --dataset DIR --out RUN_DIR [--epochs N] [--seed S] [--resume] [--past-tokens K]
                             [--config JSON]
    dexstack export --run RUN_DIR --out EXPORT_DIR

Torch is imported only inside the commands, so `dexstack --help` stays fast and works on a
serving machine without torch.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Annotated

import typer

train_app = typer.Typer(no_args_is_help=True, help="Train a policy family on a dataset.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _train_and_report(train, dataset, out, config, resume: bool, epochs, **extra) -> None:
    """Run a family's `train` and print its JSON summary last; known failures exit 1 with the reason."""
    try:
        history = train(dataset, out, config, resume=resume, epochs=epochs, progress=True, **extra)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        _fail(str(exc))
    last = history[-1]
    typer.echo(json.dumps({"run": str(out), "epochs": last["epoch"], "initial_loss": history[0]["train_loss"],
                           "train_loss": last["train_loss"], "val_loss": last["val_loss"],
                           "loss_curve": str(out / "loss.png")}))


@train_app.command("bc")
def train_bc(
    dataset: Annotated[Path, typer.Option(help="dataset directory (meta.json + episode_*.npz)")],
    out: Annotated[Path, typer.Option(help="run directory: checkpoints, loss curve, config")],
    epochs: Annotated[int | None, typer.Option(help="total epochs (default: the config's)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: the config's)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last checkpoint")] = False,
) -> None:
    """Behaviour cloning: CNN keypoint encoders + MLP predicting a chunk of joint targets."""
    from dexstack.policies.bc.config import BCConfig
    from dexstack.policies.bc.train import train

    config = BCConfig()
    if seed is not None:
        if resume:
            _fail("--seed cannot change when resuming (the run keeps its own config)")
        config.seed = seed
    _train_and_report(train, dataset, out, config, resume, epochs)


@train_app.command("diffusion")
def train_diffusion(
    dataset: Annotated[Path, typer.Option(help="dataset directory (meta.json + episode_*.npz)")],
    out: Annotated[Path, typer.Option(help="run directory: checkpoints, loss curve, config")],
    epochs: Annotated[int | None, typer.Option(help="total epochs (default: the config's)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: the config's)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last checkpoint")] = False,
    past_tokens: Annotated[int | None, typer.Option(
        "--past-tokens", help="PTP: past action tokens in the loss (0 = off; at most n_obs_steps - 1)")] = None,
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="JSON file of DiffusionConfig fields overriding the defaults (e.g. n_obs_steps, horizon)")] = None,
    encoder_run: Annotated[Path | None, typer.Option(
        "--encoder-run", help="PTP stage 3: freeze this trained run's encoder (needs --embeddings)")] = None,
    embeddings: Annotated[Path | None, typer.Option(
        help="PTP stage 3: the encoder run's feature cache of --dataset (`dexstack train embed`)")] = None,
) -> None:
    """Diffusion policy: CNN keypoint encoders + 1-D UNet or causal transformer denoiser (DDPM or EDM)."""
    from dexstack.policies.diffusion.config import DiffusionConfig

    if resume and (seed is not None or past_tokens is not None or config_file is not None
                   or encoder_run is not None or embeddings is not None):
        _fail("--seed, --past-tokens, --config, --encoder-run and --embeddings cannot change when resuming "
              "(the run keeps its own)")
    if (encoder_run is None) != (embeddings is None):
        _fail("--encoder-run and --embeddings go together (PTP stage 3: train on the cached features of a frozen encoder)")
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
        _fail(f"bad diffusion config: {exc}")
    from dexstack.policies.diffusion.train import train

    _train_and_report(train, dataset, out, config, resume, epochs, encoder_run=encoder_run, embeddings=embeddings)


@train_app.command("gpayn")
def train_gpayn(
    out: Annotated[Path, typer.Option(help="run directory: encoder, checkpoints, replay buffer, learning curve")],
    steps: Annotated[int | None, typer.Option(help="total env steps (with --resume: train further)")] = None,
    demos: Annotated[int | None, typer.Option(help="scripted demo episodes pre-filling the buffer (0 = SAC from scratch)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: the config's)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last checkpoint")] = False,
) -> None:
    """G-PAYN: SAC on the hand from a grasp pose, replay buffer pre-filled with scripted grasps (vision + touch)."""
    from dexstack.policies.gpayn.train import main

    argv = ["--out", str(out)]
    for flag, value in (("--steps", steps), ("--demos", demos), ("--seed", seed)):
        if value is not None:
            argv += [flag, str(value)]
    raise typer.Exit(main(argv + (["--resume"] if resume else [])))


@train_app.command("embed")
def train_embed(
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
        _fail(str(exc))
    cache = load_embeddings(path, dataset)
    typer.echo(json.dumps({"embeddings": str(path), "episodes": len(cache.episodes),
                           "frames": int(sum(len(e) for e in cache.episodes)), "feature_dim": cache.feature_dim,
                           "encoder_hash": cache.encoder_hash, "wall_s": round(time.perf_counter() - t0, 2)}))


def export_cmd(
    run: Annotated[Path, typer.Option(help="run directory written by `dexstack train`")],
    out: Annotated[Path, typer.Option(help="new export directory (policy graph(s) + manifest.json)")],
    self_verification: Annotated[int | None, typer.Option(
        "--self-verification", help="PTP (diffusion): sample N candidates per chunk and execute the one whose "
                                    "predicted past best matches the executed actions")] = None,
) -> None:
    """Export a trained run to ONNX + manifest.json, ready for `dexstack store publish`."""
    run_json = run / "run.json"
    if not run_json.is_file():
        _fail(f"{run} is not a training run directory ({run_json.name} not found)")
    family = json.loads(run_json.read_text()).get("family")
    try:
        module = importlib.import_module(f"dexstack.policies.{family}.export")
    except ModuleNotFoundError:
        _fail(f"run {run} is of family {family!r}, which has no exporter (dexstack.policies.{family}.export)")
    try:
        # A family's exporter: `export_run(run_dir, out_dir)`, or BC's original name `export`.
        if self_verification is not None:
            if family != "diffusion":
                _fail(f"--self-verification is a diffusion-family option; run {run} is {family!r}")
            path = module.export_run(run, out, self_verification=self_verification)
        else:
            path = (getattr(module, "export_run", None) or module.export)(run, out)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    manifest = json.loads((path / "manifest.json").read_text())
    typer.echo(json.dumps({"export": str(path), "family": family, "graphs": manifest["graphs"],
                           "onnx_max_abs_diff": manifest["provenance"].get("onnx_max_abs_diff")}))


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
    app.command("export")(export_cmd)
