"""PTP pieces: cached embeddings of a frozen encoder (multistage training) and test-time
self-verification in the onnxruntime runtime. Real torch, real onnxruntime, real files; one tiny
untrained policy (the behaviour tested does not depend on training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dexstack import contract
from dexstack.hardware.profiles import PANDA
from dexstack.policies.diffusion.verify import SelfVerifier, select_candidate

torch = pytest.importorskip("torch")

JOINTS = list(PANDA.joint_names)
J = len(JOINTS)
IMAGE = (24, 32, 3)
TO, TP, TA, PAST = 3, 8, 4, 2  # past tokens 0..1 both trained: first past index To-1-P = 0
N_CANDIDATES = 4


def _config(**overrides):
    from dexstack.policies.diffusion.config import DiffusionConfig

    base = dict(
        cameras=("wrist",),
        conv_channels=(8, 16),
        num_keypoints=8,
        down_dims=(32, 64),
        horizon=TP,
        n_obs_steps=TO,
        n_action_steps=TA,
        step_embed_dim=32,
        past_tokens_in_loss=PAST,
    )
    return DiffusionConfig(**{**base, **overrides})


def _stats(seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return dict(
        joint_mean=rng.normal(size=J).tolist(),
        joint_std=rng.uniform(0.5, 2.0, J).tolist(),
        action_mean=rng.normal(size=J).tolist(),
        action_std=rng.uniform(0.5, 2.0, J).tolist(),
    )


def _policy(seed: int = 0):
    from dexstack.policies.diffusion.model import DiffusionPolicy

    torch.manual_seed(seed)
    return DiffusionPolicy(_config(), J, {"wrist": IMAGE[:2]}, _stats()).eval()


def _write_dataset(root: Path, seed: int, lengths: tuple[int, ...] = (5, 7, 4)) -> Path:
    from dexstack.dataset import DatasetWriter

    rng = np.random.default_rng(seed)
    features = {
        contract.JOINT_POSITIONS: {"shape": [J], "dtype": "float32"},
        "action": {"shape": [J], "dtype": "float32"},
        contract.rgb_key("wrist"): {"shape": list(IMAGE), "dtype": "uint8"},
    }
    with DatasetWriter(root, fps=10.0, joint_names=JOINTS, features=features) as writer:
        for n in lengths:
            q = rng.normal(size=(n, J)).astype(np.float32)
            writer.add_episode(
                {
                    contract.JOINT_POSITIONS: q,
                    "action": q + 0.1,
                    contract.rgb_key("wrist"): rng.integers(0, 256, (n, *IMAGE), dtype=np.uint8),
                },
                task="synthetic",
                success=True,
                source="synthetic",
            )
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(policy dir, manifest without self-verification, torch policy): the tiny policy as ONNX."""
    from dexstack.policies.diffusion.export import build_manifest, write_policy_dir

    policy = _policy()
    s = {k: np.asarray(v) for k, v in _stats().items()}
    manifest = build_manifest(_config(), JOINTS, {"wrist": list(IMAGE)}, 10.0, **s)
    manifest["runtime"]["past_tokens_in_loss"] = PAST
    out = write_policy_dir(tmp_path_factory.mktemp("ptp") / "policy", policy.encoder, policy.denoiser, manifest)
    return out, json.loads((out / "manifest.json").read_text()), policy


def _observation(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        contract.JOINT_POSITIONS: rng.normal(size=J).astype(np.float32),
        contract.rgb_key("wrist"): rng.integers(0, 256, IMAGE, dtype=np.uint8),
    }


# --- cached embeddings -------------------------------------------------------------------------
def test_cached_embeddings_equal_the_frozen_encoders_online_outputs(tmp_path, exported):
    from dexstack.dataset import Dataset
    from dexstack.policies.diffusion.embeddings import embed_dataset, encoder_hash, load_embeddings
    from dexstack.policies.diffusion.model import IMAGE_SCALE
    from dexstack.policies.diffusion.runtime import Runtime

    policy_dir, manifest, policy = exported
    data = _write_dataset(tmp_path / "data", seed=1)
    policy.train()  # embedding must switch to eval itself, and restore the mode after
    path = embed_dataset(policy, data, tmp_path / "cache" / "emb.npz", batch_size=3)  # batches split episodes
    assert policy.training
    assert sorted(p.name for p in path.parent.iterdir()) == ["emb.npz"]  # no temp file left behind
    cache = load_embeddings(path, data, encoder=policy)
    dataset = Dataset(data)
    assert cache.dataset_hash == dataset.content_hash() and cache.encoder_hash == encoder_hash(policy)
    assert [len(e) for e in cache.episodes] == [5, 7, 4] and cache.feature_dim == J + 2 * 8

    policy.eval()
    s = {k: torch.tensor(v, dtype=torch.float32) for k, v in _stats().items()}
    runtime = Runtime(policy_dir, manifest)
    for pos, cached in enumerate(cache.episodes):
        episode = dataset.episode(pos)
        assert cached.dtype == np.float32
        for k in range(len(cached)):  # the online path: one frame at a time, as at serving
            q = (torch.as_tensor(episode[contract.JOINT_POSITIONS][k]) - s["joint_mean"]) / s["joint_std"]
            img = torch.as_tensor(episode[contract.rgb_key("wrist")][k]).to(torch.float32) * IMAGE_SCALE
            with torch.no_grad():
                online = policy.encoder(q[None], img[None])[0].numpy()
            np.testing.assert_allclose(cached[k], online, atol=1e-6, rtol=0)
        # ...and what the ONNX runtime computes for the same frame (export tolerance).
        obs = {
            contract.JOINT_POSITIONS: episode[contract.JOINT_POSITIONS][2],
            contract.rgb_key("wrist"): episode[contract.rgb_key("wrist")][2],
        }
        np.testing.assert_allclose(runtime.encode(obs), cached[2], atol=1e-4, rtol=0)
    assert np.abs(np.diff(cache.episodes[1], axis=0)).max() > 1e-3  # frames differ: real features


def test_cache_of_other_data_or_another_encoder_is_refused(tmp_path, exported):
    from dexstack.policies.diffusion.embeddings import EmbeddingCacheError, embed_dataset, encoder_hash, load_embeddings

    _, _, policy = exported
    data = _write_dataset(tmp_path / "data", seed=1)
    other = _write_dataset(tmp_path / "other", seed=2)
    path = embed_dataset(policy, data, tmp_path / "emb.npz")
    before = path.read_bytes()
    with pytest.raises(EmbeddingCacheError, match="embedded from other data"):
        load_embeddings(path, other, encoder=policy)
    retrained = _policy(seed=1)  # other weights, same architecture
    with pytest.raises(EmbeddingCacheError, match="embedded by another encoder"):
        load_embeddings(path, data, encoder=retrained)
    with pytest.raises(EmbeddingCacheError, match="another encoder"):
        load_embeddings(path, data, encoder=encoder_hash(retrained))
    with pytest.raises(FileNotFoundError, match="no embedding cache"):
        load_embeddings(tmp_path / "missing.npz", data)
    with pytest.raises(ValueError, match="must end in .npz"):
        embed_dataset(policy, data, tmp_path / "emb.bin")
    assert path.read_bytes() == before  # refusals lose nothing
    assert load_embeddings(path, data, encoder=encoder_hash(policy)).episodes[0].shape == (5, J + 16)


# --- self-verification -------------------------------------------------------------------------
def test_select_candidate_picks_the_candidate_whose_past_matches():
    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(5, TP, 3)).astype(np.float32)
    executed = candidates[3, 1:3] + 0.01  # candidate 3 predicted (almost) what was executed
    index, errors = select_candidate(candidates, executed, first_past_index=1)
    assert index == 3
    expected = [np.mean((candidates[i, 1:3].astype(np.float64) - executed) ** 2) for i in range(5)]
    np.testing.assert_allclose(errors, expected, rtol=1e-12)
    assert errors[3] == pytest.approx(1e-4, rel=1e-3)
    # Only the past tokens count: making a candidate's future perfect does not help it.
    candidates[0, 3:] = 0.0
    assert select_candidate(candidates, executed, 1)[0] == 3
    # A shifted comparison window picks another candidate.
    assert select_candidate(candidates, candidates[2, 4:6], 4)[0] == 2
    with pytest.raises(ValueError, match=r"past tokens \[7, 9\) do not fit in the horizon of 8"):
        select_candidate(candidates, executed, 7)
    with pytest.raises(ValueError, match="executed_past must be"):
        select_candidate(candidates, executed[:, :2], 1)
    with pytest.raises(ValueError, match="finite"):
        select_candidate(candidates, np.full((2, 3), np.nan), 1)


def test_self_verifier_settings_are_checked():
    assert SelfVerifier(True, 0, 2).num_candidates == 8
    assert SelfVerifier({"num_candidates": 3}, 0, 2).num_candidates == 3
    with pytest.raises(ValueError, match="integer >= 2"):
        SelfVerifier(1, 0, 2)
    with pytest.raises(ValueError, match="unknown keys"):
        SelfVerifier({"candidates": 4}, 0, 2)
    with pytest.raises(ValueError, match="past_tokens_in_loss >= 1"):
        SelfVerifier(4, 2, 0)


def test_runtime_self_verification(exported):
    from dexstack.policies.diffusion.runtime import Runtime

    policy_dir, manifest, _ = exported
    plain = Runtime(policy_dir, manifest, seed=0)
    assert plain.verifier is None
    verified_manifest = {
        **manifest,
        "runtime": {**manifest["runtime"], "self_verification": {"num_candidates": N_CANDIDATES}},
    }
    runtime = Runtime(policy_dir, verified_manifest, seed=0)
    mean = np.asarray(manifest["outputs"]["chunk_normalization"]["mean"])
    std = np.asarray(manifest["outputs"]["chunk_normalization"]["std"])

    for episode in range(2):  # reset() must clear the executed history
        runtime.reset()
        executed: list[np.ndarray] = []  # normalised first actions of the returned chunks
        for step in range(5):
            chunk = runtime.act(_observation(10 * episode + step))
            assert chunk.shape == (TA, J) and np.all(np.isfinite(chunk))
            candidates = runtime.last_candidates
            assert candidates.shape == (N_CANDIDATES, TP, J)
            if step < PAST:  # history shorter than the past tokens: inactive, candidate 0
                assert runtime.verifier.last_errors is None
                choice = 0
            else:
                choice, errors = select_candidate(candidates, np.stack(executed[-PAST:]), TO - 1 - PAST)
                np.testing.assert_allclose(runtime.verifier.last_errors, errors, rtol=1e-5)
                assert np.ptp(errors) > 0  # distinct candidates, a real choice
            np.testing.assert_allclose(chunk, candidates[choice, TO - 1 : TO - 1 + TA] * std + mean, rtol=0, atol=1e-9)
            executed.append((chunk[0] - mean) / std)
        if episode == 0:
            first_errors = runtime.verifier.last_errors
    assert not np.array_equal(first_errors, runtime.verifier.last_errors)

    # The first call of an episode executes candidate 0, whose noise is the plain runtime's noise.
    plain.reset()
    fresh = Runtime(policy_dir, verified_manifest, seed=0)
    np.testing.assert_allclose(fresh.act(_observation(0)), plain.act(_observation(0)), atol=1e-5, rtol=0)

    no_ptp = {**verified_manifest, "runtime": {**verified_manifest["runtime"], "past_tokens_in_loss": 0}}
    with pytest.raises(ValueError, match="past-token prediction"):
        Runtime(policy_dir, no_ptp)


def test_embed_from_a_trained_run_uses_its_ema_encoder(tmp_path):
    from dexstack.policies.diffusion.embeddings import embed_dataset, encoder_hash, load_embeddings
    from dexstack.policies.diffusion.model import load_trained
    from dexstack.policies.diffusion.train import train

    data = _write_dataset(tmp_path / "data", seed=3, lengths=(6, 6, 6, 6))
    config = _config(epochs=1, batch_size=8, val_fraction=0.25, torch_threads=1, warmup_steps=1, device="cpu")
    train(data, tmp_path / "run", config, progress=False)
    path = embed_dataset(tmp_path / "run", data, tmp_path / "emb.npz")
    cache = load_embeddings(path, data, encoder=tmp_path / "run")
    frozen = load_trained(tmp_path / "run")[0]
    assert cache.encoder_hash == encoder_hash(frozen) != encoder_hash(_policy())
    reference = embed_dataset(frozen, data, tmp_path / "ref.npz")
    for a, b in zip(cache.episodes, load_embeddings(reference, data).episodes, strict=True):
        np.testing.assert_array_equal(a, b)
