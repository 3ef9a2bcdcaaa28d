"""`dexstack up`: start the bringup node list as processes (for machines without ros2 launch)."""

from __future__ import annotations

import signal
import sys
import time

import typer
from rich.console import Console

from dexstack.graph import LAUNCH_ARGS, node_list, parse_launch_args
from dexstack.launcher import node_environment, start_nodes, stop_nodes

console = Console(stderr=True)


def up(
    launch_args: list[str] = typer.Argument(None, help="NAME:=VALUE, as for ros2 launch (see --show-args)"),
    show_args: bool = typer.Option(False, "--show-args", help="List the launch arguments and exit."),
    log_dir: str = typer.Option(None, help="Write each node's output to LOG_DIR/<node>.log instead of the terminal."),
    domain_id: int = typer.Option(None, help="ROS_DOMAIN_ID for every node (default: inherit)."),
) -> None:
    """Start the same nodes as `ros2 launch dexstack bringup.launch.py`; Ctrl-C stops them all."""
    if show_args:
        for a in LAUNCH_ARGS:
            choices = f" (choices: {', '.join(a.choices)})" if a.choices else ""
            typer.echo(f"    '{a.name}':\n        {a.description}{choices}\n        (default: '{a.default}')")
        raise typer.Exit()
    try:
        values = parse_launch_args(launch_args or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    specs = node_list(values)
    procs = start_nodes(specs, env=node_environment(domain_id), log_dir=log_dir)
    for spec, p in zip(specs, procs, strict=True):
        console.print(f"[green]started[/] {spec.name} (pid {p.pid}): {spec.executable}")
    stopping = False

    def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    died = None
    while not stopping and died is None:
        time.sleep(0.2)
        died = next((s for s, p in zip(specs, procs, strict=True) if p.poll() is not None), None)
    if died is not None:
        console.print(f"[red]{died.name} exited with code {procs[specs.index(died)].returncode}; stopping all[/]")
    codes = stop_nodes(procs)
    console.print("stopped: " + ", ".join(f"{s.name}={c}" for s, c in zip(specs, codes, strict=True)))
    sys.exit(1 if died is not None else 0)


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_extra_args": False})(up)
