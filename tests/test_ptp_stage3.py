"""PTP multistage training end to end on a tiny synthetic dataset: a short-context run (stage 1),
its frozen encoder's feature cache (stage 2), a long-context PTP run on the cache (stage 3), its
export with self-verification, and that export served through the ROS graph in sim. Real torch,
onnxruntime, rclpy + DDS and MuJoCo; ~40 s."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import write_goal_dataset

from dexstack import contract
from dexstack.hardware.profiles import PANDA

torch = pytest.importorskip("torch")

TINY = dict(
    conv_channels=[8, 16],
    num_keypoints=8,
    down_dims=[32, 64],
    n_action_steps=4,
    step_embed_dim=32,
    batch_size=8,
    lr=3e-3,
    warmup_steps=5,
    val_fraction=0.25,
    torch_threads=1,
    ema_decay=0.9,
)
STAGE1 = dict(TINY, n_obs_steps=1, horizon=8, epochs=4, aux_regression_weight=1.0)  # the recipe's stage 1
LONG = dict(TINY, n_obs_steps=4, horizon=8, past_tokens_in_loss=3, epochs=20)


def _config(fields):
    from dexstack.policies.diffusion.config import DiffusionConfig

    return DiffusionConfig.from_dict({**DiffusionConfig().to_dict(), **fields})


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """(root, history of stage 3): stage 1 in-process, stage 2 and 3 and export through the CLI."""
    from typer.testing import CliRunner

    from dexstack.cli import _register, app
    from dexstack.policies.diffusion.train import train

    root = tmp_path_factory.mktemp("ptp3")
    write_goal_dataset(root / "data", 8, 12)
    train(root / "data", root / "encoder", _config(STAGE1), progress=False)
    _register()
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train",
            "diffusion",
            "embed",
            "--run",
            str(root / "encoder"),
            "--dataset",
            str(root / "data"),
            "--out",
            str(root / "cache.npz"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["frames"] == 8 * 12
    (root / "long.json").write_text(json.dumps(LONG))
    result = runner.invoke(
        app,
        [
            "train",
            "diffusion",
            "--dataset",
            str(root / "data"),
            "--out",
            str(root / "long"),
            "--config",
            str(root / "long.json"),
            "--encoder-run",
            str(root / "encoder"),
            "--embeddings",
            str(root / "cache.npz"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["export", "--run", str(root / "long"), "--out", str(root / "export"), "--self-verification", "4"]
    )
    assert result.exit_code == 0, result.output
    return root, json.loads((root / "long" / "history.json").read_text())


def test_stage3_trains_the_denoiser_on_cached_features_with_the_encoder_frozen(stages):
    from dexstack.policies.diffusion.embeddings import encoder_hash
    from dexstack.policies.diffusion.model import load_trained

    root, history = stages
    assert history[-1]["epoch"] == LONG["epochs"]
    assert history[-1]["val_loss"] < 0.85 * history[0]["val_loss"], history
    assert history[-1]["train_loss"] < history[0]["train_loss"], history
    stage1, _, _ = load_trained(root / "encoder")
    long, config, info = load_trained(root / "long")
    # The encoder (and its joint normalisation) is stage 1's, bit for bit; only the denoiser learned.
    assert encoder_hash(long) == encoder_hash(stage1) == info["frozen_encoder"]["encoder_hash"]
    assert config.n_obs_steps == 4 and config.past_tokens_in_loss == 3
    assert config.num_keypoints == STAGE1["num_keypoints"]


def test_export_serves_self_verification_and_features_match_the_cache(stages):
    from dexstack.dataset import Dataset
    from dexstack.policies.diffusion.embeddings import load_embeddings
    from dexstack.runtime import load_runtime

    root, _ = stages
    manifest = json.loads((root / "export" / "manifest.json").read_text())
    assert manifest["runtime"]["self_verification"] == {"num_candidates": 4}
    assert manifest["runtime"]["past_tokens_in_loss"] == 3
    runtime = load_runtime(root / "export", manifest, profile=PANDA)
    episode = Dataset(root / "data").episode(2)
    cache = load_embeddings(root / "cache.npz", root / "data", encoder=root / "encoder")
    obs = {
        key: episode[key][5] for key in (contract.JOINT_POSITIONS, contract.rgb_key("wrist"), contract.rgb_key("scene"))
    }
    # ONNX (serving) vs torch (cache): float32 differences of ~1e-4 through the spatial softmax.
    np.testing.assert_allclose(runtime.encode(obs), cache.episodes[2][5], atol=5e-4)
    for k in range(6):  # past the point where the history is full and verification starts
        chunk = runtime.act({key: episode[key][k] for key in obs})
        assert chunk.shape == (LONG["n_action_steps"], 8) and np.isfinite(chunk).all()


def test_plans_execute_open_loop_for_replan_every_calls(stages):
    """replan_every=2: calls 0-1 return consecutive slices of one plan, call 2 samples a new one;
    with self-verification the executed actions recorded are the plan's, one per call."""
    from dexstack.dataset import Dataset
    from dexstack.runtime import load_runtime

    root, _ = stages
    manifest = json.loads((root / "export" / "manifest.json").read_text())
    manifest["runtime"]["replan_every"] = 2
    runtime = load_runtime(root / "export", manifest, profile=PANDA)
    episode = Dataset(root / "data").episode(1)
    keys = (contract.JOINT_POSITIONS, contract.rgb_key("wrist"), contract.rgb_key("scene"))
    chunks = [runtime.act({k: episode[k][i] for k in keys}) for i in range(3)]
    np.testing.assert_array_equal(chunks[1][:-1], chunks[0][1:])
    assert not np.allclose(chunks[2][:-1], chunks[1][1:])  # a fresh sample (new noise, new history)
    assert len(runtime.verifier.executed_past()) == 3  # one executed action recorded per call
    manifest["runtime"]["replan_every"] = 3  # To-1 + 2 + Ta = 3 + 2 + 4 > Tp = 8: a chunk would leave the plan
    with pytest.raises(ValueError, match="exceeds horizon"):
        load_runtime(root / "export", manifest, profile=PANDA)


def test_stage3_refuses_mismatched_inputs(stages, tmp_path):
    from typer.testing import CliRunner

    from dexstack.cli import app
    from dexstack.policies.diffusion.embeddings import EmbeddingCacheError
    from dexstack.policies.diffusion.export import export_run
    from dexstack.policies.diffusion.train import train

    root, _ = stages
    other = tmp_path / "other"
    write_goal_dataset(other, 4, 10)  # another dataset: the cache is not its
    with pytest.raises(EmbeddingCacheError, match="other data"):
        train(other, tmp_path / "run", _config(LONG), encoder_run=root / "encoder", embeddings=root / "cache.npz")
    with pytest.raises(ValueError, match="both"):
        train(root / "data", tmp_path / "run", _config(LONG), encoder_run=root / "encoder")
    with pytest.raises(ValueError, match="frozen encoder"):
        train(
            root / "data",
            tmp_path / "run",
            _config({**LONG, "aux_regression_weight": 1.0}),
            encoder_run=root / "encoder",
            embeddings=root / "cache.npz",
        )
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(
        app,
        [
            "train",
            "diffusion",
            "--dataset",
            str(root / "data"),
            "--out",
            str(tmp_path / "run"),
            "--embeddings",
            str(root / "cache.npz"),
        ],
    )
    assert result.exit_code == 1 and "go together" in result.output
    # Self-verification needs a run trained with past tokens in the loss.
    with pytest.raises(ValueError, match="past tokens"):
        export_run(root / "encoder", tmp_path / "sv", self_verification=4)
    with pytest.raises(ValueError, match="N >= 2"):
        export_run(root / "long", tmp_path / "sv", self_verification=1)
    assert not (tmp_path / "sv").exists()


def test_resume_continues_on_the_cache(stages, tmp_path):
    import shutil

    from dexstack.policies.diffusion.train import train

    root, history = stages
    shutil.copytree(root / "long", tmp_path / "long")
    more = train(root / "data", tmp_path / "long", resume=True, epochs=LONG["epochs"] + 2, progress=False)
    assert [h["epoch"] for h in more][-3:] == [LONG["epochs"], LONG["epochs"] + 1, LONG["epochs"] + 2]
    assert more[: len(history)] == history


def test_exported_ptp_policy_is_served_through_ros_and_acts(stages, dexstack_home):
    """The stage-3 export (self-verification on) published to a store and served by the policy node
    in the lockstep sim graph: the episode runs to its end on the policy's chunks, and the node
    reports inference on every observation (no holds)."""
    from dexstack.cli.evaluate import private_domain_id
    from dexstack.ros_nodes.eval_client import evaluate_through_ros
    from dexstack.store import PolicyStore

    root, _ = stages
    PolicyStore().publish(root / "export", "tiny_ptp")
    res = evaluate_through_ros(
        "tiny_ptp",
        "pick_lift",
        [(None, {})],
        1,
        7,
        pacing="lockstep",
        domain_id=private_domain_id(),
        extra_env={"DEXSTACK_HOME": dexstack_home, "DEXSTACK_BUNDLED_STORE": ""},
        log_dir=str(root / "logs"),
        timeout_s=120,
    )
    assert len(res.outcomes) == 1 and res.outcomes[0].sim_s > 5.0
    diag = res.policy_diagnostics
    assert diag["policy"] == "tiny_ptp" and diag["family"] == "diffusion"
    assert int(diag["chunks"]) > 50 and int(diag["hold_count"]) == 0
    assert float(diag["inference_ms_p50"]) > 0


SHIPPED_PTP = "ptp_cover_pick"


@pytest.mark.ros
def test_shipped_ptp_policy_is_served_through_ros_with_self_verification():
    """The PTP policy shipped in policy_store/ (bundled store) verifies against the Panda profile,
    asks for self-verification, and runs a cover_pick episode through the lockstep ROS graph with
    every observation answered."""
    import subprocess
    import sys

    from dexstack.launcher import node_environment
    from dexstack.store import PolicyStore

    loaded = PolicyStore().verify(SHIPPED_PTP, PANDA, deep=True)
    runtime = loaded.manifest["runtime"]
    assert loaded.manifest["family"] == "diffusion" and runtime["n_obs_steps"] == 16
    assert runtime["past_tokens_in_loss"] == 15 and runtime["self_verification"]["num_candidates"] >= 2
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dexstack.cli",
            "eval",
            "--policy",
            SHIPPED_PTP,
            "--task",
            "cover_pick",
            "--episodes",
            "1",
            "--through-ros",
            "--seed",
            "3",
        ],
        env=node_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 1 and summary["mode"] == "ros_lockstep" and summary["holds"] == 0
    assert summary["inference_ms_p50"] > 0


def test_experiment_overrides_parse_config_fields_and_refuse_typos():
    from dexstack.policies.diffusion.ptp_experiment import parse_overrides

    assert parse_overrides(["epochs=40", "conv_channels=[16,32,32]", "aux_regression_weight=1.0"]) == {
        "epochs": 40,
        "conv_channels": [16, 32, 32],
        "aux_regression_weight": 1.0,
    }
    with pytest.raises(ValueError, match="key one of"):
        parse_overrides(["epoch=40"])
    with pytest.raises(ValueError, match="key one of"):
        parse_overrides(["epochs"])
    with pytest.raises(ValueError, match="must be JSON"):
        parse_overrides(["conv_channels=(16,32)"])


def test_experiment_refuses_to_resume_a_run_trained_to_another_recipe(stages, tmp_path):
    """`ptp_experiment run` skips finished runs and resumes stopped ones; a run dir trained with
    other settings is refused, so one root never mixes recipes in its table."""
    import shutil

    from dexstack.policies.diffusion.ptp_experiment import _train

    root, _ = stages
    shutil.copytree(root / "encoder", tmp_path / "encoder")
    before = (tmp_path / "encoder" / "history.json").read_text()
    _train(root / "data", tmp_path / "encoder", STAGE1)  # same recipe, finished: nothing to do
    assert (tmp_path / "encoder" / "history.json").read_text() == before
    with pytest.raises(ValueError, match=r"another recipe \(conv_channels: \[8, 16\] there, \[8, 8\] asked\)"):
        _train(root / "data", tmp_path / "encoder", {**STAGE1, "conv_channels": [8, 8]})
    assert (tmp_path / "encoder" / "history.json").read_text() == before
