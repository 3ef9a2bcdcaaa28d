"""Soak: the whole stack at 50 Hz real time for N minutes, watching memory and every command.

Starts the `dexstack up` node list (sim realtime rtf 1 with episodes auto-resetting, safety
filter, policy node serving a shipped policy at `--rate` Hz) on a private ROS domain that was
probed empty first, and watches from outside like a controller would:
- resident memory (VmRSS from /proc) of each node process, sampled every `--sample-s`; growth is
  measured from the 1-minute sample (start-up allocation is not a leak) to the end;
- every message on the controller topic, checked against the robot profile
  (`hardware/command_check.py`: joint names, finite positions inside the position limits,
  increasing point times, no segment between consecutive points faster than the velocity limit);
- holds (the safety filter's and the policy node's cumulative counters, from /diagnostics) and
  episodes (/sim/episode);
- any node from another graph appearing on the domain.
Prints a table and one JSON object; writes the JSON to `--out`, rewritten every minute with
`"partial": true` so a run that is cut short still leaves its figures.

    .venv/bin/python bench/soak.py --minutes 30 --out soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import numpy as np  # noqa: E402

from dexstack import contract  # noqa: E402
from dexstack.graph import DEFAULT_POLICY, DEFAULT_TASK, node_list, parse_launch_args  # noqa: E402
from dexstack.hardware.command_check import command_violation  # noqa: E402
from dexstack.hardware.profiles import RobotProfile, get_profile  # noqa: E402
from dexstack.launcher import node_environment, start_nodes, stop_nodes  # noqa: E402

GROWTH_FLOOR_MB = 5.0  # the floor: growth per process after the first minute
BASELINE_S = 60.0
PROBE_S = 3.0  # how long a candidate domain is listened to before it counts as free
MAX_RECORDED_BAD = 20


def rss_mb(pid: int) -> float | None:
    """Resident set size of a live process in MB (VmRSS), None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def free_domain(candidates: list[int]) -> int:
    """The first domain on which no node is heard for PROBE_S (a soak must not mix graphs)."""
    from dexstack.ros_nodes.client import RosClient

    for domain in candidates:
        client = RosClient("soak_probe", domain)
        try:
            client.spin_for(PROBE_S)
            others = [n for n, _ in client.node.get_node_names_and_namespaces() if n != "soak_probe"]
        finally:
            client.close()
        if not others:
            return domain
        print(f"domain {domain} is in use by {sorted(others)}; trying another")
    raise RuntimeError(f"no free ROS domain among {candidates}")


class Monitor:
    """A plain client on the soak's domain: checks commands, follows diagnostics and episodes."""

    def __init__(self, domain: int, profile: RobotProfile) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        from dexstack.ros_nodes.client import RosClient
        from dexstack.ros_nodes.common import QOS

        # The command QoS (reliable, keep-last 1) with a deep reader queue, so a busy monitor does
        # not overwrite commands it has not checked yet. The filter's writer keeps only its newest
        # command, so a command superseded before delivery can still be missed: the report gives
        # the share checked (commands received / the filter's passed + held).
        watch_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)

        self.client = RosClient("soak_monitor", domain)
        self.profile = profile
        self.commands = 0
        self.empty = 0
        self.bad: list[dict] = []
        self.bad_count = 0
        self.diag: dict[str, dict[str, str]] = {}
        self.episodes_done = 0
        self.successes = 0
        self._episode_seen: set = set()
        self.foreign_nodes: set[str] = set()
        node = self.client.node
        node.create_subscription(JointTrajectory, profile.trajectory_topic, self._on_command, watch_qos)
        node.create_subscription(DiagnosticArray, contract.DIAGNOSTICS, self._on_diag, QOS[contract.QoSKind.DEFAULT])
        node.create_subscription(String, contract.SIM_EPISODE, self._on_episode, QOS[contract.QoSKind.LATCHED])

    def _on_command(self, msg) -> None:
        self.commands += 1
        self.empty += not msg.points
        times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        problem = command_violation(self.profile, msg.joint_names, [p.positions for p in msg.points], times)
        if problem is not None:
            self.bad_count += 1
            if len(self.bad) < MAX_RECORDED_BAD:
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                self.bad.append({"stamp": stamp, "problem": problem})

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            self.diag[s.name.lstrip("/")] = {kv.key: kv.value for kv in s.values} | {"_message": s.message}

    def _on_episode(self, msg) -> None:
        try:
            info = json.loads(msg.data)
        except ValueError:
            return
        key = (info.get("episode"), info.get("status"))
        if info.get("status") == "done" and key not in self._episode_seen:
            self._episode_seen.add(key)
            self.episodes_done += 1
            self.successes += bool(info.get("success"))

    def check_graph(self, expected: set[str]) -> None:
        names = {n for n, _ in self.client.node.get_node_names_and_namespaces()}
        self.foreign_nodes |= names - expected - {"soak_monitor"}

    def counter(self, node: str, key: str) -> int | None:
        try:
            return int(self.diag.get(node, {})[key])
        except (KeyError, ValueError):
            return None


def machine() -> dict:
    load1, load5, load15 = os.getloadavg()
    return {"cpu_count": os.cpu_count(), "load_avg_1m": load1, "load_avg_5m": load5, "load_avg_15m": load15}


def report(args, domain, specs, procs, samples, monitor: Monitor, started_utc, wall_s, partial) -> dict:
    per_process = {}
    for spec, proc in zip(specs, procs, strict=True):
        series = [(t, mb[spec.name]) for t, mb in samples if mb.get(spec.name) is not None]
        base = next((mb for t, mb in series if t >= BASELINE_S), None)
        after = [mb for t, mb in series if t >= BASELINE_S]
        end = series[-1][1] if series else None
        per_process[spec.name] = {
            "pid": proc.pid,
            "exit_code": proc.poll(),
            "rss_start_mb": round(series[0][1], 1) if series else None,
            "rss_1min_mb": None if base is None else round(base, 1),
            "rss_end_mb": None if end is None else round(end, 1),
            "rss_peak_after_1min_mb": round(max(after), 1) if after else None,
            "growth_after_1min_mb": None if base is None or end is None else round(end - base, 2),
        }
    growths = [p["growth_after_1min_mb"] for p in per_process.values()]
    return {
        "bench": "soak",
        "partial": partial,
        "started_utc": started_utc,
        "minutes_requested": args.minutes,
        "wall_s": round(wall_s, 1),
        "launch": args.launch,
        "domain_id": domain,
        "profile": args.profile,
        "processes": per_process,
        "commands_checked": monitor.commands,
        "commands_without_points": monitor.empty,
        "commands_checked_share": _share(monitor),
        "bad_commands": monitor.bad_count,
        "bad_command_examples": monitor.bad,
        "safety_filter_passed": monitor.counter("safety_filter", "passed"),
        "safety_filter_held": monitor.counter("safety_filter", "held"),
        "safety_filter_bad_input": monitor.counter("safety_filter", "bad_input"),
        "safety_filter_last_hold_reason": monitor.diag.get("safety_filter", {}).get("last_hold_reason"),
        "policy_hold_count": monitor.counter("policy", "hold_count"),
        "policy_chunks": monitor.counter("policy", "chunks"),
        "policy_last_hold_reason": monitor.diag.get("policy", {}).get("last_hold_reason"),
        "episodes_done": monitor.episodes_done,
        "episodes_succeeded": monitor.successes,
        "foreign_nodes_seen": sorted(monitor.foreign_nodes),
        "floors": {
            "growth_after_1min_mb_below": GROWTH_FLOOR_MB,
            "growth_ok": all(g is not None and g < GROWTH_FLOOR_MB for g in growths),
            "zero_bad_commands": monitor.bad_count == 0,
            "all_processes_alive": all(p.poll() is None for p in procs) if partial else None,
        },
        "machine_start": args.machine_start,
        "machine_end": machine(),
        "load_avg_1m_during": {
            "mean": round(float(np.mean(args.load_1m_samples)), 2) if args.load_1m_samples else None,
            "max": round(float(np.max(args.load_1m_samples)), 2) if args.load_1m_samples else None,
        },
    }


def _share(monitor: Monitor) -> float | None:
    """Commands checked / commands the safety filter answered with (passed + held, from its last
    diagnostics, up to 1 s old: approximate)."""
    passed, held = monitor.counter("safety_filter", "passed"), monitor.counter("safety_filter", "held")
    if passed is None or held is None or passed + held == 0:
        return None
    return round(monitor.commands / (passed + held), 4)


def print_table(out: dict) -> None:
    print(f"{'process':<15}{'pid':>8}{'start MB':>10}{'1 min MB':>10}{'end MB':>10}{'peak MB':>10}{'growth MB':>11}")
    for name, p in out["processes"].items():
        cells = [p[k] for k in ("rss_start_mb", "rss_1min_mb", "rss_end_mb", "rss_peak_after_1min_mb")]
        text = "".join(f"{'-' if c is None else c:>10}" for c in cells)
        growth = p["growth_after_1min_mb"]
        print(f"{name:<15}{p['pid']:>8}{text}{'-' if growth is None else growth:>11}")
    print(
        f"commands checked {out['commands_checked']} (share {out['commands_checked_share']}, "
        f"without points {out['commands_without_points']}), "
        f"bad {out['bad_commands']}; holds: safety filter {out['safety_filter_held']}, "
        f"policy {out['policy_hold_count']}; episodes {out['episodes_done']} ({out['episodes_succeeded']} succeeded); "
        f"foreign nodes {out['foreign_nodes_seen'] or 'none'}; 1-min load mean {out['load_avg_1m_during']['mean']}, "
        f"max {out['load_avg_1m_during']['max']} on {out['machine_end']['cpu_count']} cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", default=None, help="JSON result path (rewritten every minute while running)")
    parser.add_argument("--policy", default=DEFAULT_POLICY)
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--rate", type=float, default=50.0, help="policy rate, Hz")
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling period, s")
    parser.add_argument("--domain", type=int, default=None, help="ROS domain (default: the first free one probed)")
    parser.add_argument("--log-dir", default=None, help="node logs (default: a temporary folder)")
    args = parser.parse_args()
    if args.minutes * 60.0 <= BASELINE_S:
        parser.error("--minutes must exceed 1: growth is measured after the first minute")

    args.launch = [f"policy:={args.policy}", f"task:={args.task}", "rtf:=1.0", f"policy_rate:={args.rate}"]
    values = parse_launch_args(args.launch)
    args.profile = values["profile"]
    profile = get_profile(args.profile)
    args.machine_start = machine()
    domain = args.domain if args.domain is not None else free_domain([150 + (os.getpid() + i) % 80 for i in range(5)])
    specs = node_list(values)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="dexstack_soak_")
    started_utc = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"soak {args.minutes} min on domain {domain}: {[s.name for s in specs]}; logs in {log_dir}", flush=True)

    monitor = Monitor(domain, profile)
    procs = start_nodes(specs, env=node_environment(domain), log_dir=log_dir)
    samples: list[tuple[float, dict[str, float | None]]] = []
    args.load_1m_samples = []
    start = time.monotonic()
    next_sample = next_checkpoint = start
    expected = {n for s in specs for n in s.node_names}
    try:
        while time.monotonic() - start < args.minutes * 60.0:
            monitor.client.spin_for(0.5)
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - start, {s.name: rss_mb(p.pid) for s, p in zip(specs, procs, strict=True)}))
                monitor.check_graph(expected)
                args.load_1m_samples.append(os.getloadavg()[0])
                next_sample += args.sample_s
            if now >= next_checkpoint and args.out:
                partial = report(args, domain, specs, procs, samples, monitor, started_utc, now - start, True)
                Path(args.out).write_text(json.dumps(partial, indent=1))
                next_checkpoint += 60.0
            died = [s.name for s, p in zip(specs, procs, strict=True) if p.poll() is not None]
            if died:
                print(f"node(s) {died} exited early; stopping the soak", flush=True)
                break
        samples.append((time.monotonic() - start, {s.name: rss_mb(p.pid) for s, p in zip(specs, procs, strict=True)}))
        alive = all(p.poll() is None for p in procs)
        wall_s = time.monotonic() - start
    finally:
        stop_nodes(procs)
        monitor.client.spin_for(0.5)
    out = report(args, domain, specs, procs, samples, monitor, started_utc, wall_s, False)
    out["floors"]["all_processes_alive"] = alive
    out["exit_codes"] = {s.name: p.returncode for s, p in zip(specs, procs, strict=True)}
    monitor.client.close()
    print_table(out)
    print(json.dumps(out))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
