"""The `dexstack` command line: one typer app, one sub-command module per area.

A user's mistake ends as one line on stderr, `error: ...`, and exit code 1, never a traceback:
commands raise `DexstackError` (or ValueError / OSError for bad values and paths) and `main`
prints the message. `DEXSTACK_DEBUG=1` re-raises instead, for the traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from dexstack.errors import DexstackError, one_line

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="dexstack: serve, train, evaluate and store learned manipulation policies.",
)


def _register() -> None:
    # Each area registers its own commands; importing here keeps module import cheap.
    from dexstack.cli import bringup, data, doctor, evaluate, policy, store, train

    app.add_typer(store.app, name="store", help="List, inspect, verify, publish and promote policies.")
    app.add_typer(data.app, name="dataset", help="Build training datasets from MCAP recordings.")
    app.add_typer(policy.app, name="policy", help="Enable, disable, reload or inspect the running policy over DDS.")
    train.register(app)
    evaluate.register(app)
    bringup.register(app)
    app.command("doctor")(doctor.doctor)


def main() -> None:
    _register()
    try:
        app()
    except (DexstackError, ValueError, OSError) as exc:
        if os.environ.get("DEXSTACK_DEBUG"):
            raise
        typer.secho(f"error: {one_line(exc)}", fg=typer.colors.RED, err=True)
        sys.exit(1)
