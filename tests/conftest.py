"""Shared fixtures: a private ROS domain per test session, a plain rclpy client node, and a
launcher that starts dexstack nodes as real processes over DDS."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

# Set before any ROS context starts: discovery stays on this host, and the session runs on a
# domain verified empty (locked against other dexstack tools and test runs, probed over DDS:
# ros_nodes/domains.py), so parallel runs on one machine never see each other's nodes.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
if not os.environ.get("ROS_DOMAIN_ID"):
    from dexstack.ros_nodes.domains import claim_domain

    os.environ["ROS_DOMAIN_ID"] = str(claim_domain())
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture
def dexstack_home(tmp_path, monkeypatch) -> str:
    """An empty policy store for the test."""
    home = tmp_path / "dexstack_home"
    home.mkdir()
    monkeypatch.setenv("DEXSTACK_HOME", str(home))
    return str(home)


@pytest.fixture
def ros_client():
    """A plain rclpy node knowing nothing of dexstack, with spin-until helpers."""
    from dexstack.ros_nodes.client import RosClient

    client = RosClient("test_client")
    yield client
    client.close()


@pytest.fixture
def launch_nodes(tmp_path) -> Iterator[Callable]:
    """`launch_nodes(specs, extra_env=None)` starts NodeSpecs as processes; all stop at teardown.
    Node logs land in tmp_path/logs and are printed if a node died."""
    from dexstack.launcher import node_environment, start_nodes, stop_nodes

    started = []
    log_dir = str(tmp_path / "logs")

    def _launch(specs, extra_env=None):
        procs = start_nodes(specs, env=node_environment(extra=extra_env), log_dir=log_dir)
        started.extend(procs)
        return procs

    yield _launch
    stop_nodes(started)
    if os.path.isdir(log_dir):
        for name in sorted(os.listdir(log_dir)):
            with open(os.path.join(log_dir, name), errors="replace") as f:
                tail = f.read()[-3000:]
            print(f"----- {name} -----\n{tail}")
