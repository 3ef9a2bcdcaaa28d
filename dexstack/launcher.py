"""Start and stop a node list as plain processes (what `dexstack up` and the tests use).

Each node runs as `python -m dexstack.ros_nodes.<executable> --ros-args ...`, exactly the
arguments `ros2 run` would pass, with discovery kept on this host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping

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
