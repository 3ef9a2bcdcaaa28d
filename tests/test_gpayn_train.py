"""G-PAYN trainer and evaluation: demo prefill before the first update (and none with --demos 0),
a tiny vision run's files, bit-exact resume, evaluation of the scripted controller and of a
do-nothing policy, export of a run agreeing with torch, the CLIs. Real MuJoCo, torch, onnxruntime,
files; small networks and budgets, one torch thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dexstack.policies.gpayn.demos import ScriptedGraspDemo
from dexstack.policies.gpayn.env import ACTION_DIM, ARM_DIM, GraspEnv
from dexstack.policies.gpayn.evaluate import evaluate_policy, evaluate_scripted, load_policy
from dexstack.policies.gpayn.export import export_run
from dexstack.policies.gpayn.replay import ReplayBuffer
from dexstack.policies.gpayn.runtime import Runtime
from dexstack.policies.gpayn.sac import SACConfig
from dexstack.policies.gpayn.train import GPAYNConfig, main, train

MEAT = "potted_meat_can"


def state_config(**overrides) -> GPAYNConfig:
    """No camera (oracle grasp pose, no encoder), small networks: seconds per run."""
    fields = dict(
        objects=(MEAT,),
        n_envs=2,
        total_steps=40,
        demo_episodes=2,
        random_steps=20,
        batch_size=16,
        eval_interval=1000,
        eval_episodes=1,
        checkpoint_interval=1000,
        render=False,
        max_episode_steps=40,
        sac=SACConfig(hidden=(32, 32)),
    )
    return GPAYNConfig(**{**fields, **overrides})


def read(run: Path, name: str):
    return json.loads((run / name).read_text())


# --- prefill ---------------------------------------------------------------------------------------


def test_demos_are_in_the_buffer_before_the_first_update_and_none_without(tmp_path):
    demo_run, scratch_run = tmp_path / "demos", tmp_path / "scratch"
    train(demo_run, state_config(), progress=False)
    train(scratch_run, state_config(demo_episodes=0), progress=False)

    demos = read(demo_run, "run.json")["demos"]
    first = read(demo_run, "progress.json")["first_update"]
    assert demos["episodes"] == 2 and demos["transitions"] >= 16 and demos["successes"] == 2
    # The first update came after one vector step (2 envs) on top of every demo transition.
    assert first == {"step": 2, "buffer_size": demos["transitions"] + 2, "demo_transitions": demos["transitions"]}
    buffer = ReplayBuffer.load(next(demo_run.glob("replay-*.npz")))
    assert len(buffer) == demos["transitions"] + 40
    # The oldest transitions are the scripted ones: its closing steps command exactly 1 on every
    # finger and nothing on the arm, which no stochastic SAC action does.
    closing = (buffer.action[:, ARM_DIM:] == 1.0).all(1) & (buffer.action[:, :ARM_DIM] == 0.0).all(1)
    assert closing[: demos["transitions"]].sum() >= 2 * 8 and not closing[demos["transitions"] :].any()

    scratch_demos = read(scratch_run, "run.json")["demos"]
    scratch_first = read(scratch_run, "progress.json")["first_update"]
    assert scratch_demos["transitions"] == 0
    # Random actions for random_steps = 20 env steps, then the first update on those 20 alone.
    assert scratch_first == {"step": 20, "buffer_size": 20, "demo_transitions": 0}
    assert len(ReplayBuffer.load(next(scratch_run.glob("replay-*.npz")))) == 40


# --- resume ----------------------------------------------------------------------------------------


def _assert_same(a, b, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def test_resume_continues_exactly_where_the_uninterrupted_run_goes(tmp_path):
    config = state_config(
        objects=(MEAT, "sugar_box"),
        total_steps=120,
        demo_episodes=1,
        checkpoint_interval=60,
        eval_interval=60,
        normalizer_steps=90,
    )
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(whole, config, progress=False)
    train(split, config, total_steps=60, progress=False)
    saved = torch.load(split / "checkpoint.pt", weights_only=False)
    assert saved["trainer"]["step"] == 60 and saved["buffer_size"] == len(
        ReplayBuffer.load(split / saved["replay_file"])
    )
    with pytest.raises(FileExistsError, match="--resume"):
        train(split, config, progress=False)
    with pytest.raises(ValueError, match="keeps its own config"):
        train(split, config, resume=True, progress=False)
    history = train(split, resume=True, total_steps=120, progress=False)

    a = torch.load(whole / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    assert a["buffer_size"] == b["buffer_size"] == read(whole, "run.json")["demos"]["transitions"] + 120
    assert a["sac"]["updates"] == b["sac"]["updates"] > 100
    _assert_same(a["sac"], b["sac"])  # networks, targets, optimisers, alpha, normaliser, generator
    _assert_same(a["trainer"]["episodes"], b["trainer"]["episodes"])
    np.testing.assert_array_equal(
        ReplayBuffer.load(whole / a["replay_file"]).action, ReplayBuffer.load(split / b["replay_file"]).action
    )
    assert [h["step"] for h in history] == [0, 60, 120]
    assert [h["success_rate"] for h in history] == [h["success_rate"] for h in read(whole, "history.json")]
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        train(tmp_path / "nothing", resume=True, progress=False)


# --- a tiny vision run, export -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def vision_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("gpayn") / "run"
    config = GPAYNConfig(
        objects=(MEAT,),
        n_envs=1,
        total_steps=40,
        demo_episodes=1,
        batch_size=16,
        eval_interval=20,
        eval_episodes=1,
        checkpoint_interval=20,
        image_size=(32, 32),
        pretrain_objects=(MEAT, "sugar_box"),
        pretrain_frames=80,
        pretrain_epochs=1,
        feature_dim=16,
        sac=SACConfig(hidden=(32, 32)),
    )
    history = train(run, config, progress=False)
    return run, history


def test_a_tiny_vision_run_writes_encoder_checkpoint_history_and_curve(vision_run):
    run, history = vision_run
    for name in ("encoder.pt", "frames.npz", "checkpoint.pt", "history.json", "learning_curve.png", "config.json"):
        assert (run / name).is_file(), name
    assert (run / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [h["step"] for h in read(run, "history.json")] == [0, 20, 40] == [h["step"] for h in history]
    assert set(history[-1]["objects"]) == {MEAT} and 0.0 <= history[-1]["success_rate"] <= 1.0
    with np.load(run / "frames.npz") as frames:
        images, masks = frames["images"], frames["masks"]
    assert images.shape == (80, 32, 32, 3) and masks.shape == (80, 32, 32)
    coverage = masks.mean(axis=(1, 2))
    assert (coverage > 0).mean() > 0.9 and coverage.max() < 0.3  # the object is in view and is not the scene
    # The object's pixels have the object's colour, not the table's: the mask is aligned with the image.
    assert np.abs(images[masks].mean(0) - images[~masks].mean(0)).max() > 20
    # Frames come from the pretraining objects, not only the one the policy trains on: episodes
    # alternate between the blue meat can and the yellow sugar box, the can first.
    colours = np.array([images[i][masks[i]].mean(0) for i in range(len(images)) if masks[i].any()])
    blue, yellow = colours[:, 2] > colours[:, 0] + 20, colours[:, 0] > colours[:, 2] + 20
    assert blue[:10].all() and yellow.sum() >= 2 and (blue | yellow).all()
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    assert checkpoint["sac"]["spec"]["visual"] == 16 and len(list(run.glob("replay-*.npz"))) == 1


def test_export_run_gives_an_onnx_actor_that_agrees_with_torch_on_env_observations(vision_run, tmp_path):
    run, _ = vision_run
    out = export_run(run, tmp_path / "export")
    manifest = json.loads((out / "manifest.json").read_text())
    assert max(manifest["provenance"]["onnx_max_abs_diff"].values()) <= 1e-5
    action = manifest["runtime"]["action"]
    assert action["scales"][:3] == [0.01] * 3 and action["dt"] == pytest.approx(0.1)
    # Ready to serve: every actor observation key says what it reads from the robot's raw inputs.
    assert all("read" in spec for spec in manifest["runtime"]["observation"])
    runtime, (policy, _) = Runtime(out, manifest), load_policy(run)
    env = GraspEnv(MEAT, seed=4, render=True, image_size=(32, 32))
    try:
        obs, info = env.reset(seed=4)
        scripted = ScriptedGraspDemo()
        scripted.reset(info)
        for _ in range(12):  # approach and closing: images with the hand moving, touch forces rising
            served, reference = runtime.act(obs), policy.act(obs)
            assert served.shape == (ACTION_DIM,)
            np.testing.assert_allclose(served, reference, atol=1e-5)
            obs, *_ = env.step(scripted.act())
    finally:
        env.close()
    with pytest.raises(FileExistsError, match="not empty"):
        export_run(run, out)


# --- evaluation ------------------------------------------------------------------------------------


class HoldStill:
    def act(self, observation):
        return np.zeros(ACTION_DIM)


def test_evaluate_scripted_lifts_the_meat_can_and_a_still_hand_never_does():
    scripted = evaluate_scripted((MEAT,), 3, seed=10, image_size=(32, 32))
    assert scripted[MEAT]["episodes"] == 3 and scripted[MEAT]["success_rate"] == 1.0
    # approach 5 cm at 1 cm/step, close 8 steps, hold 2, lift 10 cm: ~2.5-3 s at 10 Hz
    assert 2.0 <= scripted[MEAT]["mean_time_to_lift_s"] <= 4.0
    still = evaluate_policy(HoldStill(), (MEAT,), 2, seed=10, render=False, max_episode_steps=15)
    assert still[MEAT] == {
        "success_rate": 0.0,
        "mean_time_to_lift_s": None,
        "mean_return": pytest.approx(-1.0, abs=0.05),
        "mean_steps": 15.0,
        "episodes": 2,
    }
    with pytest.raises(TypeError, match="act"):
        evaluate_policy(object(), (MEAT,), 1)
    with pytest.raises(ValueError, match="episodes_per_object"):
        evaluate_policy(HoldStill(), (MEAT,), 0)
    with pytest.raises(ValueError, match="sequence of object names"):
        evaluate_policy(HoldStill(), MEAT, 1)


# --- config and CLIs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"objects": ("teapot",)}, ValueError),
        ({"objects": "sugar_box"}, ValueError),
        ({"total_steps": 0}, ValueError),
        ({"pretrain_objects": ()}, ValueError),
        ({"pretrain_objects": ("teapot",)}, ValueError),
        ({"utd_ratio": 0.0}, ValueError),
        ({"image_size": (40, 40)}, ValueError),
        ({"n_envs": 1.5}, TypeError),
        ({"device": "tpu"}, ValueError),
        ({"sac": "big"}, TypeError),
        ({"n_envs": 2}, ValueError),  # 5 objects, 2 envs: three objects would never be trained on
        ({"demo_batch_fraction": 1.0}, ValueError),
    ],
)
def test_bad_configs_are_refused(bad, error):
    with pytest.raises(error):
        GPAYNConfig(**bad)
    with pytest.raises(ValueError, match="unknown GPAYNConfig field"):
        GPAYNConfig.from_dict({"epochs": 3})


def test_cli_trains_refuses_changes_on_resume_and_evaluate_prints_json(tmp_path, capsys):
    config_file = tmp_path / "config.json"
    fields = state_config().to_dict() | {"total_steps": 20}
    config_file.write_text(json.dumps(fields))
    run = tmp_path / "run"
    assert main(["--out", str(run), "--demos", "0", "--config", str(config_file), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 20 and read(run, "config.json")["demo_episodes"] == 0
    assert main(["--out", str(run), "--resume", "--seed", "3"]) == 1
    assert "only --steps" in capsys.readouterr().err

    env = dict(os.environ, MUJOCO_GL="egl")
    done = subprocess.run(
        [sys.executable, "-m", "dexstack.policies.gpayn.evaluate", "--run", str(run), "--episodes", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["objects"]) == {MEAT} and result["objects"][MEAT]["episodes"] == 1
