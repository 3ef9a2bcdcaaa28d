"""dexstack train / export commands; families come from the registry (dexstack/families.py).

    dexstack train FAMILY ARGS...      # the family's `train` entry parses ARGS (`dexstack train FAMILY --help`)
    dexstack export --run RUN_DIR --out EXPORT_DIR [--self-verification N]

Torch is imported only inside the commands, so `dexstack --help` stays fast and works on a
serving machine without torch.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from dexstack.families import families, get_family, resolve

train_app = typer.Typer(no_args_is_help=True, help="Train a policy family on a dataset.")

# A family's train entry parses its own arguments, --help included.
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


# The options every supervised family's train command takes (policies/<family>/cli.py).
DatasetOption = Annotated[Path, typer.Option(help="dataset directory (meta.json + episode_*.npz)")]
OutOption = Annotated[Path, typer.Option(help="run directory: checkpoints, loss curve, config")]
EpochsOption = Annotated[int | None, typer.Option(help="total epochs (default: the config's)")]
SeedOption = Annotated[int | None, typer.Option(help="random seed (default: the config's)")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last checkpoint")]


def run_family_command(app: typer.Typer, argv: list[str], family: str) -> int:
    """Run a family's typer `app` on `argv` as `dexstack train <family>`; returns the exit code."""
    return app(args=argv, prog_name=f"dexstack train {family}", standalone_mode=False) or 0


def fail(message: str) -> NoReturn:
    """Print `error: message` in red on stderr and exit 1 (for family train entries too)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def train_and_report(
    train: Any, dataset: Path, out: Path, config: Any, resume: bool, epochs: int | None, **extra: Any
) -> None:
    """Run a supervised family's `train` and print its JSON summary last; known failures exit 1 with the reason."""
    try:
        history = train(dataset, out, config, resume=resume, epochs=epochs, progress=True, **extra)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        fail(str(exc))
    last = history[-1]
    typer.echo(
        json.dumps(
            {
                "run": str(out),
                "epochs": last["epoch"],
                "initial_loss": history[0]["train_loss"],
                "train_loss": last["train_loss"],
                "val_loss": last["val_loss"],
                "loss_curve": str(out / "loss.png"),
            }
        )
    )


def _train_command(name: str) -> Any:
    def command(ctx: typer.Context) -> None:
        raise typer.Exit(resolve(get_family(name).train)(list(ctx.args)) or 0)

    return command


def export_cmd(
    run: Annotated[Path, typer.Option(help="run directory written by `dexstack train`")],
    out: Annotated[Path, typer.Option(help="new export directory (policy graph(s) + manifest.json)")],
    self_verification: Annotated[
        int | None,
        typer.Option(
            "--self-verification",
            help="PTP (diffusion): sample N candidates per chunk and execute the one whose "
            "predicted past best matches the executed actions",
        ),
    ] = None,
) -> None:
    """Export a trained run to ONNX + manifest.json, ready for `dexstack store publish`."""
    run_json = run / "run.json"
    if not run_json.is_file():
        fail(f"{run} is not a training run directory ({run_json.name} not found)")
    family_name = json.loads(run_json.read_text()).get("family")
    try:
        family = get_family(family_name)
    except KeyError as exc:
        fail(f"run {run}: {exc.args[0]}")
    if family.export is None:
        fail(f"run {run} is of family {family_name!r}, which has no exporter")
    export = resolve(family.export)
    options: dict[str, Any] = {}
    if self_verification is not None:
        if "self_verification" not in inspect.signature(export).parameters:
            fail(f"--self-verification is not an option of family {family_name!r}'s exporter (run {run})")
        options["self_verification"] = self_verification
    try:
        path = export(run, out, **options)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    manifest = json.loads((path / "manifest.json").read_text())
    typer.echo(
        json.dumps(
            {
                "export": str(path),
                "family": family_name,
                "graphs": manifest["graphs"],
                "onnx_max_abs_diff": manifest["provenance"].get("onnx_max_abs_diff"),
                "files": manifest.get("files"),  # the sha256 `dexstack store publish` will check
            }
        )
    )


def register(app: typer.Typer) -> None:
    known = {command.name for command in train_app.registered_commands}
    for name, family in families().items():
        if family.train is not None and name not in known:
            train_app.command(
                name,
                help=family.description or f"Train a {name} policy.",
                context_settings=_PASS_THROUGH,
                add_help_option=False,
            )(_train_command(name))
    app.add_typer(train_app, name="train")
    app.command("export")(export_cmd)
