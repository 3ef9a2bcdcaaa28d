"""Evaluate a policy through the full ROS graph: bring up sim + safety + policy, count
episodes from /sim/episode, read latency figures from the policy node's /diagnostics, and
optionally keep the scene camera frames of one episode for a video.

`evaluate_through_ros` runs one graph (`dexstack/graph.py`'s node list for the launch values);
`evaluate_grasp_through_ros` runs the G-PAYN grasp task: one graph per object (the hand sim's
`object` parameter), lockstep at the policy's own control period (its manifest's `outputs.dt`,
for sim ticks and the policy node alike), with the hand sim's perception phase on
(the graph sets `grasp_pose_timeout_s` in lockstep, see `sim_perception.py`) so each episode starts
like `GraspEnv.reset(seed)`.
It also keeps the grasp planner's pose of every episode, to compare with GraspEnv's plan."""

from __future__ import annotations

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

from dexstack import contract
from dexstack.graph import node_list
from dexstack.launcher import node_environment, start_nodes, stop_nodes
from dexstack.ros_nodes import common
from dexstack.ros_nodes.client import RosClient


@dataclass
class RosEvalResult:
    successes: list[bool] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    episode_sim_s: list[float] = field(default_factory=list)
    policy_diagnostics: dict[str, str] = field(default_factory=dict)
    frames: list[np.ndarray] = field(default_factory=list)  # scene camera: first successful episode, else the first
    latency_series: list[tuple[float, float, float]] = field(default_factory=list)  # (wall s, inference p50, p99)
    # Grasp planner's pose per episode (position m, world; None if none came), the hand's grasp task only.
    grasp_positions: list[list[float] | None] = field(default_factory=list)
    wall_s: float = 0.0


# Wall seconds the hand sim waits for the grasp planner at each episode's start (a fit takes
# 0.1-0.7 s; discovery at start-up a few seconds more).


def evaluate_through_ros(policy: str, task: str, episodes: int, seed: int, *, pacing: str = "lockstep",
                         rtf: float = 0.0, domain_id: int | None = None, extra_env: dict[str, str] | None = None,
                         log_dir: str | None = None, record_video: bool = False, timeout_s: float = 1800.0,
                         progress: Callable[[int, bool], None] | None = None,
                         launch_values: dict[str, str] | None = None) -> RosEvalResult:
    """Run `episodes` episodes with seeds seed, seed+1, ... through sim -> policy -> safety -> sim.
    launch_values: further launch arguments (e.g. {"object": ...})."""
    values = {"hardware": "mujoco", "policy": policy, "task": task, "pacing": pacing, "rtf": str(rtf),
              "seed": str(seed)} | dict(launch_values or {})
    specs = node_list(values)
    env = node_environment(domain_id, extra_env)
    procs = start_nodes(specs, env=env, log_dir=log_dir)
    result = RosEvalResult()
    # The client joins the same private domain as the nodes it started.
    client = RosClient("dexstack_eval", int(env.get("ROS_DOMAIN_ID", "0")))
    node = client.node
    K = contract.QoSKind
    start = time.monotonic()
    state = {"episode": None, "current": [], "first": None, "kept_success": False}
    starts: dict[int, float] = {}  # episode -> ROS stamp of its start
    poses: list[tuple[float, list[float]]] = []  # (stamp, position) of every grasp pose
    windows: list[tuple[int, float]] = []  # (episode, ROS stamp of its end) of every counted episode

    def on_pose(msg: PoseStamped) -> None:
        p = msg.pose.position
        poses.append((common.to_sec(msg.header.stamp), [p.x, p.y, p.z]))

    def on_episode(msg: String) -> None:
        info = json.loads(msg.data)
        if info["status"] == "running":
            starts[int(info["episode"])] = float(info["stamp"])
        if info["status"] == "done" and info["episode"] != state["episode"] and len(result.successes) < episodes:
            state["episode"] = info["episode"]
            result.successes.append(bool(info["success"]))
            result.seeds.append(int(info["seed"]))
            result.episode_sim_s.append(float(info["sim_time"]))
            windows.append((int(info["episode"]), float(info["stamp"])))
            if record_video:  # keep the first successful episode for the video, else the first one
                if state["first"] is None:
                    state["first"] = state["current"]
                if info["success"] and not state["kept_success"]:
                    result.frames, state["kept_success"] = state["current"], True
                state["current"] = []
            if progress:
                progress(len(result.successes), bool(info["success"]))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("/policy"):
                result.policy_diagnostics = values = {kv.key: kv.value for kv in status.values}
                try:
                    result.latency_series.append((time.monotonic() - start, float(values["inference_ms_p50"]),
                                                  float(values["inference_ms_p99"])))
                except (KeyError, ValueError):
                    pass  # no inference yet

    def on_image(msg: Image) -> None:
        if not state["kept_success"]:
            state["current"].append(common.image_to_array(msg).copy())

    # Deep queue: a "done" followed at once by the next episode's "running" must not be lost.
    events = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, contract.SIM_EPISODE, on_episode, events)
    node.create_subscription(DiagnosticArray, contract.DIAGNOSTICS, on_diagnostics, common.QOS[K.DEFAULT])
    node.create_subscription(PoseStamped, contract.GRASP_TARGET_POSE, on_pose,
                             QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    if record_video:
        node.create_subscription(Image, contract.camera_color_topic("scene"), on_image,
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        while len(result.successes) < episodes:
            client.executor.spin_once(timeout_sec=0.1)
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a node exited early (code {dead[0].returncode}); see logs in {log_dir}")
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"only {len(result.successes)}/{episodes} episodes after {timeout_s:.0f} s")
        # One more diagnostics period so the figures cover the last episodes.
        client.spin_for(1.5 / contract.DIAGNOSTICS_HZ)
        # Poses are matched to episodes only now: a subscriber whose discovery of the planner ends
        # late gets the latched poses replayed after the episodes they belong to have ended.
        for episode, end in windows:
            begin = starts.get(episode, float("inf"))
            mine = [pos for stamp, pos in poses if begin - 1e-6 <= stamp <= end]
            result.grasp_positions.append(mine[0] if mine else None)
        if record_video and not result.frames:
            result.frames = state["first"] or []
    finally:
        result.wall_s = time.monotonic() - start
        client.close()
        stop_nodes(procs)
    return result


@dataclass
class GraspObjectResult:
    """One object's episodes through ROS (seeds seed, seed+1, ...)."""

    object_name: str
    result: RosEvalResult

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.result.successes)) if self.result.successes else 0.0

    @property
    def mean_time_to_lift_s(self) -> float | None:
        """Mean sim time from the first control tick to the lift, over the successful episodes."""
        times = [t for t, ok in zip(self.result.episode_sim_s, self.result.successes, strict=True) if ok]
        return float(np.mean(times)) if times else None


def policy_rate_hz(policy: str) -> float:
    """The control rate a gpayn policy was trained at: 1 / its manifest's outputs.dt."""
    from dexstack.store import PolicyStore

    manifest = PolicyStore().verify(policy).manifest
    dt = float(manifest["outputs"]["dt"])
    if not dt > 0:
        raise ValueError(f"policy {policy!r}: outputs.dt must be > 0, got {dt}")
    return 1.0 / dt


def evaluate_grasp_through_ros(policy: str, objects: tuple[str, ...] | list[str], episodes: int, seed: int, *,
                               pacing: str = "lockstep", rtf: float = 0.0, domain_id: int | None = None,
                               extra_env: dict[str, str] | None = None, log_dir: str | None = None,
                               timeout_s: float = 1800.0,
                               progress: Callable[[str, int, bool], None] | None = None) -> list[GraspObjectResult]:
    """The G-PAYN grasp task through ROS: for each object one graph (hand sim with that object,
    grasp planner, safety filter, policy node serving the gpayn actor), `episodes` episodes with
    seeds seed ... seed + episodes - 1 (episode k starts like GraspEnv.reset(seed + k)).
    progress(object, done, success) after every episode."""
    rate = policy_rate_hz(policy)
    out = []
    for name in objects:
        sub_log = None if log_dir is None else f"{log_dir}/{name}"
        res = evaluate_through_ros(
            policy, "grasp", episodes, seed, pacing=pacing, rtf=rtf, domain_id=domain_id, extra_env=extra_env,
            log_dir=sub_log, timeout_s=timeout_s,
            progress=None if progress is None else (lambda done, ok, _n=name: progress(_n, done, ok)),
            launch_values={"object": name, "policy_rate": repr(rate)})
        out.append(GraspObjectResult(name, res))
    return out
