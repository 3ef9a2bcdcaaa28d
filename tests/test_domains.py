"""Private ROS domains (issue 12, row 9): a tool that runs a graph of its own picks a domain that
is verifiably empty, refuses a busy one it was told to use, and stops when a stranger joins.

Real rclpy over Fast DDS: the "robot" on a busy domain is a real node in its own context, and
the mid-run intruder is a real node joining a real `dexstack eval --through-ros`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dexstack.launcher import node_environment
from dexstack.ros_nodes import domains
from dexstack.ros_nodes.client import RosClient
from dexstack.ros_nodes.domains import DomainError, GraphGuard, claim_domain, probe

pytestmark = pytest.mark.ros

# Two domains of this test run's own, outside the range tools pick from (20..99).
BUSY = 150 + (os.getpid() % 25) * 2
FREE = BUSY + 1
# Probe period where the answer is "empty" (nobody is there to miss); busy domains get the full one.
SHORT = 2.0


@pytest.fixture(autouse=True)
def release_claims():
    """Each test starts without this process's claims on BUSY and FREE (a claim lasts a process)."""
    yield
    for domain_id in (BUSY, FREE):
        domains._release(domain_id)


@pytest.fixture
def robot():
    """A stranger's node on domain BUSY (think: a robot's driver), until the test ends."""
    client = RosClient("robot_driver", BUSY)
    yield client
    client.close()


def test_the_probe_sees_a_foreign_node_and_the_claim_skips_its_domain(robot):
    assert "robot_driver" in probe(BUSY)
    assert claim_domain(env={}, candidates=[BUSY, FREE]) == FREE  # the busy one gets the full probe period


def test_a_forced_busy_domain_is_refused_with_the_reason(robot):
    with pytest.raises(DomainError, match=rf"ROS domain {BUSY} \(--domain {BUSY}\) is in use by robot_driver"):
        claim_domain(BUSY, env={})
    # An explicit ROS_DOMAIN_ID is the user's choice too: honoured if empty, refused if busy.
    with pytest.raises(DomainError, match=rf"\(ROS_DOMAIN_ID={BUSY}\) is in use by robot_driver"):
        claim_domain(env={"ROS_DOMAIN_ID": str(BUSY)})
    assert claim_domain(env={"ROS_DOMAIN_ID": str(FREE)}, wait_s=SHORT) == FREE
    with pytest.raises(DomainError, match="out of range"):
        claim_domain(999, env={})


def test_eval_on_a_forced_busy_domain_is_a_one_line_error_and_starts_nothing(robot, tmp_path):
    env = node_environment() | {"DEXSTACK_HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    cmd = ["eval", "--policy", "expert", "--through-ros", "--episodes", "1", "--domain", str(BUSY)]
    out = subprocess.run(
        [sys.executable, "-m", "dexstack.cli", *cmd], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"ROS domain {BUSY} (--domain {BUSY}) is in use by robot_driver" in lines[0]
    assert not list(tmp_path.glob("dexstack_eval_*"))  # no node was started


def test_a_domain_locked_by_another_process_is_not_picked():
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from dexstack.ros_nodes import domains; print(domains._try_lock({BUSY}), flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        assert claim_domain(env={}, candidates=[BUSY, FREE]) == FREE  # the busy one gets the full probe period
        with pytest.raises(DomainError, match=f"no free ROS domain among {BUSY}..{BUSY}"):
            claim_domain(env={}, candidates=[BUSY])
    finally:
        holder.kill()
        holder.wait()


def test_the_guard_flags_a_stranger_and_a_second_node_under_one_of_our_names(monkeypatch):
    monkeypatch.setattr(domains, "GUARD_PERIOD_S", 0.0)
    watcher = RosClient("watcher", FREE)
    ours = RosClient("sim", FREE)
    extra: list[RosClient] = []
    try:
        guard = GraphGuard(watcher.node, ["sim"], FREE)
        assert watcher.spin_until(lambda: "sim" in [n for n, _ in watcher.node.get_node_names_and_namespaces()])
        for _ in range(3):
            guard.check()  # our own node is no stranger
        extra.append(RosClient("sim", FREE))  # a second graph's sim on our domain

        def flagged() -> bool:
            # With no pause between looks, the newcomer's endpoints may be flagged before its name
            # is known ("endpoint of no known node"); wait for the guard to name it.
            try:
                guard.check()
            except DomainError as exc:
                assert f"joined private domain {FREE} mid-run: " in str(exc)
                return "mid-run: sim" in str(exc)
            return False

        assert watcher.spin_until(flagged, timeout_s=20.0)
    finally:
        for client in [*extra, ours, watcher]:
            client.close()


def test_eval_stops_with_a_clear_error_when_a_foreign_node_joins_mid_run(tmp_path):
    # The eval's node logs land in TMPDIR: their appearing says the graph is starting.
    env = node_environment() | {"DEXSTACK_HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    env.pop("ROS_DOMAIN_ID", None)
    cmd = [sys.executable, "-m", "dexstack.cli", "eval", "--policy", "expert", "--through-ros", "--episodes", "50"]
    proc = subprocess.Popen(
        [*cmd, "--domain", str(FREE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # Join only once the eval has claimed the domain and started its nodes (joining earlier
        # makes it refuse the busy domain instead, which another test covers).
        deadline = time.monotonic() + 90
        while not list(tmp_path.glob("dexstack_eval_*/sim.log")):
            assert proc.poll() is None and time.monotonic() < deadline, "the eval never started its graph"
            time.sleep(0.2)
        intruder = RosClient("intruder", FREE)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        assert proc.returncode != 0
        assert "Traceback" not in stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, stderr[-2000:]
        assert f"joined private domain {FREE} mid-run" in errors[0] and "intruder" in errors[0]
        # The eval stopped its nodes on the way out: the intruder ends up alone.
        assert intruder.spin_until(
            lambda: {n for n, _ in intruder.node.get_node_names_and_namespaces()} <= {"intruder"}, timeout_s=30.0
        )
    finally:
        intruder.close()
