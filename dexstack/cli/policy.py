"""dexstack train/export/eval commands."""

import typer


def register(app: typer.Typer) -> None:
    pass
