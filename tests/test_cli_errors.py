"""One-line errors (issue 12, row 12): a user's mistake ends the real `dexstack` command with a
non-zero exit code and one line on stderr, never a Python traceback, and before any work is done
(no node started, no episode run, nothing published)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_store import corrupt_flip_bytes, make_export

from dexstack.launcher import node_environment


def dexstack_fails(*args: str, home: Path) -> str:
    """Run `dexstack ARGS`; assert it failed with one `error:` line on stderr and no traceback;
    return that line."""
    out = subprocess.run(
        [sys.executable, "-m", "dexstack.cli", *args],
        env=node_environment(extra={"DEXSTACK_HOME": str(home), "COLUMNS": "80"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0, out.stdout[-2000:]
    assert "Traceback" not in out.stderr + out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "no_such_policy"], "no policy named 'no_such_policy' in the store"),
        (["--policy", "bc_pick_lift@9"], "policy 'bc_pick_lift' has no version '9'; versions: 1"),
        (["--policy", "bc_pick_lift@x"], "bad policy reference 'bc_pick_lift@x'"),
        (["--policy", "expert", "--through-ros", "--pacing", "fast"], "pacing:=fast is not one of realtime, lockstep"),
        (["--policy", "expert", "--through-ros", "--domain", "999"], "ROS domain 999 is out of range 0..232"),
    ],
)
def test_eval_mistakes_are_one_line(tmp_path, args, message):
    assert message in dexstack_fails("eval", "--episodes", "1", *args, home=tmp_path)


@pytest.mark.parametrize("where", ["a_file/video.mp4", "a_dir"])
def test_an_unwritable_video_path_is_refused_before_any_episode_runs(tmp_path, where):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_dir").mkdir()
    video = tmp_path / where
    line = dexstack_fails(
        "eval", "--policy", "expert", "--episodes", "1", "--video", str(video), home=tmp_path / "home"
    )
    assert line.startswith(f"error: --video {video}")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["a_dir", "a_file"]  # nothing written
    assert list((tmp_path / "a_dir").iterdir()) == []


@pytest.mark.parametrize(
    ("launch_args", "message"),
    [
        (["policy_rate:=abc"], "policy_rate:=abc is not a number"),
        (["policy_rate:=0"], "policy_rate:=0 must be a finite number > 0"),
        (["seed:=-5"], "seed:=-5 must be an integer in 0 .."),
        (["rtf:=nan"], "rtf:=nan must be a finite number >= 0"),
        (["params_file:=/no/such/site.yaml"], "params_file:=/no/such/site.yaml does not exist"),
        (["pacing:=fast", "seed:=x"], "pacing:=fast is not one of realtime, lockstep; seed:=x is not an integer"),
    ],
)
def test_bad_launch_arguments_are_one_line_before_any_node_starts(tmp_path, launch_args, message):
    line = dexstack_fails("up", "--log-dir", str(tmp_path / "logs"), *launch_args, home=tmp_path)
    assert line == f"error: bad launch arguments: {message}" or message in line
    assert not (tmp_path / "logs").exists()  # no node was started


def test_store_publish_of_a_corrupted_or_unchecksummed_export_is_one_line(tmp_path):
    home = tmp_path / "home"
    bare = make_export(tmp_path / "bare", checksums=False)
    line = dexstack_fails("store", "publish", str(bare), home=home)
    assert "records no sha256 of its files" in line and "--record-checksums" in line
    flipped = make_export(tmp_path / "flipped")
    corrupt_flip_bytes(flipped)
    line = dexstack_fails("store", "publish", str(flipped), home=home)
    assert "checksum mismatch for ['policy.onnx']" in line
    garbage = make_export(tmp_path / "garbage", checksums=False)
    corrupt_flip_bytes(garbage)
    line = dexstack_fails("store", "publish", str(garbage), "--record-checksums", home=home)
    assert "onnxruntime cannot open graph 'policy' (policy.onnx)" in line
    assert not (home / "policies" / "add_one").exists() or not any(
        p.name.isdigit() for p in (home / "policies" / "add_one").iterdir()
    )


def test_dexstack_debug_shows_the_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dexstack.cli", "up", "seed:=-5"],
        env=node_environment(extra={"DEXSTACK_HOME": str(tmp_path), "DEXSTACK_DEBUG": "1"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "Traceback" in out.stderr and "seed:=-5" in out.stderr
