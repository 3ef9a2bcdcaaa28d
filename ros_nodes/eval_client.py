"""Evaluate a policy through the full ROS graph: bring up sim + safety + policy, count
episodes from /sim/episode, read latency figures from the policy node's /diagnostics, and
optionally keep the scene camera frames of one episode for a video."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
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
    wall_s: float = 0.0


def evaluate_through_ros(policy: str, task: str, episodes: int, seed: int, *, pacing: str = "lockstep",
                         rtf: float = 0.0, domain_id: int | None = None, extra_env: dict[str, str] | None = None,
                         log_dir: str | None = None, record_video: bool = False, timeout_s: float = 1800.0,
                         progress: Callable[[int, bool], None] | None = None) -> RosEvalResult:
    """Run `episodes` episodes with seeds seed, seed+1, ... through sim -> policy -> safety -> sim."""
    values = {"hardware": "mujoco", "policy": policy, "task": task, "pacing": pacing, "rtf": str(rtf),
              "seed": str(seed)}
    env = node_environment(domain_id, extra_env)
    procs = start_nodes(node_list(values), env=env, log_dir=log_dir)
    result = RosEvalResult()
    # The client joins the same private domain as the nodes it started.
    client = RosClient("dexstack_eval", int(env.get("ROS_DOMAIN_ID", "0")))
    node = client.node
    K = contract.QoSKind
    start = time.monotonic()
    state = {"episode": None, "current": [], "first": None, "kept_success": False}

    def on_episode(msg: String) -> None:
        info = json.loads(msg.data)
        if info["status"] == "done" and info["episode"] != state["episode"] and len(result.successes) < episodes:
            state["episode"] = info["episode"]
            result.successes.append(bool(info["success"]))
            result.seeds.append(int(info["seed"]))
            result.episode_sim_s.append(float(info["sim_time"]))
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
        if record_video and not result.frames:
            result.frames = state["first"] or []
    finally:
        result.wall_s = time.monotonic() - start
        client.close()
        stop_nodes(procs)
    return result
