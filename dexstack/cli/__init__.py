"""The `dexstack` command line: one typer app, one sub-command module per area."""

from __future__ import annotations

import typer

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
    app()
