"""`dexstack eval`: the one evaluator for every task and policy family, in-process or through ROS.

A task declares its options (`--option KEY=VALUE`, e.g. the grasp task's `object=train|held_out|
validation|a,b`), which expand into groups of episodes, its default first seed and its per-episode
metrics (sim/tasks/). In-process, `sim/evaluate.run_episodes` steps the env and controller that the
policy family's `in_process` entry gives (default: the serving runtime in ManipulationEnv; G-PAYN:
its actor in GraspEnv), or the task's `expert` entry for `--policy expert` (= `scripted`). Through
ROS, `eval_client.evaluate_through_ros` runs one graph per group, the group's options as launch
arguments. Both give `EpisodeOutcome` records, which `report.summary` turns into the JSON summary;
`--compare FILE` pairs episodes with another run's by group and seed.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dexstack.cli import report
from dexstack.errors import DexstackError, one_line
from dexstack.graph import check_launch_values

if TYPE_CHECKING:  # imported where used: the sim and rclpy load only when needed
    from dexstack.ros_nodes.eval_client import RosEvalResult
    from dexstack.sim.evaluate import EpisodeOutcome, InProcess
    from dexstack.store import LoadedPolicy

console = Console(stderr=True)


def private_domain_id(forced: int | None = None) -> int:
    """A ROS domain with nobody else on it, for a graph of our own (`ros_nodes/domains.claim_domain`:
    `forced`, else an explicit ROS_DOMAIN_ID, else a free one); DomainError if the chosen one is busy."""
    from dexstack.ros_nodes.domains import claim_domain

    return claim_domain(forced)


SCRIPTED = ("expert", "scripted")  # the task's scripted expert ('scripted' reads better on the grasp task)


def parse_options(items: list[str] | None) -> dict[str, str]:
    """`--option KEY=VALUE` items -> {KEY: VALUE}; ValueError for a malformed or repeated one."""
    options: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"--option takes KEY=VALUE, got {item!r}")
        if key in options:
            raise ValueError(f"--option {key} given twice")
        options[key] = value
    return options


def check_policy_for_task(policy: str, task: str) -> LoadedPolicy | None:
    """The verified store policy (None for the scripted expert, which runs every task); ValueError
    when it cannot run the task: its manifest's robot is not the robot whose scene the task runs on."""
    from dexstack.graph import TASK_ROBOTS

    if task not in TASK_ROBOTS:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASK_ROBOTS)}")
    if policy in SCRIPTED:
        return None
    from dexstack.store import PolicyStore

    loaded = PolicyStore().verify(policy)
    manifest = loaded.manifest
    robot = manifest.get("robot_profile")
    if robot != TASK_ROBOTS[task]:
        tasks = ", ".join(sorted(t for t, r in TASK_ROBOTS.items() if r == robot)) or "none"
        raise ValueError(
            f"policy {policy!r} is a {manifest.get('family')!r} policy for the {robot!r} robot; it runs "
            f"on --task {tasks}, not --task {task} (a {TASK_ROBOTS[task]!r} task)"
        )
    return loaded


def run_eval(
    policy: str,
    task: str,
    episodes: int,
    seed: int | None,
    through_ros: bool,
    pacing: str = "lockstep",
    rtf: float = 0.0,
    video: str | None = None,
    plot: str | None = None,
    log_dir: str | None = None,
    options: dict[str, str] | None = None,
    domain: int | None = None,
) -> dict:
    """Evaluate and return the summary (`report.summary`); writes the MP4/PNG when paths are given.
    options: the task's options (`--option`), which choose its groups of episodes; `episodes`
    episodes per group. seed None: the task's `default_seed`. domain: the ROS domain of a run
    through ROS (`private_domain_id`)."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    loaded = check_policy_for_task(policy, task)
    from dexstack.sim.evaluate import task_class, task_groups

    groups = task_groups(task, dict(options or {}))
    seed = task_class(task).default_seed if seed is None else int(seed)
    # Every mistake the run could only hit at its end is found before it starts.
    for flag, path in (("--video", video), ("--plot", plot)):
        if path:
            report.check_writable(path, flag)
    if through_ros:
        check_launch_values({"pacing": pacing, "rtf": str(rtf), "seed": str(seed)})
        domain_id = private_domain_id(domain)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        bars = {
            group: progress.add_task(f"{policy} on {group or task}", total=episodes, rate="") for group, _ in groups
        }
        wins: dict[str | None, list[bool]] = {group: [] for group, _ in groups}

        def tick(outcome: EpisodeOutcome) -> None:
            won = wins[outcome.group]
            won.append(outcome.success)
            progress.update(bars[outcome.group], completed=len(won), rate=f"success {sum(won)}/{len(won)}")

        if through_ros:
            from dexstack.ros_nodes.eval_client import evaluate_through_ros

            res = evaluate_through_ros(
                "expert" if policy in SCRIPTED else policy,
                task,
                groups,
                episodes,
                seed,
                pacing=pacing,
                rtf=rtf,
                domain_id=domain_id,
                record_video=video is not None,
                log_dir=log_dir or tempfile.mkdtemp(prefix="dexstack_eval_"),
                progress=tick,
            )
            diag = res.policy_diagnostics
            latency = None
            summary = report.summary(
                policy,
                task,
                res.outcomes,
                None,
                mode=f"ros_{pacing}",
                inference_ms_p50=_float(diag.get("inference_ms_p50")),
                inference_ms_p99=_float(diag.get("inference_ms_p99")),
                **_timing(pacing, diag),
                holds=_float(diag.get("hold_count")),
            )
            _add_ros_details(summary, res, task)
        else:
            from dexstack.sim.evaluate import run_episodes

            setup = _in_process(loaded, task)
            res = run_episodes(setup, groups, episodes, seed, keep_frames=video is not None, progress=tick)
            latency = res.inference_ms if setup.timed else None
            summary = report.summary(policy, task, res.outcomes, latency, mode="in_process")
    summary["wall_s"] = round(res.wall_s, 1)
    if video and res.frames:
        from dexstack.contract import POLICY_HZ

        fps = POLICY_HZ if not through_ros or pacing == "lockstep" else 15.0
        summary["video"] = str(report.write_video(res.frames, video, fps))
    if plot:
        summary["plot"] = str(
            report.write_plot(
                [o.success for o in res.outcomes],
                latency,
                plot,
                f"{policy} on {task}",
                res.latency_series if through_ros else None,
            )
        )
    return summary


def _timing(pacing: str, diag: dict[str, str]) -> dict:
    """The policy node's loop jitter and end-to-end latency, which only a realtime run measures:
    in lockstep the node answers each observation (no timer, so no jitter) and sim time stands
    still while it computes (so every latency on the node's clock is 0.0)."""
    if pacing == "realtime":
        return {
            "loop_jitter_ms_p99": _float(diag.get("loop_jitter_ms_p99")),
            "e2e_ms_p99": _float(diag.get("e2e_ms_p99")),
        }
    return {
        "timing_note": "lockstep: loop jitter and end-to-end latency are not measured (sim time stands still "
        "while the policy computes); run --pacing realtime for them"
    }


def _add_ros_details(summary: dict, res: RosEvalResult, task: str) -> None:
    """Per group: the policy node's latency figures and, for a task that plans from the camera,
    the grasp planner's pose of every episode."""
    from dexstack.sim.evaluate import task_class

    perceives = bool(task_class(task).perception)
    if perceives and "groups" not in summary:
        summary["grasp_positions"] = _positions(res.grasp_positions)
    for group, block in summary.get("groups", {}).items():
        diag = res.group_diagnostics.get(group, {})
        block["policy_diagnostics"] = {
            k: _float(diag.get(k)) for k in ("inference_ms_p50", "inference_ms_p99", "hold_count")
        }
        if perceives:
            block["grasp_positions"] = _positions(
                [g for g, o in zip(res.grasp_positions, res.outcomes, strict=True) if o.group == group]
            )


def _positions(positions: list) -> list:
    return [None if g is None else [round(v, 5) for v in g] for g in positions]


def _in_process(loaded: LoadedPolicy | None, task: str) -> InProcess:
    """The env and controller for a verified store policy on `task` (None: the task's `expert`
    entry), else the policy family's `in_process` entry (default: ManipulationEnv + load_runtime).
    The version checked for the task is the one run: `NAME` is not resolved a second time."""
    from dexstack.families import get_family, resolve
    from dexstack.sim.evaluate import manipulation_in_process, task_class, task_profile
    from dexstack.store import PolicyStore

    profile = task_profile(task)
    if loaded is None:
        return resolve(task_class(task).expert)(task, profile)
    PolicyStore.check_fit(loaded, profile)
    entry = get_family(loaded.manifest["family"]).in_process
    make = resolve(entry) if entry else manipulation_in_process
    return make(loaded.path, loaded.manifest, task=task, profile=profile)


def _float(value: str | None) -> float | None:
    try:
        return round(float(value), 3)
    except (TypeError, ValueError):
        return None


def eval_command(
    policy: str = typer.Option(
        ..., "--policy", help="NAME[@VERSION] from the store, or 'expert' (= 'scripted'): the task's scripted expert"
    ),
    task: str = typer.Option("pick_lift", "--task", help="a Panda task, or 'grasp' (Adroit hand, G-PAYN)"),
    episodes: int = typer.Option(50, "--episodes", min=1, help="episodes (per group of the task's options)"),
    seed: int = typer.Option(
        None,
        "--seed",
        help="first episode's seed; episode i uses seed + i (default: the task's, 1000 on the Panda tasks)",
    ),
    option: list[str] = typer.Option(
        None,
        "--option",
        help="KEY=VALUE, repeatable: a task option, e.g. "
        "object=held_out on --task grasp (one group of episodes per object)",
    ),
    compare: str = typer.Option(
        None,
        "--compare",
        help="a file whose last line is another run's JSON summary "
        "(same seeds, e.g. in-process); adds a paired comparison by group and seed",
    ),
    through_ros: bool = typer.Option(False, "--through-ros", help="run sim, safety filter and policy node over DDS"),
    pacing: str = typer.Option("lockstep", "--pacing", help="ROS runs: lockstep (deterministic) or realtime"),
    rtf: float = typer.Option(1.0, "--rtf", help="ROS realtime runs: real-time factor"),
    video: str = typer.Option(
        None,
        "--video",
        help="write an MP4 of one episode's camera (in-process: the first; through ROS: the first successful one)",
    ),
    plot: str = typer.Option(None, "--plot", help="write a PNG of success and latency"),
    domain: int = typer.Option(
        None,
        "--domain",
        help="ROS runs: the ROS domain to run on (it must be empty); default: ROS_DOMAIN_ID if set, "
        "else a free private one",
    ),
) -> None:
    """Evaluate a policy; the last line printed is a JSON summary."""
    try:
        summary = run_eval(
            policy,
            task,
            episodes,
            seed,
            through_ros,
            pacing,
            rtf,
            video,
            plot,
            options=parse_options(option),
            domain=domain,
        )
        if compare is not None:
            summary["comparison"] = compare_with_file(summary, compare)
    except (ValueError, TypeError, OSError, DexstackError) as exc:
        console.print(f"[red]error:[/red] {escape(one_line(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc
    typer.echo(report.json_line(summary))


def compare_with_file(summary: dict, path: str) -> dict:
    """`report.compare_outcomes` of another summary (the last line of the file at `path`, as
    `dexstack eval` prints it; "first") with this one ("second")."""
    import json
    from pathlib import Path

    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    try:
        other = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: last line is not a JSON summary of `dexstack eval`") from exc
    if other.get("task") != summary.get("task"):
        raise ValueError(f"{path} evaluated --task {other.get('task')}, this run --task {summary.get('task')}")
    return {
        "first": f"{other.get('policy')} {other.get('mode')} ({path})",
        "second": summary["mode"],
        **report.compare_outcomes(other, summary),
    }


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
