"""`dexstack eval`: the one evaluator for every policy family, in-process or through ROS.

Panda tasks (pick_lift, cover_pick, cue_choice): `sim/evaluate.py` in-process, or
`ros_nodes/eval_client.evaluate_through_ros`.

The Adroit hand's grasp task (`--task grasp`, G-PAYN): per object (`--object` / `--objects
train|held_out|validation|a,b`), episode k starts like `GraspEnv.reset(seed + k)`. In-process, the store's
gpayn policy runs as the serving code loads it (`policies/gpayn/runtime.Runtime`: onnxruntime, no
torch) in `policies/gpayn/evaluate.evaluate_policy`; `--policy scripted` (or `expert`) is the
ScriptedGraspDemo controller. `--through-ros` runs one graph per object (hand sim, grasp planner,
safety filter, policy node; `eval_client.evaluate_grasp_through_ros`). The summary has the
success rate and mean time to lift per object and their means over objects.
"""

from __future__ import annotations

import os
import tempfile
import time

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dexstack.cli import report

console = Console(stderr=True)


def private_domain_id() -> int:
    """A ROS domain of our own, so an evaluation never talks to a robot on the default domain."""
    return 50 + os.getpid() % 50


GRASP_TASK = "grasp"
GPAYN_FAMILY = "gpayn"
SCRIPTED = ("scripted", "expert")  # the grasp task's scripted controller (in-process only)
PANDA_DEFAULT_SEED = 1000


def _family(policy: str) -> str | None:
    """The store family of `policy` (manifest checked, not yet against a robot); None for the
    scripted controllers."""
    if policy in SCRIPTED:
        return None
    from dexstack.store import PolicyStore

    return PolicyStore().verify(policy).manifest.get("family")


def check_policy_for_task(policy: str, task: str) -> None:
    """ValueError when the policy cannot run the task: a gpayn (Adroit hand) policy on a Panda
    task, a Panda policy on the grasp task, 'scripted' on a Panda task."""
    family = _family(policy)
    if task == GRASP_TASK:
        if family is not None and family != GPAYN_FAMILY:
            raise ValueError(f"policy {policy!r} is a {family!r} policy for the Panda; --task {GRASP_TASK} needs a "
                             f"{GPAYN_FAMILY!r} policy (or 'scripted')")
    elif family == GPAYN_FAMILY:
        raise ValueError(f"policy {policy!r} is a {GPAYN_FAMILY!r} policy for the Adroit hand; it runs on "
                         f"--task {GRASP_TASK}, not --task {task}")
    elif policy == "scripted":
        raise ValueError(f"'scripted' is the grasp task's controller; for --task {task} use --policy expert")


def run_eval(policy: str, task: str, episodes: int, seed: int | None, through_ros: bool, pacing: str = "lockstep",
             rtf: float = 0.0, video: str | None = None, plot: str | None = None,
             log_dir: str | None = None, objects: str | None = None) -> dict:
    """Evaluate and return the summary; writes the MP4/PNG when paths are given.
    objects: the grasp task's objects ('train', 'held_out', 'validation' or a,b,...); episodes are then per
    object. seed None: the task's default (1000 for the Panda, gpayn's DEFAULT_EVAL_SEED)."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    check_policy_for_task(policy, task)
    if task == GRASP_TASK:
        if video or plot:
            raise ValueError("--video and --plot are not implemented for --task grasp")
        return run_grasp_eval(policy, objects, episodes, seed, through_ros, pacing, rtf, log_dir)
    if objects is not None:
        raise ValueError(f"--object/--objects choose the grasp task's objects; --task {task} has none")
    seed = PANDA_DEFAULT_SEED if seed is None else seed
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
    # Per-episode outcomes by seed, so two runs (before/after a change, in-process/through ROS)
    # can be compared episode by episode.
    summary["outcomes"] = [bool(s) for s in res.successes]
    summary["episode_sim_s"] = [round(float(t), 3) for t in res.episode_sim_s]
    summary["wall_s"] = round(res.wall_s, 1)
    if video and res.frames:
        from dexstack.contract import POLICY_HZ

        fps = POLICY_HZ if not through_ros or pacing == "lockstep" else 15.0
        summary["video"] = str(report.write_video(res.frames, video, fps))
    if plot:
        summary["plot"] = str(report.write_plot(res.successes, latency, plot, f"{policy} on {task}",
                                                res.latency_series if through_ros else None))
    return summary


def run_grasp_eval(policy: str, objects: str | None, episodes: int, seed: int | None, through_ros: bool,
                   pacing: str = "lockstep", rtf: float = 0.0, log_dir: str | None = None) -> dict:
    """The grasp task: `episodes` episodes per object, in-process or through ROS (see the module
    docstring). Returns the summary (per object: success_rate, mean_time_to_lift_s, episodes,
    seeds and per-episode outcomes; means over objects)."""
    from dexstack.policies.gpayn.evaluate import DEFAULT_EVAL_SEED, resolve_objects

    names = resolve_objects(objects)
    seed = DEFAULT_EVAL_SEED if seed is None else int(seed)
    if through_ros and policy in SCRIPTED:
        raise ValueError("the scripted grasp controller runs in-process only (there is no hand expert node); "
                         "drop --through-ros or give a gpayn policy")
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console)
    per_object: dict[str, dict] = {}
    start = time.monotonic()
    with progress:
        bars = {name: progress.add_task(f"{policy} on {name}", total=episodes, rate="") for name in names}
        wins: dict[str, list[bool]] = {name: [] for name in names}

        def tick(name: str, success: bool) -> None:
            wins[name].append(success)
            progress.update(bars[name], completed=len(wins[name]),
                            rate=f"success {sum(wins[name])}/{len(wins[name])}")

        if through_ros:
            from dexstack.ros_nodes.eval_client import evaluate_grasp_through_ros

            results = evaluate_grasp_through_ros(
                policy, names, episodes, seed, pacing=pacing, rtf=rtf, domain_id=private_domain_id(),
                log_dir=log_dir or tempfile.mkdtemp(prefix="dexstack_eval_"),
                progress=lambda name, _done, ok: tick(name, ok))
            for res in results:
                r = res.result
                lifts = [t if ok else None for t, ok in zip(r.episode_sim_s, r.successes, strict=True)]
                per_object[res.object_name] = _object_summary(r.successes, lifts, r.seeds) | {
                    "grasp_positions": [None if g is None else [round(v, 5) for v in g] for g in r.grasp_positions],
                    "policy_diagnostics": {k: _float(r.policy_diagnostics.get(k)) for k in
                                           ("inference_ms_p50", "inference_ms_p99", "hold_count")},
                    "wall_s": round(r.wall_s, 1)}
            mode = f"ros_{pacing}"
        else:
            from dexstack.policies.gpayn.evaluate import evaluate_policy

            outcomes: dict[str, list[tuple[int, dict]]] = {name: [] for name in names}

            def on_episode(name: str, episode_seed: int, outcome: dict) -> None:
                outcomes[name].append((episode_seed, outcome))
                tick(name, bool(outcome["success"]))

            evaluate_policy(_grasp_controller(policy), names, episodes, seed, on_episode=on_episode)
            for name in names:
                per_object[name] = _object_summary([bool(o["success"]) for _, o in outcomes[name]],
                                                   [o["time_to_lift_s"] for _, o in outcomes[name]],
                                                   [s for s, _ in outcomes[name]])
            mode = "in_process"
    rates = [o["success_rate"] for o in per_object.values()]
    times = [o["mean_time_to_lift_s"] for o in per_object.values() if o["mean_time_to_lift_s"] is not None]
    return {"policy": policy, "task": GRASP_TASK, "mode": mode, "episodes": episodes * len(names),
            "episodes_per_object": episodes, "seeds": [seed, seed + episodes - 1],
            "success_rate": round(sum(rates) / len(rates), 4),
            "mean_time_to_lift_s": round(sum(times) / len(times), 3) if times else None,
            "objects": per_object, "wall_s": round(time.monotonic() - start, 1)}


def _object_summary(successes: list[bool], lift_times: list[float | None], seeds: list[int]) -> dict:
    times = [t for t in lift_times if t is not None]
    return {"success_rate": round(sum(successes) / len(successes), 4) if successes else 0.0,
            "successes": int(sum(successes)), "episodes": len(successes),
            "mean_time_to_lift_s": round(sum(times) / len(times), 3) if times else None,
            "seeds": seeds, "outcomes": [bool(s) for s in successes],
            "time_to_lift_s": [None if t is None else round(t, 3) for t in lift_times]}


def _grasp_controller(policy: str):
    """The scripted controller, or the store's gpayn policy as serving loads it (onnxruntime only)."""
    if policy in SCRIPTED:
        from dexstack.policies.gpayn.demos import ScriptedGraspDemo

        return ScriptedGraspDemo()
    from dexstack.hardware.profiles import ADROIT
    from dexstack.policies.gpayn.runtime import Runtime
    from dexstack.store import PolicyStore

    loaded = PolicyStore().load(policy, ADROIT)
    return Runtime(loaded.path, loaded.manifest)


def _in_process_policy(ref: str, task: str):
    from dexstack.hardware.profiles import PANDA

    if ref == "expert":
        from dexstack.sim.evaluate import ExpertPolicy

        return ExpertPolicy(PANDA, task)
    from dexstack.runtime import load_runtime
    from dexstack.store import PolicyStore

    loaded = PolicyStore().load(ref, PANDA)
    return load_runtime(loaded.path, loaded.manifest, profile=PANDA)


def _float(value: str | None) -> float | None:
    try:
        return round(float(value), 3)
    except (TypeError, ValueError):
        return None


def eval_command(
    policy: str = typer.Option(..., "--policy", help="NAME[@VERSION] from the store, or 'expert' "
                               "('scripted' = 'expert' on the grasp task)"),
    task: str = typer.Option("pick_lift", "--task", help="a Panda task, or 'grasp' (Adroit hand, G-PAYN)"),
    episodes: int = typer.Option(50, "--episodes", min=1, help="episodes (per object on --task grasp)"),
    seed: int = typer.Option(None, "--seed", help="first episode's seed; episode i uses seed + i "
                             "(default 1000; grasp: gpayn's evaluation seed)"),
    object_name: str = typer.Option(None, "--object", help="grasp task: one object"),
    objects: str = typer.Option(None, "--objects", help="grasp task: train, held_out, validation or a,b,... (default train)"),
    compare: str = typer.Option(None, "--compare", help="grasp task: a file whose last line is another run's JSON "
                                "summary (same seeds, e.g. in-process); adds a paired comparison by seed"),
    through_ros: bool = typer.Option(False, "--through-ros", help="run sim, safety filter and policy node over DDS"),
    pacing: str = typer.Option("lockstep", "--pacing", help="ROS runs: lockstep (deterministic) or realtime"),
    rtf: float = typer.Option(1.0, "--rtf", help="ROS realtime runs: real-time factor"),
    video: str = typer.Option(None, "--video", help="write an MP4 of the first episode's scene camera"),
    plot: str = typer.Option(None, "--plot", help="write a PNG of success and latency"),
) -> None:
    """Evaluate a policy; the last line printed is a JSON summary."""
    if object_name is not None and objects is not None:
        raise typer.BadParameter("give --object or --objects, not both")
    try:
        summary = run_eval(policy, task, episodes, seed, through_ros, pacing, rtf, video, plot,
                           objects=object_name if object_name is not None else objects)
        if compare is not None:
            summary["comparison"] = compare_with_file(summary, compare)
    except (ValueError, TypeError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    typer.echo(report.json_line(summary))


def compare_with_file(summary: dict, path: str) -> dict:
    """`policies/gpayn/evaluate.compare_outcomes` of another grasp summary (the last line of the
    file at `path`, as `dexstack eval` prints it; "first") with this one ("second")."""
    import json
    from pathlib import Path

    from dexstack.policies.gpayn.evaluate import compare_outcomes

    if summary.get("task") != GRASP_TASK:
        raise ValueError("--compare pairs grasp-task episodes by seed; it needs --task grasp")
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    try:
        other = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: last line is not a JSON summary of `dexstack eval`") from exc
    return {"first": f"{other.get('policy')} {other.get('mode')} ({path})", "second": summary["mode"],
            **compare_outcomes(other, summary)}


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
