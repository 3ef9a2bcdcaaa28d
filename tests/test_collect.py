"""In-process expert rollouts write the same dataset format as the MCAP converter."""

import numpy as np
import pytest

from dexstack import contract
from dexstack.dataset import ACTION, Dataset
from dexstack.hardware.profiles import PANDA
from dexstack.sim.collect import collect_dataset
from dexstack.sim.env import ManipulationEnv, rollout_expert


def test_collected_episodes_match_the_rollouts_they_came_from(tmp_path):
    dataset = collect_dataset(tmp_path / "ds", episodes=2, seed=21)
    assert isinstance(dataset, Dataset) and len(dataset) == 2
    assert dataset.meta["fps"] == contract.POLICY_HZ and dataset.joint_names == list(PANDA.joint_names)
    assert set(dataset.meta["features"]) == {contract.JOINT_POSITIONS, ACTION, "wrist_rgb", "scene_rgb"}
    episode = dataset.episode(0)
    again = rollout_expert(ManipulationEnv(cameras=True), 21, record=True)  # deterministic: same seed, same episode
    assert len(episode["timestamp"]) == len(again["observations"]) and dataset.meta["episodes"][0]["success"]
    np.testing.assert_allclose(episode[ACTION], np.array([a[0] for a in again["actions"]]), atol=1e-6)
    np.testing.assert_allclose(episode["timestamp"], 0.1 * np.arange(len(episode["timestamp"])), atol=1e-9)
    np.testing.assert_array_equal(episode["scene_rgb"][5], again["observations"][5]["scene_rgb"])
    # The label leads the measured position: it is nearer where the arm is one step later.
    label, q = episode[ACTION][:-1, :7], episode[contract.JOINT_POSITIONS][:, :7]
    assert np.abs(label - q[1:]).mean() < 0.5 * np.abs(label - q[:-1]).mean()


def test_collect_refuses_a_folder_in_use_and_leaves_nothing_on_failure(tmp_path):
    from typer.testing import CliRunner

    from dexstack.cli.data import app

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["collect", "--out", str(tmp_path / "ds"), "--episodes", "1"])
    assert result.exit_code == 1 and "not empty and is not a dataset" in " ".join(result.output.split())
    assert "Traceback" not in result.output and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    # A task that does not exist fails inside the build: no dataset and no temp dir are left.
    with pytest.raises(ValueError, match="unknown task 'no_such_task'"):
        collect_dataset(tmp_path / "new", episodes=1, task="no_such_task")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


# --- record-demos: which seeds a run may use in a recordings folder ------------------------
def _recording(folder, name: str, seed: int, task: str = "pick_lift") -> None:
    from dexstack.mcap_io import EpisodeWriter

    w = EpisodeWriter(folder / name)
    w.close({"seed": str(seed), "task_name": task, "success": "true"})


def test_record_demos_refuses_a_folder_with_episodes_unless_appending_and_never_reuses_seeds(tmp_path):
    from dexstack.ros_nodes.demo_collector import LEDGER, plan_seeds

    rec = tmp_path / "rec"
    assert plan_seeds(rec, 3, None, "pick_lift", append=False) == [0, 1, 2]  # a new folder
    rec.mkdir()
    assert plan_seeds(rec, 2, 40, "pick_lift", append=False) == [40, 41]
    _recording(rec, "a_0.mcap", 3)
    _recording(rec, "a_1.incomplete.mcap", 4)
    (rec / "a_2.mcap.part").write_bytes(b"\x89MCAP0\r\n")  # killed mid-episode: unreadable
    # A failed demonstration is discarded (no file) but its seed is in the ledger.
    (rec / LEDGER).write_text('{"seed": 7, "status": "started"}\n{"seed": 7, "success": false, "mcap": null}\n')
    with pytest.raises(ValueError, match="already holds 3 episode file\\(s\\); pass --append"):
        plan_seeds(rec, 2, None, "pick_lift", append=False)
    assert plan_seeds(rec, 2, None, "pick_lift", append=True) == [8, 9]
    assert plan_seeds(rec, 2, 100, "pick_lift", append=True) == [100, 101]
    with pytest.raises(ValueError, match="seeds \\[4, 7\\] were already recorded .* continue from 8"):
        plan_seeds(rec, 5, 4, "pick_lift", append=True)
    with pytest.raises(ValueError, match="records task 'pick_lift', not 'stack'"):
        plan_seeds(rec, 1, None, "stack", append=True)
    with pytest.raises(ValueError, match="--seed must be >= 0"):
        plan_seeds(tmp_path / "other", 1, -5, "pick_lift", append=False)


def test_record_demos_cli_refuses_before_starting_anything(tmp_path):
    from typer.testing import CliRunner

    from dexstack.cli import _register, app

    _register()
    rec = tmp_path / "rec"
    rec.mkdir()
    _recording(rec, "a_0.mcap", 0)
    result = CliRunner().invoke(app, ["record-demos", "--episodes", "1", "--out", str(rec)])
    assert result.exit_code == 2 and "pass --append" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in rec.iterdir()) == ["a_0.mcap"]  # no logs folder: nothing was started


@pytest.mark.ros
def test_record_demos_append_continues_seeds_and_every_episode_builds(tmp_path):
    """Through the real ROS graph (sim lockstep + expert + recorder): a first run, a refused
    second run, an --append run on fresh seeds; `dataset build` accepts every episode."""
    from typer.testing import CliRunner

    from dexstack.cli import _register, app
    from dexstack.mcap_io import build_from_mcap, episode_metadata

    _register()
    rec = tmp_path / "rec"
    runner = CliRunner()
    first = runner.invoke(app, ["record-demos", "--episodes", "1", "--out", str(rec), "--seed", "5"])
    assert first.exit_code == 0, first.output
    refused = runner.invoke(app, ["record-demos", "--episodes", "1", "--out", str(rec)])
    assert refused.exit_code == 2 and "pass --append" in refused.output
    again = runner.invoke(app, ["record-demos", "--episodes", "1", "--out", str(rec), "--append"])
    assert again.exit_code == 0, again.output
    files = sorted(rec.glob("*.mcap"))
    assert sorted(episode_metadata(f)["seed"] for f in files) == ["5", "6"]
    skipped: list[str] = []
    ds = build_from_mcap(rec, tmp_path / "ds", PANDA, on_skip=skipped.append)
    assert skipped == [] and len(ds) == 2 and all(e["success"] for e in ds.meta["episodes"])
