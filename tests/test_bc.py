"""BC family end to end on a tiny synthetic dataset: train, resume, export to ONNX, serve with
onnxruntime, publish to the store. Real torch, real onnxruntime, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic import CAMERAS, write_goal_dataset

from dexstack import contract
from dexstack.hardware.profiles import PANDA
from dexstack.runtime import ObservationError, load_runtime

pytest.importorskip("torch")

N_EPISODES, N_FRAMES = 16, 15


def write_dataset(root: Path) -> None:
    write_goal_dataset(root, N_EPISODES, N_FRAMES)


def tiny_config():
    from dexstack.policies.bc.config import BCConfig

    # joint_delta_input exercises the runtime's stateful input path; the CLI test covers the default.
    return BCConfig(
        epochs=3, batch_size=16, lr=3e-3, warmup_steps=5, val_fraction=0.2, torch_threads=1, joint_delta_input=True
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset dir, run dir, export dir, history) after 3 epochs + 2 resumed epochs."""
    from dexstack.policies.bc.export import export
    from dexstack.policies.bc.train import train

    root = tmp_path_factory.mktemp("bc")
    write_dataset(root / "data")
    train(root / "data", root / "run", tiny_config(), progress=False)
    history = train(root / "data", root / "run", resume=True, epochs=5, progress=False)
    export(root / "run", root / "export")
    return root / "data", root / "run", root / "export", history


def observation_from(data_dir: Path, episode: int, frame: int) -> dict[str, np.ndarray]:
    from dexstack.dataset import Dataset

    ep = Dataset(data_dir).episode(episode)
    obs = {contract.JOINT_POSITIONS: ep[contract.JOINT_POSITIONS][frame].astype(np.float64)}
    obs.update({contract.rgb_key(c): ep[contract.rgb_key(c)][frame] for c in CAMERAS})
    return obs


def test_training_lowers_loss_and_resume_continues(trained):
    _, run, _, history = trained
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4, 5]  # 3 epochs, then resumed to 5
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "history.json").read_text())[-1]["epoch"] == 5
    assert json.loads((run / "run.json").read_text())["family"] == "bc"


def test_refuses_to_overwrite_a_run_and_bad_dataset(trained, tmp_path):
    from dexstack.dataset import DatasetError
    from dexstack.policies.bc.train import train

    data, run, _, _ = trained
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train(data, run, tiny_config(), progress=False)
    assert (run / "checkpoint.pt").read_bytes() == before  # nothing lost
    with pytest.raises(DatasetError, match="not a dataset"):
        train(tmp_path, tmp_path / "run", tiny_config(), progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        train(data, tmp_path / "fresh", resume=True, progress=False)


def test_onnx_matches_torch(trained):
    import onnxruntime as ort
    import torch

    from dexstack.policies.bc.export import OUTPUT_NAME, sample_inputs
    from dexstack.policies.bc.model import NormalizationStats, input_names
    from dexstack.policies.bc.train import load_trained

    _, run, export_dir, _ = trained
    model, _, _, _ = load_trained(run)
    stats = NormalizationStats.from_dict(json.loads((run / "stats.json").read_text()))
    session = ort.InferenceSession(str(export_dir / "policy.onnx"), providers=["CPUExecutionProvider"])
    inputs = sample_inputs(model, stats, batch=3, seed=123)
    with torch.no_grad():
        expected = model(*inputs).numpy()
    (got,) = session.run(
        [OUTPUT_NAME],
        dict(zip(input_names(model.cameras, model.uses_joint_delta), [t.numpy() for t in inputs], strict=True)),
    )
    assert got.shape == (3, 8, 8)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.abs(expected).max() > 1e-2  # a trained network, not an all-zero output


def ensemble_reference(chunks: list[np.ndarray], decay: float) -> np.ndarray:
    """ACT temporal ensembling written out: point i of the newest call is the weighted mean of every
    chunk predicting that time step; a chunk from `age` calls ago weighs exp(decay * age)."""
    k, h = len(chunks) - 1, len(chunks[-1])
    out = np.empty_like(chunks[-1])
    for i in range(h):
        preds = [(chunks[j][k - j + i], np.exp(decay * (k - j))) for j in range(k + 1) if k - j + i < h]
        out[i] = sum(w * p for p, w in preds) / sum(w for _, w in preds)
    return out


def test_runtime_act_equals_torch_prediction(trained):
    from dexstack.policies.bc.model import predict_chunk
    from dexstack.policies.bc.runtime import Runtime
    from dexstack.policies.bc.train import load_trained

    data, run, export_dir, _ = trained
    manifest = json.loads((export_dir / "manifest.json").read_text())
    runtime = Runtime(export_dir, manifest)
    model, normalizer, _, _ = load_trained(run)
    assert model.uses_joint_delta and manifest["runtime"]["joint_delta"]["graph_input"] in [
        i.name for i in runtime._session.get_inputs()
    ]
    decay = manifest["runtime"]["temporal_ensemble"]["decay"]
    for episode in (3, 15):
        runtime.reset()
        previous, raw = None, []
        for frame in range(12):  # one call per policy step: the runtime tracks delta and past chunks itself
            obs = observation_from(data, episode, frame)
            chunk = runtime.act(obs)
            assert chunk.shape == (8, 8) and chunk.dtype == np.float64
            raw.append(predict_chunk(model, normalizer, obs, previous))
            np.testing.assert_allclose(chunk, ensemble_reference(raw, decay), atol=1e-4, rtol=0)
            # Absolute targets: near the current joint positions, not offsets around zero.
            assert np.abs(chunk[0] - obs[contract.JOINT_POSITIONS]).max() < 0.5
            previous = obs[contract.JOINT_POSITIONS]
        assert np.abs(chunk - raw[-1]).max() > 1e-4  # the ensemble really mixes in past chunks
    # The joint delta matters: the same observation without history gives another chunk.
    assert np.abs(predict_chunk(model, normalizer, obs) - raw[-1]).max() > 1e-4
    runtime.reset()  # a new episode: no history, no past chunks -> exactly the network's chunk
    np.testing.assert_allclose(runtime.act(obs), predict_chunk(model, normalizer, obs), atol=1e-4, rtol=0)
    assert manifest["outputs"]["joint_names"] == list(PANDA.joint_names)
    assert manifest["outputs"]["dt"] == pytest.approx(0.1)


def test_runtime_rejects_bad_observations(trained):
    from dexstack.policies.bc.runtime import Runtime

    data, _, export_dir, _ = trained
    runtime = Runtime(export_dir, json.loads((export_dir / "manifest.json").read_text()))
    good = observation_from(data, 1, 4)
    reference = runtime.act(good)

    nan_q = dict(good, **{contract.JOINT_POSITIONS: good[contract.JOINT_POSITIONS].copy()})
    nan_q[contract.JOINT_POSITIONS][2] = np.nan
    with pytest.raises(ObservationError, match="NaN"):
        runtime.act(nan_q)
    with pytest.raises(ObservationError, match=r"scene_rgb: shape \(64, 64, 3\)"):
        runtime.act(dict(good, scene_rgb=np.zeros((64, 64, 3), np.uint8)))
    missing = {k: v for k, v in good.items() if k != "wrist_rgb"}
    with pytest.raises(ObservationError, match="lacks 'wrist_rgb'"):
        runtime.act(missing)
    with pytest.raises(ObservationError, match="expected uint8"):
        runtime.act(dict(good, wrist_rgb=good["wrist_rgb"].astype(np.float32) / 255))
    # Rejected calls left no state behind: the next good call equals that of a runtime that never
    # saw them.
    untouched = Runtime(export_dir, json.loads((export_dir / "manifest.json").read_text()))
    np.testing.assert_array_equal(untouched.act(good), reference)
    np.testing.assert_array_equal(runtime.act(good), untouched.act(good))


def test_runtime_does_not_import_torch(trained):
    _, _, export_dir, _ = trained
    code = (
        "import json, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from dexstack.policies.bc.runtime import Runtime\n"
        f"d = Path({str(export_dir)!r})\n"
        "rt = Runtime(d, json.loads((d / 'manifest.json').read_text()))\n"
        "obs = {'joint_positions': np.zeros(8), 'wrist_rgb': np.zeros((96, 96, 3), np.uint8),"
        " 'scene_rgb': np.zeros((96, 96, 3), np.uint8)}\n"
        "print(rt.act(obs).shape, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(8, 8) False"


def test_export_publishes_validates_and_loads(trained, dexstack_home):
    from dexstack.manifest import check_against_profile, validate_manifest
    from dexstack.store import PolicyStore

    data, _, export_dir, _ = trained
    store = PolicyStore(Path(dexstack_home) / "policies", bundled=False)
    store.publish(export_dir, name="bc_test")
    loaded = store.load("bc_test", PANDA)
    validate_manifest(loaded.manifest)
    check_against_profile(loaded.manifest, PANDA)
    prov = loaded.manifest["provenance"]
    assert prov["config"]["chunk_length"] == 8 and len(prov["dataset_hash"]) == 64
    assert [i["source"] for i in loaded.manifest["inputs"]] == [
        contract.JOINT_STATES,
        contract.camera_color_topic("wrist"),
        contract.camera_color_topic("scene"),
    ]
    runtime = load_runtime(loaded.path, loaded.manifest, profile=PANDA)  # what the policy node does
    obs = observation_from(data, 2, 5)
    from dexstack.policies.bc.runtime import Runtime

    direct = Runtime(export_dir, json.loads((export_dir / "manifest.json").read_text()))
    for _ in range(3):
        np.testing.assert_array_equal(runtime.act(obs), direct.act(obs))


def test_cli_export_and_bad_run(trained, tmp_path):
    from typer.testing import CliRunner

    from dexstack.cli import _register, app

    _register()
    _, run, _, _ = trained
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["family"] == "bc" and summary["onnx_max_abs_diff"] <= 1e-4
    assert (tmp_path / "exp" / "policy.onnx").is_file()
    # exporting over a non-empty directory is refused and keeps what was there
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "exp")])
    assert result.exit_code == 1 and "not empty" in result.output
    result = runner.invoke(app, ["export", "--run", str(tmp_path), "--out", str(tmp_path / "exp2")])
    assert result.exit_code == 1 and "not a training run" in result.output
    assert not (tmp_path / "exp2").exists()


def test_cli_train_and_resume_errors(trained, tmp_path):
    from typer.testing import CliRunner

    from dexstack.cli import _register, app

    _register()
    data, _, _, _ = trained
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "bc", "--dataset", str(data), "--out", str(tmp_path / "run"), "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["train_loss"] > 0
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    # The default config (no joint-delta input) exports and serves the same numbers as torch.
    from dexstack.policies.bc.export import export
    from dexstack.policies.bc.model import predict_chunk
    from dexstack.policies.bc.runtime import Runtime
    from dexstack.policies.bc.train import load_trained

    export(tmp_path / "run", tmp_path / "exp")
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert "joint_delta" not in manifest["runtime"]
    model, normalizer, _, _ = load_trained(tmp_path / "run")
    obs = observation_from(data, 4, 3)
    np.testing.assert_allclose(
        Runtime(tmp_path / "exp", manifest).act(obs), predict_chunk(model, normalizer, obs), atol=1e-4, rtol=0
    )
    result = runner.invoke(app, ["train", "bc", "--dataset", str(data), "--out", str(tmp_path / "none"), "--resume"])
    assert result.exit_code == 1 and "no checkpoint.pt" in result.output
    result = runner.invoke(app, ["train", "bc", "--dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 1 and "not a dataset" in result.output
