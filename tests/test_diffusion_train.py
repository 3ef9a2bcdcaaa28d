"""Diffusion trainer end to end on a tiny synthetic dataset: window indexing, PTP's past-token loss
setting, training through the CLI + resume, export, the onnxruntime runtime against the torch
model, publishing to the store. Real torch, real onnxruntime, real files; tiny networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic import CAMERAS, write_goal_dataset

from dexstack import contract
from dexstack.hardware.profiles import PANDA
from dexstack.runtime import load_runtime

torch = pytest.importorskip("torch")

N_EPISODES, N_FRAMES = 8, 12
TINY = dict(
    conv_channels=[8, 16],
    num_keypoints=8,
    down_dims=[32, 64],
    horizon=8,
    n_obs_steps=3,
    n_action_steps=4,
    step_embed_dim=32,
    batch_size=8,
    lr=3e-3,
    warmup_steps=5,
    val_fraction=0.25,
    torch_threads=1,
    ema_decay=0.9,
)


def write_dataset(root: Path) -> None:
    write_goal_dataset(root, N_EPISODES, N_FRAMES)


def tiny_config(**overrides):
    from dexstack.policies.diffusion.config import DiffusionConfig

    return DiffusionConfig.from_dict({**DiffusionConfig().to_dict(), **TINY, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset dir, run dir, export dir, history): 18 epochs through the CLI (PTP with 1 past token),
    resumed in-process to 21, exported."""
    from typer.testing import CliRunner

    from dexstack.cli import _register, app
    from dexstack.policies.diffusion.export import export_run
    from dexstack.policies.diffusion.train import train

    root = tmp_path_factory.mktemp("difftrain")
    write_dataset(root / "data")
    (root / "tiny.json").write_text(json.dumps(TINY))
    _register()
    result = CliRunner().invoke(
        app,
        [
            "train",
            "diffusion",
            "--dataset",
            str(root / "data"),
            "--out",
            str(root / "run"),
            "--epochs",
            "18",
            "--past-tokens",
            "1",
            "--config",
            str(root / "tiny.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["epochs"] == 18
    history = train(root / "data", root / "run", resume=True, epochs=21, progress=False)
    export_run(root / "run", root / "export")
    return root / "data", root / "run", root / "export", history


def test_windows_start_at_k_minus_to_plus_one_and_clamp_at_episode_edges():
    from dexstack.policies.diffusion.history import window_indices

    obs, act = window_indices(length=5, n_obs_steps=3, horizon=6)
    assert obs.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert act[0].tolist() == [0, 0, 0, 1, 2, 3]  # action k sits at token To-1 = 2
    assert act[2].tolist() == [0, 1, 2, 3, 4, 4]
    assert act[4].tolist() == [2, 3, 4, 4, 4, 4]  # the robot holds its last target


def _loss_with_past_changed(data: Path, past_tokens: int, change_token: int | None, sampler: str = "ddim") -> float:
    """The masked loss of one fixed batch (fixed weights, noise and timesteps); with `change_token`
    set, that past action token of every window is replaced by a far-off target first."""
    from dexstack.dataset import Dataset
    from dexstack.policies.diffusion.model import DiffusionPolicy
    from dexstack.policies.diffusion.train import compute_stats, load_windows, make_batch

    config = tiny_config(past_tokens_in_loss=past_tokens, sampler=sampler)
    cache = load_windows(Dataset(data), config)
    frames = np.arange(3, 3 + 6)  # windows whose past tokens are real, distinct actions
    torch.manual_seed(0)
    model = DiffusionPolicy(config, 8, {c: (96, 96) for c in CAMERAS}, compute_stats(cache, frames, config))
    batch = make_batch(cache, frames, CAMERAS, torch.device("cpu"))
    if change_token is not None:
        batch.actions[:, change_token] += 0.7
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(batch.actions.shape, generator=gen)
    timesteps = (
        torch.randint(0, config.num_train_timesteps, (len(frames),), generator=gen)
        if sampler == "ddim"
        else torch.randn(len(frames), generator=gen).exp()
    )  # EDM: sigma
    with torch.no_grad():
        return float(model(batch, noise=noise, timesteps=timesteps))


def test_past_token_loss_setting(trained):
    from dexstack.policies.diffusion.history import first_counted_token, loss_mask

    data = trained[0]
    assert loss_mask(8, first_counted_token(3, past_tokens_in_loss=0)).tolist() == [False, False] + [True] * 6
    assert loss_mask(8, first_counted_token(3, past_tokens_in_loss=1)).tolist() == [False] + [True] * 7
    # Tokens 0 and 1 are the To-1 = 2 past actions. Off: the loss ignores both.
    for past_tokens, token, depends in ((0, 0, False), (0, 1, False), (1, 0, False), (1, 1, True), (2, 0, True)):
        base = _loss_with_past_changed(data, past_tokens, None)
        changed = _loss_with_past_changed(data, past_tokens, token)
        assert (changed != base) == depends, (past_tokens, token, base, changed)
    # The same for the EDM loss.
    assert _loss_with_past_changed(data, 0, 1, "edm") == _loss_with_past_changed(data, 0, None, "edm")
    assert _loss_with_past_changed(data, 1, 1, "edm") != _loss_with_past_changed(data, 1, None, "edm")
    # The current action (token To-1) always counts.
    assert _loss_with_past_changed(data, 0, 2) != _loss_with_past_changed(data, 0, None)
    with pytest.raises(ValueError, match="past_tokens_in_loss=3 must be in 0..n_obs_steps - 1 = 2"):
        tiny_config(past_tokens_in_loss=3)


def test_aux_regression_trains_the_encoder_outside_validation_and_export(trained, tmp_path):
    """Stage-1 recipe: the auxiliary L1 on the future actions relative to the current joints adds to
    the training loss only, reaches the encoder, falls with training, and is not exported."""
    from dexstack.dataset import Dataset
    from dexstack.policies.diffusion.export import export_run
    from dexstack.policies.diffusion.model import DiffusionPolicy, load_trained
    from dexstack.policies.diffusion.train import compute_stats, load_windows, make_batch, relative_chunk_std, train

    data = trained[0]
    config = tiny_config(aux_regression_weight=0.5, n_obs_steps=1, epochs=8)
    cache = load_windows(Dataset(data), config)
    frames = np.arange(len(cache.actions))
    torch.manual_seed(0)
    model = DiffusionPolicy(config, 8, {c: (96, 96) for c in CAMERAS}, compute_stats(cache, frames, config))
    model.aux_delta_std.copy_(torch.from_numpy(relative_chunk_std(cache, frames, config)))
    batch = make_batch(cache, frames[:16], CAMERAS, torch.device("cpu"))
    noise = torch.randn(batch.actions.shape, generator=torch.Generator().manual_seed(1))
    timesteps = torch.full((16,), 40)
    model.eval()
    denoising = model(batch, noise=noise, timesteps=timesteps)
    model.train()
    total = model(batch, noise=noise, timesteps=timesteps)
    cond = model.condition(batch.joint_positions, batch.images)
    aux = model.aux_regression_loss(cond, batch)
    assert total.detach().item() == pytest.approx(denoising.detach().item() + 0.5 * aux.detach().item(), rel=1e-5)
    aux.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    # The target is the whole horizon from the current action (To=1: all 8 tokens) minus the current
    # joints, per step and joint in units of its std; the head's error against it is the loss.
    with torch.no_grad():
        target = (batch.actions[:, 0:8] - batch.joint_positions[:, -1:]) / model.aux_delta_std
    head_error = (model.aux_head(cond).reshape(target.shape) - target).abs().mean()
    assert head_error.detach().item() == pytest.approx(aux.detach().item())

    train(data, tmp_path / "run", config, progress=False)
    trained_model, _, _ = load_trained(tmp_path / "run")
    trained_model.aux_delta_std.copy_(model.aux_delta_std)
    with torch.no_grad():
        after = trained_model.aux_regression_loss(trained_model.condition(batch.joint_positions, batch.images), batch)
    assert after.item() < 0.7 * aux.detach().item(), (aux.detach().item(), after.item())
    export_run(tmp_path / "run", tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").glob("*.onnx")) == sorted(
        p.name for p in trained[2].glob("*.onnx")
    )
    with pytest.raises(ValueError, match="aux_regression_weight must be a finite number"):
        tiny_config(aux_regression_weight=-1.0)
    with pytest.raises(ValueError, match="aux_regression_weight must be a finite number"):
        tiny_config(aux_regression_weight=float("nan"))


def test_training_lowers_loss_and_resume_continues(trained):
    _, run, _, history = trained
    assert [h["epoch"] for h in history] == list(range(22))
    assert history[-1]["val_loss"] < 0.85 * history[0]["val_loss"], history
    assert history[-1]["train_loss"] < history[0]["train_loss"], history
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "history.json").read_text())[-1]["epoch"] == 21
    assert json.loads((run / "run.json").read_text())["family"] == "diffusion"
    assert json.loads((run / "config.json").read_text())["past_tokens_in_loss"] == 1


def test_refuses_to_overwrite_a_run_and_bad_input(trained, tmp_path):
    from typer.testing import CliRunner

    from dexstack.cli import _register, app
    from dexstack.dataset import DatasetError
    from dexstack.policies.diffusion.train import train

    data, run, _, _ = trained
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train(data, run, tiny_config(), progress=False)
    assert (run / "checkpoint.pt").read_bytes() == before  # nothing lost
    with pytest.raises(DatasetError, match="not a dataset"):
        train(tmp_path, tmp_path / "run", tiny_config(), progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        train(data, tmp_path / "fresh", resume=True, progress=False)
    _register()
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "diffusion", "--dataset", str(data), "--out", str(tmp_path / "r"), "--past-tokens", "2"]
    )  # default To = 2 has one past token
    assert result.exit_code == 1 and "past_tokens_in_loss=2 must be in 0..n_obs_steps - 1 = 1" in result.output
    assert not (tmp_path / "r").exists()
    result = runner.invoke(
        app, ["train", "diffusion", "--dataset", str(data), "--out", str(run), "--resume", "--seed", "3"]
    )
    assert result.exit_code == 1 and "cannot change when resuming" in result.output


def _torch_chunk(model, config, data: Path, episode: int, frame: int, noise: np.ndarray) -> np.ndarray:
    """Torch reference of the runtime's act() at `frame` of an episode: the same observation window,
    DDIM loop and initial noise."""
    from dexstack.dataset import Dataset
    from dexstack.policies.diffusion import schedulers
    from dexstack.policies.diffusion.history import window_indices
    from dexstack.policies.diffusion.model import torch_step_fn

    ep = Dataset(data).episode(episode)
    obs_rows, _ = window_indices(len(ep["action"]), config.n_obs_steps, config.horizon)
    rows = obs_rows[frame]
    q = torch.as_tensor(ep[contract.JOINT_POSITIONS][rows])[None]
    images = [torch.as_tensor(ep[contract.rgb_key(c)][rows])[None] for c in CAMERAS]
    with torch.no_grad():
        cond = model.condition(q, images).numpy()
    alpha_bar = schedulers.alphas_cumprod(config.num_train_timesteps)
    x = schedulers.ddim_sample(
        torch_step_fn(model.denoiser, cond, model.first_counted), noise, alpha_bar, config.ddim_steps
    )
    actions = x[0].astype(np.float64) * model.action_std.numpy() + model.action_mean.numpy()
    return actions[config.n_obs_steps - 1 : config.n_obs_steps - 1 + config.n_action_steps]


def _observation(data: Path, episode: int, frame: int) -> dict[str, np.ndarray]:
    from dexstack.dataset import Dataset

    ep = Dataset(data).episode(episode)
    obs = {contract.JOINT_POSITIONS: ep[contract.JOINT_POSITIONS][frame].astype(np.float64)}
    obs.update({contract.rgb_key(c): ep[contract.rgb_key(c)][frame] for c in CAMERAS})
    return obs


def test_exported_runtime_acts_like_the_trained_model(trained):
    from dexstack.policies.diffusion.model import load_trained

    data, run, export_dir, _ = trained
    manifest = json.loads((export_dir / "manifest.json").read_text())
    model, config, _ = load_trained(run)
    runtime = load_runtime(export_dir, manifest, profile=PANDA)
    runtime.reset()
    noise_rng = np.random.default_rng(0)  # the runtime's sampler draws its initial noise from this stream
    for frame in range(5):  # the runtime's own feature history must equal the trainer's window (k-To+1 .. k)
        noise = noise_rng.standard_normal((1, config.horizon, 8)).astype(np.float32)
        chunk = runtime.act(_observation(data, 1, frame))
        assert chunk.shape == (4, 8) and chunk.dtype == np.float64 and np.all(np.isfinite(chunk))
        # The reference un-normalises with the run's stats: absolute joint targets (rad / m), not z-scores.
        np.testing.assert_allclose(chunk, _torch_chunk(model, config, data, 1, frame, noise), atol=2e-3, rtol=0)
    assert manifest["runtime"]["past_tokens_in_loss"] == 1 and manifest["runtime"]["n_obs_steps"] == 3


def test_publish_validates_and_loads_against_panda(trained, dexstack_home):
    from dexstack.manifest import check_against_profile, validate_manifest
    from dexstack.store import PolicyStore

    data, run, export_dir, _ = trained
    store = PolicyStore(Path(dexstack_home) / "policies", bundled=False)
    store.publish(export_dir, name="diffusion_test")
    loaded = store.load("diffusion_test", PANDA)
    validate_manifest(loaded.manifest)
    check_against_profile(loaded.manifest, PANDA)
    prov = loaded.manifest["provenance"]
    run_info = json.loads((run / "run.json").read_text())
    assert prov["dataset_hash"] == run_info["dataset_hash"] and prov["epochs_trained"] == 21
    assert prov["config"]["past_tokens_in_loss"] == 1
    runtime = load_runtime(loaded.path, loaded.manifest, profile=PANDA)
    chunk = runtime.act(_observation(data, 2, 4))
    assert chunk.shape == (4, 8) and np.all(np.isfinite(chunk))


def test_cli_export_and_refusals(trained, tmp_path):
    from typer.testing import CliRunner

    from dexstack.cli import _register, app

    _register()
    _, run, _, _ = trained
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["family"] == "diffusion" and summary["graphs"] == {
        "encoder": "encoder.onnx",
        "denoiser": "denoiser.onnx",
    }
    assert max(summary["onnx_max_abs_diff"].values()) <= 1e-4
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "exp")])
    assert result.exit_code == 1 and "not empty" in result.output
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["denoiser.onnx", "encoder.onnx", "manifest.json"]
