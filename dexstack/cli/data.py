"""`dexstack dataset`: build training datasets from MCAP episode recordings, and inspect them."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("build")
def build(
    sources: list[Path] = typer.Argument(..., help="MCAP episode files, or directories holding them"),
    out: Path = typer.Option(..., "--out", "-o", help="new dataset directory"),
    fps: float = typer.Option(None, help="frames per second (default: the policy rate)"),
    cameras: str = typer.Option(None, help="comma-separated cameras, e.g. wrist,scene (default: all of the profile)"),
    depth: bool = typer.Option(False, "--depth", help="also store each camera's depth (float32 metres)"),
    profile: str = typer.Option("panda", help="robot profile the recordings come from"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing dataset at --out"),
) -> None:
    """Convert MCAP episodes into a dataset (docs/DATASET.md). Each file is validated; files that
    fail are skipped with one line each saying why. The dataset appears only once complete."""
    from dexstack import contract
    from dexstack.dataset import META_FILE, DatasetError
    from dexstack.hardware.profiles import get_profile
    from dexstack.mcap_io import build_from_mcap, find_episode_files

    try:
        robot = get_profile(profile)
        files = find_episode_files(sources)
        cams = None if cameras is None else [c.strip() for c in cameras.split(",") if c.strip()]
        for cam in cams or []:
            robot.camera(cam)
    except (KeyError, FileNotFoundError) as exc:
        _fail(exc, 2)
    if (out / META_FILE).exists() and not overwrite:
        _fail(f"{out} already holds a dataset; pass --overwrite to replace it", 2)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"),
        console=console,
    ) as progress:
        bar = progress.add_task("converting", total=len(files), current="")
        skipped: list[str] = []

        def skip(line: str) -> None:
            skipped.append(line)
            progress.console.print(f"[yellow]skipped[/yellow] {escape(line)}", soft_wrap=True, highlight=False)

        try:
            dataset = build_from_mcap(
                files,
                out,
                fps=fps or contract.POLICY_HZ,
                profile=robot,
                cameras=cams,
                depth=depth,
                overwrite=overwrite,
                on_episode=lambda done, _total, path: progress.update(bar, completed=done, current=path.name),
                on_skip=skip if len(files) > 1 else None,  # one file: the error line says why
            )
        except (DatasetError, ValueError, OSError) as exc:
            _fail(exc, 1)
    console.print(f"wrote {len(dataset)} episodes, {dataset.num_frames} frames at {dataset.fps:g} Hz to {out}")
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} of {len(files)} files[/yellow] (reasons above)")
    console.print(f"content hash {dataset.content_hash()}")


def _fail(error: object, code: int) -> NoReturn:
    """One line on the console, no traceback (a user's mistake or a bad file is not a crash)."""
    console.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


@app.command("collect")
def collect(
    out: Path = typer.Option(..., "--out", "-o", help="new dataset directory"),
    episodes: int = typer.Option(100, "--episodes", min=1),
    seed: int = typer.Option(0, "--seed", help="first episode's seed; episode i uses seed + i"),
    task: str = typer.Option("pick_lift", "--task"),
    keep_failures: bool = typer.Option(False, "--keep-failures", help="also keep episodes the expert failed"),
) -> None:
    """Scripted-expert rollouts in-process (no ROS), written in the same dataset format."""
    from dexstack.sim.collect import collect_dataset

    with Progress(
        TextColumn("[bold]collecting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        bar = progress.add_task("", total=episodes)
        try:
            dataset = collect_dataset(
                out, episodes, seed, task, keep_failures, progress=lambda done, _: progress.update(bar, completed=done)
            )
        except ValueError as exc:  # a DatasetError, or an unknown task
            _fail(exc, 1)
    console.print(f"wrote {len(dataset)} episodes, {dataset.num_frames} frames at {dataset.fps:g} Hz to {out}")


@app.command("info")
def info(
    paths: list[Path] = typer.Argument(..., help="a dataset directory, or MCAP episode files / recording directories"),
) -> None:
    """Show a dataset's features and episodes, or the episode facts of MCAP recordings."""
    from dexstack.dataset import META_FILE, Dataset, DatasetError

    if len(paths) > 1 or not paths[0].is_dir() or not (paths[0] / META_FILE).is_file():
        if len(paths) == 1 and paths[0].is_dir() and not any(paths[0].glob("*.mcap*")):
            _fail(f"{paths[0]} is neither a dataset ({META_FILE} not found) nor a folder of .mcap recordings", 2)
        _recordings_info(paths)
        return
    root = paths[0]
    try:
        dataset = Dataset(root)
    except DatasetError as exc:
        _fail(exc, 2)
    meta = dataset.meta
    successes = [e["success"] for e in meta["episodes"] if e["success"] is not None]
    console.print(
        f"{root}: {len(dataset)} episodes, {dataset.num_frames} frames at {dataset.fps:g} Hz, "
        f"profile {meta['robot_profile']}, success {sum(successes)}/{len(successes)} labelled"
    )
    features = Table("feature", "shape", "dtype")
    for name, spec in meta["features"].items():
        features.add_row(name, str(tuple(spec["shape"])), spec["dtype"])
    console.print(features)
    episodes = Table("index", "frames", "success", "task", "source")
    for e in meta["episodes"]:
        episodes.add_row(str(e["index"]), str(e["length"]), str(e["success"]), e["task"], e["source"])
    console.print(episodes)
    console.print(f"content hash {dataset.content_hash()}")


def _recordings_info(paths: list[Path]) -> None:
    """One row per episode file from its `dexstack.episode` metadata; an unreadable file is one
    error line naming it (exit 1 after the table)."""
    from dexstack.dataset import DatasetError
    from dexstack.mcap_io import episode_metadata, find_episode_files

    try:
        files = find_episode_files(paths)
    except FileNotFoundError as exc:
        _fail(exc, 2)
    table = Table("file", "complete", "end", "seed", "success", "messages", "task")
    bad = []
    for path in files:
        try:
            meta = episode_metadata(path)
        except DatasetError as exc:
            bad.append(str(exc))
            continue
        table.add_row(
            path.name,
            meta.get("complete", "?"),
            meta.get("end_reason", "?"),
            meta.get("seed", ""),
            meta.get("success") or "unknown",
            meta.get("message_count", "?"),
            meta.get("task", ""),
        )
    if table.row_count:
        console.print(table)
    for line in bad:
        console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True, highlight=False)
    if bad:
        raise typer.Exit(1)
