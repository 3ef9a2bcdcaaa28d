"""Record scripted-expert demonstrations through the ROS graph.

Brings up sim (lockstep, paused between episodes) + expert + safety filter + recorder, and
for each episode: recorder ~/start_episode, set the sim's seed, sim ~/reset, wait for the
episode to end on /sim/episode, recorder ~/stop_episode (or ~/cancel_episode for failed
demonstrations when asked). One MCAP file per episode lands in the recorder's output dir, and
one line per attempted seed in its ledger (`record_demos.jsonl`), so an --append run never
repeats a seed, even one whose episode was discarded or never ended.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dexstack import contract
from dexstack.graph import node_list
from dexstack.launcher import node_environment, start_nodes, stop_nodes
from dexstack.mcap_io import EpisodeFileError, episode_metadata
from dexstack.ros_nodes.client import RosClient
from dexstack.ros_nodes.domains import GraphGuard

LEDGER = "record_demos.jsonl"


def episode_files(out_dir: str | Path) -> list[Path]:
    """Episode files in a recordings folder: complete, incomplete and never finalised."""
    return sorted(Path(out_dir).glob("*.mcap*"))


def plan_seeds(out_dir: str | Path, episodes: int, seed: int | None, task: str, append: bool) -> list[int]:
    """The seeds a run records into `out_dir`. A folder that holds episodes is refused unless
    `append` (as LeRobot's recorder refuses an existing dataset unless told `resume`,
    lerobot_record.py `RecordConfig.resume`); on append, seeds already attempted there (ledger
    or file metadata) are never reused: `seed` None continues after the highest, an explicit
    range that overlaps them is refused, and so is a folder of another task. ValueError says why."""
    if seed is not None and seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    files = episode_files(out_dir)
    ledger = Path(out_dir) / LEDGER
    if (files or ledger.exists()) and not append:
        raise ValueError(
            f"{out_dir} already holds {len(files)} episode file(s); pass --append to add to them, or choose a new folder"
        )
    used: set[int] = set()
    if ledger.exists():
        used |= {int(json.loads(line)["seed"]) for line in ledger.read_text().splitlines() if line.strip()}
    for path in files:
        try:
            meta = episode_metadata(path)
        except EpisodeFileError:
            continue  # unreadable (e.g. never finalised): its seed is in the ledger if we recorded it
        if meta.get("task_name") not in (None, "", task):
            raise ValueError(f"{path} records task {meta['task_name']!r}, not {task!r}: use another folder")
        if meta.get("seed", "").lstrip("-").isdigit():
            used.add(int(meta["seed"]))
    start = (max(used) + 1 if used else 0) if seed is None else seed
    seeds = list(range(start, start + episodes))
    clash = sorted(used.intersection(seeds))
    if clash:
        raise ValueError(
            f"seeds {clash[:5]}{' ...' if len(clash) > 5 else ''} were already recorded in {out_dir}; "
            f"leave --seed out to continue from {max(used) + 1}"
        )
    return seeds


def _log_seed(out_dir: str, record: dict) -> None:
    with open(Path(out_dir) / LEDGER, "a") as f:
        f.write(json.dumps(record) + "\n")


def collect_demonstrations(
    episodes: int,
    seed: int,
    output_dir: str,
    *,
    task: str = "pick_lift",
    keep_failures: bool = False,
    domain_id: int | None = None,
    log_dir: str | None = None,
    progress: Callable[[int, bool, str | None], None] | None = None,
) -> list[dict]:
    """Returns one record per episode: seed, success, mcap path (None when discarded)."""
    values = {
        "hardware": "mujoco",
        "policy": "expert",
        "task": task,
        "pacing": "lockstep",
        "record": "true",
        "seed": str(seed),
        "rtf": "0",
    }
    specs = []
    for spec in node_list(values):
        extra = {}
        if spec.name == "sim":
            extra = {"auto_reset": False, "start_paused": True}
        elif spec.name == "recorder":
            extra = {"output_dir": output_dir}
        specs.append(dataclasses.replace(spec, parameters=spec.parameters | extra))
    env = node_environment(domain_id)
    procs = start_nodes(specs, env=env, log_dir=log_dir)
    client = RosClient("dexstack_demo_collector", int(env.get("ROS_DOMAIN_ID", "0")))
    guard = GraphGuard(client.node, [n for spec in specs for n in spec.node_names], domain_id)
    done: dict[int, dict] = {}

    def on_episode(msg: String) -> None:
        info = json.loads(msg.data)
        if info["status"] == "done":
            done[info["seed"]] = info

    events = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    client.node.create_subscription(String, contract.SIM_EPISODE, on_episode, events)
    records = []
    try:
        for i in range(episodes):
            episode_seed = seed + i
            _log_seed(output_dir, {"seed": episode_seed, "status": "started"})
            _ok(client.call(Trigger, "/recorder/start_episode", Trigger.Request()), "start recording")
            param = ParameterMsg(
                name="seed", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=episode_seed)
            )
            result = client.call(SetParameters, "/sim/set_parameters", SetParameters.Request(parameters=[param]))
            if not result.results[0].successful:
                raise RuntimeError(f"sim refused seed {episode_seed}: {result.results[0].reason}")
            _ok(client.call(Trigger, "/sim/reset", Trigger.Request()), "reset the sim")
            deadline = time.monotonic() + 600.0
            while episode_seed not in done:
                client.executor.spin_once(timeout_sec=0.1)
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a node exited during collection; see logs in {log_dir}")
                guard.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"episode with seed {episode_seed} did not end")
            success = bool(done[episode_seed]["success"])
            if success or keep_failures:
                path = _ok(client.call(Trigger, "/recorder/stop_episode", Trigger.Request()), "stop recording")
            else:
                _ok(client.call(Trigger, "/recorder/cancel_episode", Trigger.Request()), "cancel recording")
                path = None
            records.append({"seed": episode_seed, "success": success, "mcap": path})
            _log_seed(output_dir, records[-1] | {"status": "done"})
            if progress:
                progress(i + 1, success, path)
    finally:
        client.close()
        stop_nodes(procs)
    return records


def _ok(response, what: str) -> str:
    if not response.success:
        raise RuntimeError(f"could not {what}: {response.message}")
    return response.message
