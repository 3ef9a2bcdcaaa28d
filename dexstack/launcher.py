"""Start, supervise and stop a node list as plain processes (what `dexstack up` and the tests use).

Each node runs as `python -m dexstack.ros_nodes.<executable> --ros-args ...`, exactly the
arguments `ros2 run` would pass, with discovery kept on this host. Supervision follows
`NodeSpec.critical` (`dexstack/graph.py`), as `launch/bringup.launch.py` does under `ros2 launch`:
a critical node's exit stops everything, any other node's exit is reported and the rest keeps
running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping

from dexstack import contract
from dexstack.graph import NodeSpec


def node_environment(domain_id: int | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(contract.ros_environment(domain_id))
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def start_nodes(
    specs: Iterable[NodeSpec], env: Mapping[str, str] | None = None, log_dir: str | None = None
) -> list[subprocess.Popen]:
    """Spawn every node; stdout/stderr go to `log_dir/<name>.log` when given, else inherit."""
    procs = []
    for spec in specs:
        out = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            out = open(os.path.join(log_dir, f"{spec.name}.log"), "wb")  # noqa: SIM115 - owned by the child
        procs.append(
            subprocess.Popen(
                spec.command(),
                env=dict(env) if env else node_environment(),
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True,
            )
        )
    return procs


def stop_nodes(procs: Iterable[subprocess.Popen], timeout_s: float = 10.0) -> list[int]:
    """SIGINT every node (what Ctrl-C does), then SIGKILL stragglers; returns exit codes."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return [p.returncode for p in procs]


def exit_text(code: int) -> str:
    """'code 1', or 'code -9 (SIGKILL)' for a process a signal ended."""
    if code < 0:
        try:
            return f"code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"code {code}"


def exit_line(spec: NodeSpec, code: int, pid: int | None = None) -> str:
    """The one line both launchers print when a node exits on its own (not asked to stop)."""
    who = spec.name if pid is None else f"{spec.name} (pid {pid})"
    if spec.critical:
        return f"{who} (critical) exited with {exit_text(code)}: stopping all nodes"
    return f"{who} exited with {exit_text(code)}; not critical: the other nodes keep running and the safety filter holds the arm"


def supervise(
    specs: list[NodeSpec],
    procs: list[subprocess.Popen],
    stop_requested: Callable[[], bool],
    report: Callable[[str], None],
    poll_s: float = 0.2,
) -> NodeSpec | None:
    """Wait until `stop_requested()` or a critical node exits; returns that node (None on a stop
    request). A non-critical node's exit is reported once, in one line, and the rest keeps
    running: a dead policy must leave the safety filter and the sim/hardware up to hold the arm."""
    reported: set[int] = set()
    while not stop_requested():
        for i, (spec, proc) in enumerate(zip(specs, procs, strict=True)):
            code = proc.poll()
            if code is None or i in reported:
                continue
            if spec.critical:
                return spec
            reported.add(i)
            report(exit_line(spec, code, proc.pid))
        time.sleep(poll_s)
    return None


def stop_in_order(specs: list[NodeSpec], procs: list[subprocess.Popen]) -> list[int]:
    """Stop the non-critical nodes together (the policy stops commanding), then the critical ones
    one by one in reverse start order (the safety filter, whose last act is a hold, before the
    sim/hardware that executes it); exit codes in `specs` order."""
    codes: dict[int, int] = {}
    phases = [[i for i, spec in enumerate(specs) if not spec.critical]]
    phases += [[i] for i in reversed(range(len(specs))) if specs[i].critical]
    for chosen in phases:
        codes.update(zip(chosen, stop_nodes([procs[i] for i in chosen]), strict=True))
    return [codes[i] for i in range(len(specs))]
