"""`dexstack eval`: one evaluator, in-process and through the ROS graph; JSON summary last."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dexstack.graph import DEFAULT_POLICY
from dexstack.launcher import node_environment


def run_eval(*args: str, timeout: float = 240) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "dexstack.cli", "eval", *args],
        env=node_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_in_process_eval_of_the_expert(tmp_path):
    video, plot = tmp_path / "ep.mp4", tmp_path / "plot.png"
    summary = run_eval(
        "--policy", "expert", "--episodes", "3", "--seed", "40", "--video", str(video), "--plot", str(plot)
    )
    assert summary["episodes"] == 3 and summary["mode"] == "in_process"
    assert summary["success_rate"] >= 2 / 3
    assert summary["seeds"] == [40, 41, 42] and len(summary["outcomes"]) == len(summary["episode_sim_s"]) == 3
    assert "inference_ms_p50" not in summary  # the expert is no inference
    assert video.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_in_process_grasp_eval_writes_video_and_plot_and_compares(tmp_path):
    """--video / --plot and --compare on the grasp task: the scripted controller's episodes
    compared with themselves agree everywhere."""
    video, plot, first = tmp_path / "grasp.mp4", tmp_path / "grasp.png", tmp_path / "first.json"
    args = ("--policy", "scripted", "--task", "grasp", "--option", "object=potted_meat_can", "--episodes", "1")
    summary = run_eval(*args, "--video", str(video), "--plot", str(plot))
    assert summary["groups"]["potted_meat_can"]["seeds"] == [2_000_000_000]  # the grasp task's default seed
    assert video.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    first.write_text(json.dumps(summary) + "\n")
    again = run_eval(*args, "--compare", str(first))
    assert again["outcomes"] == summary["outcomes"] and again["time_to_lift_s"] == summary["time_to_lift_s"]
    pair = again["comparison"]["potted_meat_can"]
    assert pair["episodes"] == 1 and pair["only_first"] == pair["only_second"] == 0


def test_an_unknown_task_option_is_a_one_line_error():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dexstack.cli",
            "eval",
            "--policy",
            "expert",
            "--episodes",
            "1",
            "--option",
            "object=sugar_box",
        ],
        env=node_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "task 'pick_lift' has no option object; its options: none" in out.stderr


@pytest.mark.ros
def test_eval_through_ros_reports_latency_of_the_shipped_policy_and_no_lockstep_zeros():
    summary = run_eval("--policy", DEFAULT_POLICY, "--episodes", "2", "--through-ros", "--seed", "5")
    assert summary["episodes"] == 2 and summary["mode"] == "ros_lockstep"
    for key in ("success_rate", "inference_ms_p50", "inference_ms_p99"):
        assert key in summary
    assert 0 < summary["inference_ms_p50"] <= summary["inference_ms_p99"]
    # Lockstep measures no loop jitter or end-to-end latency (sim time stands still): no 0.0 figures.
    assert "loop_jitter_ms_p99" not in summary and "e2e_ms_p99" not in summary
    assert summary["timing_note"].startswith("lockstep: loop jitter and end-to-end latency are not measured")
    assert summary["holds"] == 0  # lockstep through DDS: every observation answered by the policy
    assert summary["seeds"] == [5, 6] and "groups" not in summary


def test_unknown_policy_is_a_clear_error(dexstack_home):
    out = subprocess.run(
        [sys.executable, "-m", "dexstack.cli", "eval", "--policy", "no_such_policy", "--episodes", "1"],
        env=node_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "no_such_policy" in out.stderr + out.stdout


def test_only_a_realtime_run_reports_loop_jitter_and_end_to_end_latency():
    from dexstack.cli.evaluate import _timing

    diag = {"loop_jitter_ms_p99": "3.25", "e2e_ms_p99": "8.0", "inference_ms_p50": "1.0"}
    assert _timing("realtime", diag) == {"loop_jitter_ms_p99": 3.25, "e2e_ms_p99": 8.0}
    assert list(_timing("lockstep", diag)) == ["timing_note"]
