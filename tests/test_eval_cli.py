"""`dexstack eval`: one evaluator, in-process and through the ROS graph; JSON summary last."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dexstack.graph import DEFAULT_POLICY
from dexstack.launcher import node_environment


def run_eval(*args: str, timeout: float = 240) -> dict:
    out = subprocess.run([sys.executable, "-m", "dexstack.cli", "eval", *args], env=node_environment(),
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_in_process_eval_of_the_expert(tmp_path):
    video, plot = tmp_path / "ep.mp4", tmp_path / "plot.png"
    summary = run_eval("--policy", "expert", "--episodes", "3", "--seed", "40", "--video", str(video),
                       "--plot", str(plot))
    assert summary["episodes"] == 3 and summary["mode"] == "in_process"
    assert summary["success_rate"] >= 2 / 3
    assert summary["seeds"] == [40, 42]
    assert video.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.ros
def test_eval_through_ros_reports_latency_and_jitter_of_the_shipped_policy():
    summary = run_eval("--policy", DEFAULT_POLICY, "--episodes", "2", "--through-ros", "--seed", "5")
    assert summary["episodes"] == 2 and summary["mode"] == "ros_lockstep"
    for key in ("success_rate", "inference_ms_p50", "inference_ms_p99", "loop_jitter_ms_p99"):
        assert key in summary
    assert 0 < summary["inference_ms_p50"] <= summary["inference_ms_p99"]
    assert summary["holds"] == 0  # lockstep through DDS: every observation answered by the policy


def test_unknown_policy_is_a_clear_error(dexstack_home):
    out = subprocess.run([sys.executable, "-m", "dexstack.cli", "eval", "--policy", "no_such_policy",
                          "--episodes", "1"], env=node_environment(), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "no_such_policy" in out.stderr + out.stdout
