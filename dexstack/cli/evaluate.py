"""`dexstack eval`: the one evaluator for every policy family, in-process or through ROS."""

from __future__ import annotations

import os
import tempfile

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dexstack.cli import report

console = Console(stderr=True)


def private_domain_id() -> int:
    """A ROS domain of our own, so an evaluation never talks to a robot on the default domain."""
    return 50 + os.getpid() % 50


def run_eval(policy: str, task: str, episodes: int, seed: int, through_ros: bool, pacing: str = "lockstep",
             rtf: float = 0.0, video: str | None = None, plot: str | None = None,
             log_dir: str | None = None) -> dict:
    """Evaluate and return the summary; writes the MP4/PNG when paths are given."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console)
    with progress:
        bar = progress.add_task(f"{policy} on {task}", total=episodes, rate="")
        wins = []

        def tick(done: int, success: bool, *_):
            wins.append(success)
            progress.update(bar, completed=done, rate=f"success {sum(wins)}/{len(wins)}")

        if through_ros:
            from dexstack.ros_nodes.eval_client import evaluate_through_ros

            res = evaluate_through_ros(policy, task, episodes, seed, pacing=pacing, rtf=rtf,
                                       domain_id=private_domain_id(), record_video=video is not None,
                                       log_dir=log_dir or tempfile.mkdtemp(prefix="dexstack_eval_"),
                                       progress=tick)
            diag = res.policy_diagnostics
            latency = None
            extra = {"mode": f"ros_{pacing}",
                     "inference_ms_p50": _float(diag.get("inference_ms_p50")),
                     "inference_ms_p99": _float(diag.get("inference_ms_p99")),
                     "loop_jitter_ms_p99": _float(diag.get("loop_jitter_ms_p99")),
                     "e2e_ms_p99": _float(diag.get("e2e_ms_p99")),
                     "holds": _float(diag.get("hold_count"))}
            summary = report.summary(policy, task, res.successes, None, **extra)
        else:
            from dexstack.sim.evaluate import evaluate_in_process

            res = evaluate_in_process(_in_process_policy(policy, task), task, episodes, seed,
                                      keep_frames=video is not None, progress=tick)
            latency = res.inference_ms
            summary = report.summary(policy, task, res.successes, latency if policy != "expert" else None,
                                     mode="in_process")
    summary["seeds"] = [min(res.seeds), max(res.seeds)] if res.seeds else []
    summary["wall_s"] = round(res.wall_s, 1)
    if video and res.frames:
        from dexstack.contract import POLICY_HZ

        fps = POLICY_HZ if not through_ros or pacing == "lockstep" else 15.0
        summary["video"] = str(report.write_video(res.frames, video, fps))
    if plot:
        summary["plot"] = str(report.write_plot(res.successes, latency, plot, f"{policy} on {task}",
                                                res.latency_series if through_ros else None))
    return summary


def _in_process_policy(ref: str, task: str):
    from dexstack.hardware.profiles import PANDA

    if ref == "expert":
        from dexstack.sim.evaluate import ExpertPolicy

        return ExpertPolicy(PANDA, task)
    from dexstack.runtime import load_runtime
    from dexstack.store import PolicyStore

    loaded = PolicyStore().load(ref, PANDA)
    return load_runtime(loaded.path, loaded.manifest)


def _float(value: str | None) -> float | None:
    try:
        return round(float(value), 3)
    except (TypeError, ValueError):
        return None


def eval_command(
    policy: str = typer.Option(..., "--policy", help="NAME[@VERSION] from the store, or 'expert'"),
    task: str = typer.Option("pick_lift", "--task"),
    episodes: int = typer.Option(50, "--episodes", min=1),
    seed: int = typer.Option(1000, "--seed", help="first episode's seed; episode i uses seed + i"),
    through_ros: bool = typer.Option(False, "--through-ros", help="run sim, safety filter and policy node over DDS"),
    pacing: str = typer.Option("lockstep", "--pacing", help="ROS runs: lockstep (deterministic) or realtime"),
    rtf: float = typer.Option(1.0, "--rtf", help="ROS realtime runs: real-time factor"),
    video: str = typer.Option(None, "--video", help="write an MP4 of the first episode's scene camera"),
    plot: str = typer.Option(None, "--plot", help="write a PNG of success and latency"),
) -> None:
    """Evaluate a policy; the last line printed is a JSON summary."""
    summary = run_eval(policy, task, episodes, seed, through_ros, pacing, rtf, video, plot)
    typer.echo(report.json_line(summary))


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
