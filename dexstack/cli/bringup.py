"""`dexstack up`: start the bringup node list as processes (for machines without ros2 launch)."""

from __future__ import annotations

import json
import os
import signal
import sys

import typer
from rich.console import Console

from dexstack.graph import DEFAULT_POLICY, LAUNCH_ARGS, node_list, parse_launch_args
from dexstack.launcher import exit_line, node_environment, start_nodes, stop_in_order, supervise

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
    specs = node_list(parse_launch_args(launch_args or []))  # a bad value: one line (dexstack.cli.main)
    stopping = False

    def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal stopping
        stopping = True

    # Before any node starts: a Ctrl-C during start-up must stop what started, not leave it orphaned.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    procs = start_nodes(specs, env=node_environment(domain_id), log_dir=log_dir)
    for spec, p in zip(specs, procs, strict=True):
        role = " (critical)" if spec.critical else ""
        console.print(f"[green]started[/] {spec.name}{role} (pid {p.pid}): {spec.executable}", soft_wrap=True)
    for spec in specs:
        if spec.note:
            console.print(spec.note, soft_wrap=True)
    died = supervise(specs, procs, lambda: stopping, lambda line: console.print(f"[red]{line}[/]", soft_wrap=True))
    if died is not None:
        proc = procs[specs.index(died)]
        console.print(f"[red]{exit_line(died, proc.returncode, proc.pid)}[/]", soft_wrap=True)
    codes = stop_in_order(specs, procs)
    console.print("stopped: " + ", ".join(f"{s.name}={c}" for s, c in zip(specs, codes, strict=True)), soft_wrap=True)
    # 0 only if every node ended cleanly; a policy that died earlier makes a Ctrl-C'd run exit 1.
    sys.exit(1 if died is not None or any(codes) else 0)


def record_demos(
    episodes: int = typer.Option(150, "--episodes", min=1),
    seed: int = typer.Option(
        None, "--seed", help="first episode's seed; episode i uses seed + i (default: 0, or after the last on --append)"
    ),
    out: str = typer.Option("data/recordings", "--out", help="directory for the MCAP episode files"),
    task: str = typer.Option("pick_lift", "--task"),
    keep_failures: bool = typer.Option(False, "--keep-failures", help="also keep episodes the expert failed"),
    append: bool = typer.Option(
        False, "--append", help="add to a folder that already holds episodes (never reusing their seeds)"
    ),
) -> None:
    """Record scripted-expert demonstrations through the ROS graph (sim lockstep + recorder)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dexstack.cli.evaluate import private_domain_id
    from dexstack.ros_nodes.demo_collector import collect_demonstrations, plan_seeds

    out_dir = os.path.abspath(out)
    try:
        seeds = plan_seeds(out_dir, episodes, seed, task, append)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    os.makedirs(out_dir, exist_ok=True)
    with Progress(
        TextColumn("[bold]recording"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[ok]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("", total=episodes, ok="")
        kept = []

        def tick(done, success, path):
            kept.append(success)
            progress.update(bar, completed=done, ok=f"expert success {sum(kept)}/{len(kept)}")

        records = collect_demonstrations(
            episodes,
            seeds[0],
            out_dir,
            task=task,
            keep_failures=keep_failures,
            domain_id=private_domain_id(),
            log_dir=os.path.join(out_dir, "logs"),
            progress=tick,
        )
    ok = sum(r["success"] for r in records)
    typer.echo(
        json.dumps(
            {
                "episodes": len(records),
                "expert_success_rate": round(ok / len(records), 4),
                "kept": sum(r["mcap"] is not None for r in records),
                "out": out_dir,
            }
        )
    )


def demo(
    episodes: int = typer.Option(20, "--episodes", min=1),
    out: str = typer.Option("out/demo", "--out", help="where the MP4 and PNG go"),
    policy: str = typer.Option(DEFAULT_POLICY, "--policy"),
) -> None:
    """Bring up sim + safety filter + policy node (shipped policy) and run episodes through ROS."""
    from dexstack.cli import report
    from dexstack.cli.evaluate import run_eval

    out_dir = os.path.abspath(out)
    console.print(
        f"[bold]dexstack demo[/]: sim (lockstep) + safety filter + policy node serving '{policy}', "
        f"{episodes} episodes of pick_lift through ROS 2 (private domain, localhost only)"
    )
    summary = run_eval(
        policy,
        "pick_lift",
        episodes,
        seed=1000,
        through_ros=True,
        pacing="lockstep",
        video=os.path.join(out_dir, "episode.mp4"),
        plot=os.path.join(out_dir, "summary.png"),
        log_dir=os.path.join(out_dir, "logs"),
    )
    console.print(
        f"success {summary['success_rate']:.0%} over {summary['episodes']} episodes; "
        f"inference p50 {summary.get('inference_ms_p50')} ms, p99 {summary.get('inference_ms_p99')} ms"
    )
    video = summary.get("video") or "none: no camera frame arrived (see the sim's log)"
    console.print(f"video: {video}\nplot:  {summary.get('plot')}\nnode logs: {out_dir}/logs")
    typer.echo(report.json_line(summary))


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_extra_args": False})(up)
    app.command("record-demos")(record_demos)
    app.command()(demo)
