"""Evaluate a policy through the full ROS graph: bring up sim + safety + policy, count
episodes from /sim/episode (whose "done" message carries the task's per-episode metrics, from
the same `episode_metrics` the in-process env uses), read latency figures from the policy
node's /diagnostics, and optionally keep one episode's camera frames for a video.

`evaluate_through_ros` serves every task: one graph (`dexstack/graph.py`'s node list for the
launch values) per group of episodes, a group's options becoming the same-named launch
arguments (the grasp task: `object:=...`); the policy (and, in lockstep, the sim's tick) runs
at 1 / its manifest's `outputs.dt`. It returns the evaluator's `EpisodeOutcome` records, and for
a task that plans from the camera (the grasp task) the grasp planner's pose of every episode.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dexstack import contract
from dexstack.errors import DexstackError
from dexstack.graph import node_list
from dexstack.launcher import node_environment, start_nodes, stop_nodes
from dexstack.ros_nodes import common
from dexstack.ros_nodes.client import RosClient
from dexstack.ros_nodes.domains import GraphGuard, wait_until_empty
from dexstack.sim.evaluate import EpisodeOutcome

VIDEO_QUEUE = 1000  # camera frames the client may lag behind the sim (a lockstep sim outruns real time)
DISCOVERY_TIMEOUT_S = 120.0  # wall time for the sim's camera to match the client's subscription


class GraphStopped(DexstackError):
    """The evaluation's graph stopped short (a node died, or episodes stopped coming)."""


@dataclass
class RosEvalResult:
    outcomes: list[EpisodeOutcome] = field(default_factory=list)
    policy_diagnostics: dict[str, str] = field(default_factory=dict)  # the last graph's
    group_diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)  # per named group
    frames: list[np.ndarray] = field(default_factory=list)  # video camera: first successful episode, else the first
    latency_series: list[tuple[float, float, float]] = field(default_factory=list)  # (wall s, inference p50, p99)
    # Grasp planner's pose per episode (position m, world; None if none came): tasks that plan from the camera.
    grasp_positions: list[list[float] | None] = field(default_factory=list)
    wall_s: float = 0.0


def policy_rate_hz(policy: str) -> float | None:
    """The control rate a store policy was made for: 1 / its manifest's outputs.dt (None for the
    scripted expert, which runs at the graph's default rate)."""
    if policy == "expert":
        return None
    from dexstack.store import PolicyStore

    manifest = PolicyStore().verify(policy).manifest
    dt = float(manifest["outputs"]["dt"])
    if not dt > 0:
        raise ValueError(f"policy {policy!r}: outputs.dt must be > 0, got {dt}")
    return 1.0 / dt


def video_camera(task: str) -> str:
    """The camera a video shows: the last of the task's robot profile, its fixed view of the
    scene (the Panda lists wrist then scene; the hand has only its scene camera)."""
    from dexstack.graph import TASK_ROBOTS
    from dexstack.hardware.profiles import get_profile

    return get_profile(TASK_ROBOTS[task]).camera_names[-1]


def evaluate_through_ros(
    policy: str,
    task: str,
    groups: list[tuple[str | None, dict[str, str]]],
    episodes: int,
    seed: int,
    *,
    pacing: str = "lockstep",
    rtf: float = 0.0,
    domain_id: int | None = None,
    extra_env: dict[str, str] | None = None,
    log_dir: str | None = None,
    record_video: bool = False,
    timeout_s: float = 1800.0,
    progress: Callable[[EpisodeOutcome], None] | None = None,
) -> RosEvalResult:
    """For each group (`sim/evaluate.task_groups`) one graph running `episodes` episodes with
    seeds seed ... seed + episodes - 1 through sim -> policy -> safety -> sim; the group's options
    are launch arguments. progress(outcome) after every episode."""
    values = {
        "hardware": "mujoco",
        "policy": policy,
        "task": task,
        "pacing": pacing,
        "rtf": str(rtf),
        "seed": str(seed),
    }
    rate = policy_rate_hz(policy)
    if rate is not None:
        values["policy_rate"] = repr(rate)
    result = RosEvalResult()
    start = time.monotonic()
    try:
        for i, (group, options) in enumerate(groups):
            if i and domain_id is not None:
                wait_until_empty(domain_id)  # the previous group's graph has left
            sub_log = log_dir if log_dir is None or group is None else f"{log_dir}/{group}"
            _run_graph(
                values | dict(options),
                group,
                episodes,
                result,
                domain_id=domain_id,
                extra_env=extra_env,
                log_dir=sub_log,
                camera=video_camera(task) if record_video else None,
                timeout_s=timeout_s,
                progress=progress,
            )
            if group is not None:
                result.group_diagnostics[group] = result.policy_diagnostics
    finally:
        result.wall_s = time.monotonic() - start
    return result


def _run_graph(
    values: dict[str, str],
    group: str | None,
    episodes: int,
    result: RosEvalResult,
    *,
    domain_id: int | None,
    extra_env: dict[str, str] | None,
    log_dir: str | None,
    camera: str | None,
    timeout_s: float,
    progress: Callable[[EpisodeOutcome], None] | None,
) -> None:
    """One graph for `values`; appends its `episodes` episodes (as `group`) to `result`. camera:
    keep that camera's frames of the first successful episode (else the first) unless `result`
    already holds a successful one's."""
    specs = node_list(values)
    want_video = camera is not None and not (any(o.success for o in result.outcomes) and result.frames)
    if want_video:  # the video's episode must be whole: the sim starts paused until the camera is matched
        specs = [
            dataclasses.replace(s, parameters=s.parameters | {"start_paused": True})
            if s.executable == "sim_node"
            else s
            for s in specs
        ]
    env = node_environment(domain_id, extra_env)
    procs = start_nodes(specs, env=env, log_dir=log_dir)
    # The client joins the same private domain as the nodes it started.
    client = RosClient("dexstack_eval", int(env.get("ROS_DOMAIN_ID", "0")))
    node = client.node
    guard = GraphGuard(node, [n for spec in specs for n in spec.node_names], domain_id)
    K = contract.QoSKind
    start = time.monotonic()
    mine: list[EpisodeOutcome] = []
    # Frames are matched to episodes by stamp at the end, not by arrival: the last frames of an
    # episode may be read after its "done" (another subscription), and the first frames of a run
    # depend on discovery.
    frames: dict[int, np.ndarray] = {}  # stamp (ns) -> frame, until the video's episode is known
    state = {"episode": None}
    starts: dict[int, float] = {}  # episode -> ROS stamp of its start
    poses: list[tuple[float, list[float]]] = []  # (stamp, position) of every grasp pose
    windows: list[tuple[int, float]] = []  # (episode, ROS stamp of its end) of every counted episode
    result.policy_diagnostics = {}

    def on_pose(msg: PoseStamped) -> None:
        p = msg.pose.position
        poses.append((common.to_sec(msg.header.stamp), [p.x, p.y, p.z]))

    def on_episode(msg: String) -> None:
        info = json.loads(msg.data)
        if info["status"] == "running":
            starts[int(info["episode"])] = float(info["stamp"])
        if info["status"] == "done" and info["episode"] != state["episode"] and len(mine) < episodes:
            state["episode"] = info["episode"]
            outcome = EpisodeOutcome(
                group, int(info["seed"]), bool(info["success"]), float(info["sim_time"]), dict(info.get("metrics", {}))
            )
            mine.append(outcome)
            result.outcomes.append(outcome)
            windows.append((int(info["episode"]), float(info["stamp"])))
            if want_video:
                _prune_frames(frames, starts, mine, windows)
            if progress:
                progress(outcome)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("/policy"):
                result.policy_diagnostics = values = {kv.key: kv.value for kv in status.values}
                try:
                    result.latency_series.append(
                        (time.monotonic() - start, float(values["inference_ms_p50"]), float(values["inference_ms_p99"]))
                    )
                except (KeyError, ValueError):
                    pass  # no inference yet

    def on_image(msg: Image) -> None:
        frames[common.stamp_ns(msg.header.stamp)] = common.image_to_array(msg).copy()

    # Deep queue: a "done" followed at once by the next episode's "running" must not be lost.
    events = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, contract.SIM_EPISODE, on_episode, events)
    node.create_subscription(DiagnosticArray, contract.DIAGNOSTICS, on_diagnostics, common.QOS[K.DEFAULT])
    node.create_subscription(
        PoseStamped,
        contract.GRASP_TARGET_POSE,
        on_pose,
        QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    if want_video:
        images = node.create_subscription(
            Image,
            contract.camera_color_topic(camera),
            on_image,
            QoSProfile(depth=VIDEO_QUEUE, reliability=ReliabilityPolicy.BEST_EFFORT),
        )
    try:
        if want_video:
            matched = client.spin_until(
                lambda: images.get_publisher_count() > 0 or any(p.poll() is not None for p in procs),
                DISCOVERY_TIMEOUT_S,
            )
            if not matched or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the sim's camera {camera!r} never appeared; see logs in {log_dir}")
            client.call(Trigger, "/sim/reset", Trigger.Request())  # unpauses; the first episode gets the first seed
        while len(mine) < episodes:
            client.executor.spin_once(timeout_sec=0.1)
            dead = [(spec, p) for spec, p in zip(specs, procs, strict=True) if p.poll() is not None]
            if dead:
                spec, p = dead[0]
                raise GraphStopped(f"node {spec.name} exited early (code {p.returncode}); see its log in {log_dir}")
            guard.check()  # after the deaths: a dead node's leftovers must not read as a stranger
            if time.monotonic() - start > timeout_s:
                raise GraphStopped(f"only {len(mine)}/{episodes} episodes after {timeout_s:.0f} s; logs in {log_dir}")
        # One more diagnostics period so the figures cover the last episodes.
        client.spin_for(1.5 / contract.DIAGNOSTICS_HZ)
        # Poses are matched to episodes only now: a subscriber whose discovery of the planner ends
        # late gets the latched poses replayed after the episodes they belong to have ended.
        for episode, end in windows:
            begin = starts.get(episode, float("inf"))
            found = [pos for stamp, pos in poses if begin - 1e-6 <= stamp <= end]
            result.grasp_positions.append(found[0] if found else None)
        if want_video:
            episode, end = next((w for o, w in zip(mine, windows, strict=True) if o.success), windows[0])
            begin = starts.get(episode, float("inf"))
            chosen = [frames[t] for t in sorted(frames) if begin - 1e-6 <= t * 1e-9 <= end + 1e-6]
            if any(o.success for o in mine) or not result.frames:  # else an earlier group's first episode stays
                result.frames = chosen
    finally:
        client.close()
        stop_nodes(procs)


def _prune_frames(
    frames: dict[int, np.ndarray], starts: dict[int, float], outcomes: list[EpisodeOutcome], windows: list
) -> None:
    """At an episode's end, drop the frames the video can no longer need: it shows the first
    successful episode, else the first one."""
    success = next((i for i, o in enumerate(outcomes) if o.success), None)
    if success is not None and success < len(outcomes) - 1:  # episodes after the video's
        drop = [t for t in frames if t * 1e-9 > windows[success][1] + 1e-6]
    elif len(outcomes) > 1 and not outcomes[-1].success:  # a failed episode that is not the first
        episode, end = windows[-1]
        begin = starts.get(episode, float("inf"))
        drop = [t for t in frames if begin - 1e-6 <= t * 1e-9 <= end + 1e-6]
    else:
        return
    for t in drop:
        del frames[t]
