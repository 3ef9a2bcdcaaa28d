"""`dexstack dataset`: build training datasets from MCAP episode recordings, and inspect them."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.console import Console
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
    """Convert MCAP episodes into a dataset (docs/DATASET.md)."""
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
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if (out / META_FILE).exists():
        if not overwrite:
            console.print(f"[red]error:[/red] {out} already holds a dataset; pass --overwrite to replace it")
            raise typer.Exit(2)
        shutil.rmtree(out)  # only ever a directory holding a dataset's meta.json
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"),
        console=console,
    ) as progress:
        bar = progress.add_task("converting", total=len(files), current="")
        try:
            dataset = build_from_mcap(
                files,
                out,
                fps=fps or contract.POLICY_HZ,
                profile=robot,
                cameras=cams,
                depth=depth,
                on_episode=lambda done, _total, path: progress.update(bar, completed=done, current=path.name),
            )
        except (DatasetError, ValueError, OSError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    console.print(f"wrote {len(dataset)} episodes, {dataset.num_frames} frames at {dataset.fps:g} Hz to {out}")
    console.print(f"content hash {dataset.content_hash()}")


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
        dataset = collect_dataset(
            out, episodes, seed, task, keep_failures, progress=lambda done, _: progress.update(bar, completed=done)
        )
    console.print(f"wrote {len(dataset)} episodes, {dataset.num_frames} frames at {dataset.fps:g} Hz to {out}")


@app.command("info")
def info(root: Path = typer.Argument(..., help="dataset directory")) -> None:
    """Show a dataset's features and episodes."""
    from dexstack.dataset import Dataset, DatasetError

    try:
        dataset = Dataset(root)
    except DatasetError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
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
