"""Private ROS domains that are verifiably private (issue 12, row 9).

`dexstack eval --through-ros`, `dexstack demo` and `dexstack record-demos` run a whole graph of
their own (sim, safety filter, policy, recorder). Two graphs on one domain mix their messages,
and an evaluation on a robot's domain would publish onto its controller topic. So every such
tool runs on a domain that it has checked to be empty, and stops if a stranger joins.

Which domain (`claim_domain`):
1. `--domain N` (`forced`): used if empty, else a one-line error.
2. an explicit `ROS_DOMAIN_ID` in the environment: the same (honoured, verified, never silently
   replaced: on a robot PC whose shell exports the robot's domain the tool refuses instead of
   joining the robot's graph; unset it to let dexstack pick).
3. otherwise the first free domain of `contract.PRIVATE_DOMAIN_IDS`, starting at a pid-dependent
   offset.

"Empty" means two things. No other dexstack tool on this machine holds the domain's lock (an
abstract-namespace Unix socket, held until the process exits, so two tools starting together
cannot pick the same one), and a probe node that joins the domain for a discovery period sees no node and no DDS
endpoint but its own. Discovery stays on this host (`ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`),
so the probe sees exactly the participants that could talk to the graph.

While the graph runs, `GraphGuard.check()` compares the graph's node names with the nodes the
tool started: a node it did not start (or a second node under one of its names) that stays for
a few seconds raises `DomainError`. That also forbids watching a private run with
`ros2 topic echo`: read the node logs, or bring the graph up yourself with `dexstack up`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from rclpy.node import Node

from dexstack import contract
from dexstack.errors import DexstackError
from dexstack.ros_nodes.client import RosClient

# Probe period. A newcomer usually hears a live participant within 0.5 s here, but now and then
# only from the participant's periodic announcement, which Fast DDS sends every 3 s.
DISCOVERY_S = 4.0
NAMES_S = 1.0  # once a probe sees endpoints, how long it waits for their nodes' names
UNNAMED = " (endpoint of no known node)"  # a DDS endpoint whose node name is unknown (yet, or not ROS)
GUARD_PERIOD_S = 1.0  # GraphGuard.check() looks at the graph at most this often
GUARD_CONFIRM_S = 3.0  # and reports a stranger that has stayed this long
LOCK_NAME = "dexstack-ros-domain-"  # + the domain id: the abstract socket name of its lock
_held_locks: dict[int, socket.socket] = {}  # domain -> its bound lock socket, kept for the process's life


class DomainError(DexstackError):
    """The domain is not ours alone; the message is one line and says what to do."""


def _try_lock(domain_id: int) -> bool:
    """Take domain `domain_id`'s lock for the rest of this process; False if another process
    holds it. The lock is a Unix socket bound to a name in Linux's abstract namespace: one name
    per machine for every user (unlike $TMPDIR), no file to create or clean up, and the kernel
    drops it when the process exits however it exits."""
    if domain_id in _held_locks:
        return True
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0{LOCK_NAME}{domain_id}")
    except OSError:  # EADDRINUSE: another process holds it
        sock.close()
        return False
    _held_locks[domain_id] = sock
    return True


def strangers(node: Node, ours: Iterable[str] = ()) -> list[str]:
    """Who else is on `node`'s domain: nodes other than `node` whose names are not in `ours` (or
    that duplicate one of them), and DDS endpoints of no known node (`topic` + UNNAMED)."""
    me = (node.get_namespace(), node.get_name())
    expected = Counter(ours)
    seen = Counter(name for name, ns in node.get_node_names_and_namespaces() if (ns, name) != me)
    found = sorted(name for name, count in seen.items() if count > expected.get(name, 0))
    known = set(seen) | {me[1]}
    for topic, _ in node.get_topic_names_and_types():
        endpoints = node.get_publishers_info_by_topic(topic) + node.get_subscriptions_info_by_topic(topic)
        if any(e.node_name not in known for e in endpoints):
            found.append(f"{topic}{UNNAMED}")
    return found


def probe(domain_id: int, wait_s: float = DISCOVERY_S) -> list[str]:
    """Join `domain_id` with a probe node for up to `wait_s` and return `strangers` (empty: nobody
    else is there). The probe runs in a process of its own: a participant re-created in one
    process can get its predecessor's DDS GUID, and a peer that still knows that GUID may then
    not answer it for seconds (seen here: one probe in eight missed a live node)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", __name__, str(domain_id), repr(wait_s)],
            env={**os.environ, **contract.ros_environment()},
            capture_output=True,
            text=True,
            timeout=wait_s + 60.0,
        )
    except subprocess.TimeoutExpired:
        raise DomainError(f"could not probe ROS domain {domain_id}: the probe did not finish") from None
    if out.returncode != 0:
        raise DomainError(f"could not probe ROS domain {domain_id}: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _probe_here(domain_id: int, wait_s: float) -> list[str]:
    client = RosClient(f"dexstack_domain_probe_{os.getpid()}", domain_id)
    try:
        deadline = time.monotonic() + wait_s
        while not (found := strangers(client.node)) and time.monotonic() < deadline:
            client.executor.spin_once(timeout_sec=0.05)
        # Someone is there: a moment more to learn names (endpoints show before node names do).
        settle = time.monotonic() + NAMES_S
        while found and time.monotonic() < settle and any(f.endswith(UNNAMED) for f in found):
            client.executor.spin_once(timeout_sec=0.05)
            found = strangers(client.node) or found
        return found
    finally:
        client.close()


def _check_id(domain_id: int, where: str) -> int:
    if not 0 <= domain_id <= contract.MAX_DOMAIN_ID:
        raise DomainError(f"{where}: ROS domain {domain_id} is out of range 0..{contract.MAX_DOMAIN_ID}")
    return domain_id


def _explicit(forced: int | None, env: Mapping[str, str]) -> tuple[int, str] | None:
    """The domain the user chose and how ("--domain" or "ROS_DOMAIN_ID"), or None."""
    if forced is not None:
        return _check_id(int(forced), "--domain"), f"--domain {forced}"
    text = env.get("ROS_DOMAIN_ID", "").strip()
    if not text:
        return None
    try:
        return _check_id(int(text), "ROS_DOMAIN_ID"), f"ROS_DOMAIN_ID={text}"
    except ValueError:
        raise DomainError(f"ROS_DOMAIN_ID={text!r} is not an integer") from None


def claim_domain(
    forced: int | None = None,
    env: Mapping[str, str] | None = None,
    candidates: Iterable[int] | None = None,
    wait_s: float = DISCOVERY_S,
) -> int:
    """A ROS domain with nobody else on it, for a graph this process starts (see the module
    docstring for the order: `forced`, then `env`'s ROS_DOMAIN_ID, then the first free one of
    `candidates`, default `contract.PRIVATE_DOMAIN_IDS` from a pid-dependent offset). Raises
    DomainError when the chosen domain is busy or no candidate is free."""
    env = os.environ if env is None else env
    chosen = _explicit(forced, env)
    if chosen is not None:
        domain_id, how = chosen
        # The user's choice: a lock held by another dexstack tool does not refuse it (that tool's
        # nodes, if any are up, show in the probe), but the lock keeps automatic pickers away.
        took = domain_id not in _held_locks and _try_lock(domain_id)
        found = probe(domain_id, wait_s)
        if found:
            if took:
                _release(domain_id)
            raise DomainError(
                f"ROS domain {domain_id} ({how}) is in use by {', '.join(found[:5])}: this tool runs a graph of "
                "its own and must be alone on its domain; choose a free --domain or unset ROS_DOMAIN_ID"
            )
        return domain_id
    pool = list(contract.PRIVATE_DOMAIN_IDS if candidates is None else candidates)
    start = os.getpid() % len(pool) if candidates is None else 0
    busy: list[str] = []
    for domain_id in pool[start:] + pool[:start]:
        held = domain_id in _held_locks  # by an earlier claim of this process: not ours to drop
        if not _try_lock(domain_id):
            continue
        found = probe(domain_id, wait_s)
        if not found:
            return domain_id
        busy.append(f"{domain_id} ({found[0]})")
        if not held:
            _release(domain_id)
    raise DomainError(
        f"no free ROS domain among {pool[0]}..{pool[-1]} (locked by other dexstack tools, or in use: "
        f"{', '.join(busy[:5]) or 'none probed'}); pass a free one with --domain"
    )


def _release(domain_id: int) -> None:
    sock = _held_locks.pop(domain_id, None)
    if sock is not None:
        sock.close()


def wait_until_empty(domain_id: int, timeout_s: float = 30.0, wait_s: float = DISCOVERY_S) -> None:
    """Between two graphs on one domain: return once a full probe sees nobody (the previous
    graph's nodes have left); DomainError if someone is still there after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while found := probe(domain_id, wait_s):
        if time.monotonic() > deadline:
            raise DomainError(f"ROS domain {domain_id} still has {', '.join(found[:5])} after {timeout_s:.0f} s")
        time.sleep(0.5)


class GraphGuard:
    """Watches a running private graph from `node` (on the graph's domain): `check()` raises
    DomainError naming the stranger when a node other than `ours` (the started nodes' names) or
    the watcher, or a second node under one of those names, has been there for GUARD_CONFIRM_S.
    Call it from the spin loop; it looks at most every GUARD_PERIOD_S."""

    def __init__(self, node: Node, ours: Iterable[str], domain_id: int | None = None) -> None:
        self.node = node
        self.ours = list(ours)
        self.domain_id = domain_id
        self._next = 0.0
        self._since: dict[str, float] = {}  # stranger -> when it was first seen (still there since)

    def check(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + GUARD_PERIOD_S
        # Only what stays: a starting node's endpoints can show before its name does (rmw learns
        # names from ros_discovery_info, late on a loaded machine), and that must not look foreign.
        seen = strangers(self.node, self.ours)
        self._since = {who: self._since.get(who, now) for who in seen}
        found = [who for who, since in self._since.items() if now - since >= GUARD_CONFIRM_S]
        if found:
            domain = "" if self.domain_id is None else f" {self.domain_id}"
            raise DomainError(
                f"foreign ROS participant(s) joined private domain{domain} mid-run: {', '.join(found[:5])}; "
                "stopped, since results would mix two graphs (a private run cannot be watched with ros2 tools: "
                "read the node logs)"
            )


if __name__ == "__main__":  # `probe`'s own process: DOMAIN_ID WAIT_S -> a JSON list on stdout
    print(json.dumps(_probe_here(int(sys.argv[1]), float(sys.argv[2]))))
