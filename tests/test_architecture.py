"""The layout's rules (BRIEF §1, issue 13), checked on the source: no import cycles, core imports
no outer layer, ROS nodes stay thin, and serving a shipped policy pulls in neither torch nor the
simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from import_graph import ROOT, cycles, import_edges, module_files

OUTER = (
    "dexstack.hardware",
    "dexstack.sim",
    "dexstack.policies",
    "dexstack.ros_nodes",
    "dexstack.perception",
    "dexstack.cli",
)
NODE_MAX_LINES = 300


def test_the_package_has_no_import_cycles():
    # Function-level imports count: a cycle through a lazy import is still two modules that
    # cannot be understood (or moved) one without the other.
    assert cycles(import_edges()) == []


def test_import_graph_sees_a_cycle_when_there_is_one(tmp_path):
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_core_imports_no_outer_layer():
    """dexstack/ (contract, manifest, store, datasets, trajectories) must not import hardware/, sim/,
    policies/ or ros_nodes/ at run time; the CLI is the one place that wires them together."""
    edges = import_edges()
    bad = {
        m: sorted(t for t in targets if t.startswith(OUTER))
        for m, targets in edges.items()
        if m.startswith("dexstack.") and not m.startswith(OUTER)
    }
    assert {m: t for m, t in bad.items() if t} == {}


def test_ros_nodes_stay_thin():
    sizes = {
        m: len(p.read_text().splitlines()) for m, p in module_files().items() if m.startswith("dexstack.ros_nodes.")
    }
    assert sizes, "no ROS node modules found"
    assert {m: n for m, n in sizes.items() if n > NODE_MAX_LINES} == {}


def _shipped_refs() -> list[str]:
    store = ROOT / "policy_store"
    return sorted(
        f"{name.name}@{version.name}"
        for name in store.iterdir()
        if name.is_dir()
        for version in name.iterdir()
        if (version / "manifest.json").is_file()
    )


SERVE_AND_REPORT = """
import json, sys
import numpy as np
from dexstack.hardware.profiles import get_profile
from dexstack.runtime import load_runtime
from dexstack.store import PolicyStore
loaded = PolicyStore().verify(sys.argv[1])
profile = get_profile(loaded.manifest["robot_profile"])
loaded = PolicyStore().load(sys.argv[1], profile)
runtime = load_runtime(loaded.path, loaded.manifest, profile=profile, rate_hz=None)
import dexstack.ros_nodes.policy_node  # the node module too
print(json.dumps(sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "dexstack.sim")))))
"""


@pytest.mark.parametrize("ref", _shipped_refs())
def test_serving_a_shipped_policy_imports_neither_torch_nor_the_sim(ref, tmp_path):
    env = dict(os.environ, DEXSTACK_HOME=str(tmp_path), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    out = subprocess.run(
        [sys.executable, "-c", SERVE_AND_REPORT, ref],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=Path(ROOT),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
