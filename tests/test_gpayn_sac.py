"""G-PAYN learner: SAC update, tanh-Gaussian log-prob, entropy tuning, Polyak targets, checkpoints,
the frozen image encoder's pretraining, the ONNX export and the torch-free runtime; and SAC
learning a 1-D reach task. Real torch, real onnxruntime, real files; CPU, one torch thread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributions as D

from dexstack.manifest import load_manifest
from dexstack.policies.gpayn.encoder import (
    ImageEncoder,
    encode_images,
    encoder_hash,
    freeze,
    load_frozen_encoder,
    pretrain_encoder,
)
from dexstack.policies.gpayn.export import (
    ExportError,
    export_actor,
    export_encoder_onnx,
    sample_observations,
    torch_policy_action,
)
from dexstack.policies.gpayn.runtime import Runtime
from dexstack.policies.gpayn.sac import SAC, Actor, RunningNorm, SACConfig, tanh_log_det_jacobian, vector_spec
from dexstack.runtime import ObservationError

SPEC = {"hand_joints": 24, "touch": 10, "ee_pose": 7, "grasp_center": 3}
ACTION_DIM = 8
SMALL = SACConfig(hidden=(64, 64))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Small networks on a shared 2-core machine: a second thread only adds contention.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def random_batch(spec: dict[str, int], action_dim: int, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "obs": {k: rng.normal(size=(size, d)) for k, d in spec.items()},
        "action": rng.uniform(-1, 1, (size, action_dim)),
        "reward": rng.normal(size=size),
        "next_obs": {k: rng.normal(size=(size, d)) for k, d in spec.items()},
        "done": (rng.random(size) < 0.1).astype(np.float64),
    }


def shape_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """64x64 images of one disc or rectangle of random colour on a random uniform background,
    with the shape's mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    images = np.empty((count, 64, 64, 3), np.uint8)
    masks = np.zeros((count, 64, 64), bool)
    for i in range(count):
        images[i] = rng.integers(0, 256, 3)
        cx, cy = rng.uniform(12, 52, 2)
        r = rng.uniform(5, 12)
        if rng.random() < 0.5:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        else:
            mask = (np.abs(xx - cx) < r) & (np.abs(yy - cy) < r * rng.uniform(0.5, 1.0))
        images[i][mask] = rng.integers(0, 256, 3)
        masks[i] = mask
    return images, masks


# --- SAC ------------------------------------------------------------------------------------


def test_critic_loss_falls_on_a_fixed_batch():
    sac = SAC(SPEC, ACTION_DIM, seed=0)  # default hyperparameters (256x2, lr 3e-4)
    batch = random_batch(SPEC, ACTION_DIM, 128)
    sac.update_normalizer(batch["obs"])
    losses = [sac.update(batch)["critic_loss"] for _ in range(150)]
    assert np.mean(losses[-10:]) < 0.3 * losses[0], (losses[0], losses[-10:])


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = Actor(5, 3, (32, 32))
    obs = 0.3 * torch.randn(400, 5)
    with torch.no_grad():
        action, log_prob = actor.sample(obs, torch.Generator().manual_seed(1))
        mean, log_std = actor.distribution_params(obs)
    reference = D.TransformedDistribution(
        D.Independent(D.Normal(mean, log_std.exp()), 1), [D.TanhTransform(cache_size=1)]
    )
    inside = action.abs().max(dim=1).values < 0.999  # atanh in the reference is exact only away from +-1
    assert inside.sum() > 350
    np.testing.assert_allclose(log_prob[inside].numpy(), reference.log_prob(action[inside]).numpy(), atol=2e-4)
    assert action.abs().max() < 1.0
    np.testing.assert_allclose(actor.deterministic(obs).detach().numpy(), torch.tanh(mean).numpy(), atol=1e-7)
    # The stable Jacobian term equals log(1 - tanh^2) and stays finite where tanh rounds to 1.
    u = torch.linspace(-4, 4, 81, dtype=torch.float64)
    np.testing.assert_allclose(tanh_log_det_jacobian(u).numpy(), torch.log(1 - torch.tanh(u) ** 2).numpy(), atol=1e-9)
    assert torch.isfinite(tanh_log_det_jacobian(torch.tensor([30.0, -30.0]))).all()


def test_alpha_follows_the_entropy_target():
    batch = random_batch({"x": 3}, 2, 64)
    # Above the largest entropy a distribution on [-1, 1]^2 can have (2 log 2): alpha must grow.
    high = SAC({"x": 3}, 2, SACConfig(hidden=(32, 32), target_entropy=5.0), seed=0)
    # Far below any reachable entropy: alpha must shrink.
    low = SAC({"x": 3}, 2, SACConfig(hidden=(32, 32), target_entropy=-50.0), seed=0)
    for _ in range(20):
        high_info, low_info = high.update(batch), low.update(batch)
    assert high_info["entropy"] < 5.0 and high.alpha > 1.0
    assert low_info["entropy"] > -50.0 and low.alpha < 1.0
    assert SAC({"x": 3}, 2, seed=0).target_entropy == -2.0  # default: -action_dim


def test_target_critics_move_by_tau():
    sac = SAC({"x": 4}, 2, SACConfig(hidden=(32, 32), tau=0.05), seed=0)
    sac.update(random_batch({"x": 4}, 2, 32))  # targets and critics differ from here on
    before = [p.detach().clone() for p in sac.critics_target.parameters()]
    sac.update(random_batch({"x": 4}, 2, 32, seed=1))
    for old, new, online in zip(before, sac.critics_target.parameters(), sac.critics.parameters(), strict=True):
        np.testing.assert_allclose(new.detach().numpy(), (0.95 * old + 0.05 * online.detach()).numpy(), atol=1e-7)
    assert not torch.allclose(next(sac.critics_target.parameters()), next(sac.critics.parameters()))


def test_checkpoint_roundtrip_gives_identical_actions_and_updates(tmp_path):
    sac = SAC(SPEC, ACTION_DIM, SMALL, seed=3)
    sac.update_normalizer(random_batch(SPEC, ACTION_DIM, 50)["obs"])
    for seed in range(5):
        sac.update(random_batch(SPEC, ACTION_DIM, 32, seed))
    torch.save(sac.state_dict(), tmp_path / "sac.pt")
    restored = SAC.from_state_dict(torch.load(tmp_path / "sac.pt", weights_only=False))
    obs = {k: v[:4] for k, v in random_batch(SPEC, ACTION_DIM, 4, 9)["obs"].items()}
    np.testing.assert_array_equal(sac.act(obs, deterministic=True), restored.act(obs, deterministic=True))
    np.testing.assert_array_equal(sac.act(obs), restored.act(obs))  # the sampling generator is restored too
    batch = random_batch(SPEC, ACTION_DIM, 32, 10)
    assert sac.update(batch) == restored.update(batch)  # optimiser moments and log alpha came back
    with pytest.raises(ValueError, match="checkpoint is for spec"):
        SAC({"x": 3}, ACTION_DIM, SMALL).load_state_dict(sac.state_dict())


def test_replay_style_batches_and_env_specs_are_understood():
    # replay.py samples {"terminated", "truncated"} and keeps images in obs; the env's spec is
    # {key: (shape, dtype)}.
    env_spec = {
        "hand_joints": ((24,), np.float32),
        "touch": ((10,), np.float32),
        "image": ((64, 64, 3), np.uint8),
        "depth": ((64, 64), np.float32),
        "ee_pose": ((7,), np.float32),
    }
    spec = vector_spec(env_spec, visual_dim=32)
    assert spec == {"hand_joints": 24, "touch": 10, "ee_pose": 7, "visual": 32}
    batch = random_batch(spec, 3, 16)
    done = batch.pop("done")
    batch |= {"terminated": done, "truncated": np.ones(16)}
    batch["obs"]["image"] = np.zeros((16, 64, 64, 3), np.uint8)
    a, b = SAC(spec, 3, SMALL, seed=0), SAC(spec, 3, SMALL, seed=0)
    assert a.update(batch) == b.update({**batch, "done": done})  # terminated is done; truncation ignored


def _bandit_batch(demo_reward: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """16 states, each with 8 rows of the demo action (flagged `demo`) and 8 random actions; one
    step episodes. Agent rows earn 0, demo rows `demo_reward`."""
    rng = np.random.default_rng(0)
    demo_action = np.array([0.6, -0.4, 0.2], np.float32)
    states = rng.normal(size=(16, 4)).astype(np.float32)
    obs = np.repeat(states, 16, axis=0)
    actions = np.concatenate(
        [np.concatenate([np.tile(demo_action, (8, 1)), rng.uniform(-1, 1, (8, 3))]) for _ in states]
    ).astype(np.float32)
    demo = np.tile(np.r_[np.ones(8, bool), np.zeros(8, bool)], len(states))
    batch = {
        "obs": {"x": obs},
        "next_obs": {"x": obs},
        "action": actions,
        "done": np.ones(len(obs), np.float32),
        "reward": np.where(demo, demo_reward, 0.0).astype(np.float32),
        "demo": demo,
    }
    return batch, states, demo_action


def _train_bandit(batch: dict, bc_weight: float, updates: int = 200) -> tuple[SAC, list[float]]:
    sac = SAC(
        {"x": 4}, 3, SACConfig(hidden=(64, 64), initial_alpha=0.01, critic_layer_norm=True, bc_weight=bc_weight), seed=0
    )
    return sac, [sac.update(batch)["bc_loss"] for _ in range(updates)]


def test_q_filtered_bc_clones_demo_actions_the_critics_do_not_rank_lower():
    """Every action earns the same: the critics cannot tell the demo action from the actor's, the
    filter lets BC through, and the actor takes the demo action; without BC it does not."""
    batch, states, demo_action = _bandit_batch(demo_reward=0.0)
    distance = {}
    for weight in (0.0, 1.0):
        sac, bc_losses = _train_bandit(batch, weight)
        assert (max(bc_losses) > 0) == (weight > 0)
        distance[weight] = float(np.abs(sac.act({"x": states}, deterministic=True) - demo_action).mean())
    assert distance[1.0] < 0.1 and distance[1.0] < 0.5 * distance[0.0]
    assert isinstance(sac.critics[0].net[1], torch.nn.LayerNorm)  # critic_layer_norm


def test_q_filter_stops_cloning_demo_actions_the_critics_rank_lower():
    """Demo rows are penalised: once the critics learn that, the filter shuts BC off and the actor
    leaves the demo action."""
    batch, states, demo_action = _bandit_batch(demo_reward=-5.0)
    sac, bc_losses = _train_bandit(batch, 1.0)
    assert bc_losses[0] > 0 and max(bc_losses[-20:]) == 0.0
    assert np.abs(sac.act({"x": states}, deterministic=True) - demo_action).mean() > 0.8


def test_feature_noise_touches_only_its_keys_and_is_validated():
    sac = SAC(SPEC, ACTION_DIM, SACConfig(hidden=(16,), feature_noise={"touch": 2.0}), seed=0)
    clean = torch.zeros(4096, sum(SPEC.values()))
    noisy = sac._with_feature_noise(clean)
    start = SPEC["hand_joints"]
    touch = slice(start, start + SPEC["touch"])
    assert torch.equal(noisy[:, :start], clean[:, :start]) and torch.equal(
        noisy[:, touch.stop :], clean[:, touch.stop :]
    )
    assert abs(float(noisy[:, touch].std()) - 2.0) < 0.05
    assert torch.equal(SAC(SPEC, ACTION_DIM, SACConfig(hidden=(16,)))._with_feature_noise(clean), clean)
    with pytest.raises(ValueError, match="not in the spec"):
        SAC(SPEC, ACTION_DIM, SACConfig(feature_noise={"visual": 1.0}))
    with pytest.raises(ValueError, match="feature_noise"):
        SACConfig(feature_noise={"touch": -1.0})


def test_running_norm_matches_numpy_and_freezes():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, (1000, 4)) * np.array([1.0, 10.0, 0.1, 0.0])
    norm = RunningNorm(4, clip=10.0, min_std=1e-2)
    for chunk in np.array_split(data, 7):
        norm.update(torch.as_tensor(chunk))
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), atol=1e-10)
    np.testing.assert_allclose(norm.std().numpy(), np.maximum(data.std(0), 1e-2), atol=1e-10)  # constant column: floor
    norm.freeze()
    norm.update(torch.full((10, 4), 1e6, dtype=torch.float64))
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), atol=1e-10)
    assert norm.normalize(torch.full((1, 4), 1e6)).max() == 10.0  # clipped


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="dim must be a positive int"):
        SAC({"x": 0}, 2)
    with pytest.raises(TypeError, match="non-empty dict"):
        SAC({}, 2)
    with pytest.raises(ValueError, match="action_dim"):
        SAC({"x": 3}, 0)
    with pytest.raises(ValueError, match="tau"):
        SACConfig(tau=0.0)
    sac = SAC({"x": 3}, 2, SACConfig(hidden=(16,)))
    batch = random_batch({"x": 3}, 2, 8)
    with pytest.raises(ValueError, match="lacks key"):
        sac.update({k: v for k, v in batch.items() if k != "done"})
    with pytest.raises(ValueError, match=r"batch\['obs'\]\['x'\] has shape \(8, 4\)"):
        sac.update({**batch, "obs": {"x": np.zeros((8, 4))}})
    with pytest.raises(ValueError, match=r"batch\['reward'\] has shape"):
        sac.update({**batch, "reward": np.zeros((8, 1))})
    with pytest.raises(ValueError, match="NaN"):
        sac.update({**batch, "reward": np.full(8, np.nan)})
    with pytest.raises(ValueError, match="NaN"):
        sac.act({"x": np.array([0.0, np.nan, 0.0])})


def reach_rollouts(policy, seed: int, episodes: int = 20, horizon: int = 15) -> float:
    """1-D reach: x += 0.2 a (clipped to +-1.5), reward -|x - goal| per step; mean return."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(episodes):
        x, goal = rng.uniform(-1, 1, 2)
        for _ in range(horizon):
            action = policy({"pos": np.array([x]), "goal": np.array([goal])}, rng)
            x = float(np.clip(x + 0.2 * action[0], -1.5, 1.5))
            total -= abs(x - goal)
    return total / episodes


def test_sac_learns_a_one_dimensional_reach():
    steps, warmup, horizon = 2000, 200, 15
    config = SACConfig(hidden=(64, 64), gamma=0.9, lr=1e-3, initial_alpha=0.1)
    sac = SAC({"pos": 1, "goal": 1}, 1, config, seed=0)
    rng = np.random.default_rng(0)
    pos, goal, act, rew, next_pos = (np.zeros((steps, 1)) for _ in range(5))
    x, g = rng.uniform(-1, 1, 2)
    for i in range(steps):
        obs = {"pos": np.array([x]), "goal": np.array([g])}
        a = rng.uniform(-1, 1, 1) if i < warmup else sac.act(obs)
        nx = float(np.clip(x + 0.2 * a[0], -1.5, 1.5))
        pos[i], goal[i], act[i], rew[i], next_pos[i] = x, g, a, -abs(nx - g), nx
        if i < warmup:  # statistics from the random warm-up, then fixed
            sac.update_normalizer({"pos": pos[i : i + 1], "goal": goal[i : i + 1]})
        else:
            idx = rng.integers(0, i + 1, 64)
            sac.update(
                {
                    "obs": {"pos": pos[idx], "goal": goal[idx]},
                    "action": act[idx],
                    "reward": rew[idx, 0],
                    "next_obs": {"pos": next_pos[idx], "goal": goal[idx]},
                    "done": np.zeros(64),
                }
            )
        if i == warmup - 1:
            sac.freeze_normalizer()
        x = nx
        if (i + 1) % horizon == 0:  # time limit: a truncation, so never `done`
            x, g = rng.uniform(-1, 1, 2)
    random_return = reach_rollouts(lambda o, r: r.uniform(-1, 1, 1), seed=123)
    standing_still = reach_rollouts(lambda o, r: np.zeros(1), seed=123)
    trained = reach_rollouts(lambda o, r: sac.act(o, deterministic=True), seed=123)
    assert random_return < -10.0 and standing_still < -8.0
    assert trained > -4.0, (trained, random_return, standing_still)  # measured: -1.4 (seeds 0-2: -1.36..-1.44)


# --- encoder --------------------------------------------------------------------------------


def test_encoder_pretraining_lowers_reconstruction_loss_and_freezes(tmp_path):
    images, _ = shape_images(200, seed=0)
    history = pretrain_encoder(
        images, epochs=8, seed=0, out_path=tmp_path / "encoder.pt", feature_dim=32, batch_size=32
    )
    assert [h["epoch"] for h in history] == list(range(9))
    assert history[-1]["val_recon"] < 0.7 * history[0]["val_recon"], [h["val_recon"] for h in history]
    encoder = load_frozen_encoder(tmp_path / "encoder.pt")
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    features = encode_images(encoder, images[:5])
    assert features.shape == (5, 32) and features.dtype == np.float32
    with torch.no_grad():
        direct = encoder(torch.as_tensor(images[:5]).float() / 255.0).numpy()
    np.testing.assert_allclose(features, direct, atol=1e-6)
    assert np.abs(features).max() < 1.0  # tanh-bounded
    with pytest.raises(TypeError, match="uint8"):
        encode_images(encoder, images.astype(np.float32))
    with pytest.raises(ValueError, match="32x32"):
        encode_images(encoder, images[:, :32, :32])
    with pytest.raises(ValueError, match="masks must have shape"):
        pretrain_encoder(images, epochs=1, masks=np.zeros((10, 64, 64), bool))


def test_encoder_with_masks_learns_where_the_object_is():
    images, masks = shape_images(200, seed=1)
    # Measured (seeds 0, 1): a plateau for ~9 epochs, then the mask error halves and the centroid
    # error of the reconstructed mask drops from ~0.27 to 0.02-0.04 by epoch 14.
    history = pretrain_encoder(images, epochs=14, seed=0, masks=masks, feature_dim=32, batch_size=32)
    first, last = history[0], history[-1]
    assert last["val_mask"] < 0.6 * first["val_mask"], [h["val_mask"] for h in history]
    assert last["val_centroid"] < 0.4 * first["val_centroid"], [h["val_centroid"] for h in history]


# --- export and runtime ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A briefly trained SAC on the env's vector keys + 32 visual features, exported."""
    torch.set_num_threads(1)
    encoder = freeze(ImageEncoder(32))
    spec = {**SPEC, "visual": 32}
    sac = SAC(spec, ACTION_DIM, SMALL, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    obs = {k: rng.normal(1.0, 3.0, (64, d)) for k, d in SPEC.items()} | {"visual": encode_images(encoder, images)}
    sac.update_normalizer(obs)
    for seed in range(3):
        sac.update(
            random_batch(spec, ACTION_DIM, 32, seed)
            | {"obs": obs | {}, "next_obs": obs}
            | {"action": rng.uniform(-1, 1, (64, ACTION_DIM)), "reward": rng.normal(size=64), "done": np.zeros(64)}
        )
    flat_images, _ = shape_images(16, seed=5)  # flat regions: the numerically hard case for GroupNorm
    out = export_actor(
        sac,
        spec,
        tmp_path_factory.mktemp("export") / "gpayn",
        encoder=encoder,
        action_scales=[0.01] * 6 + [0.1, 0.1],
        check_images=flat_images,
    )
    return sac, encoder, out


def test_export_matches_torch_within_1e5(exported):
    sac, encoder, out = exported
    manifest = load_manifest(out)
    assert sorted(p.name for p in out.iterdir()) == ["actor.onnx", "encoder.onnx", "manifest.json"]
    assert manifest["family"] == "gpayn" and manifest["runtime"]["action"]["dim"] == ACTION_DIM
    assert manifest["runtime"]["visual"]["encoder_hash"] == encoder_hash(encoder)
    diffs = manifest["provenance"]["onnx_max_abs_diff"]
    assert max(diffs.values()) <= 1e-5, diffs
    runtime = Runtime(out, manifest)  # the actor alone (the family's served runtime adds IK)
    scenes, _ = shape_images(5, seed=6)
    for obs in sample_observations(sac, encoder, manifest, 5, seed=42) + sample_observations(
        sac, encoder, manifest, 5, seed=43, images=scenes
    ):
        action = runtime.act(obs)
        assert action.shape == (ACTION_DIM,) and np.all(np.abs(action) <= 1.0)
        np.testing.assert_allclose(action, torch_policy_action(sac, encoder, manifest, obs), atol=1e-5)
        # ... and what the trainer's SAC.act does with the features it stores under "visual"
        vectors = {k: obs[k] for k in SPEC} | {"visual": encode_images(encoder, obs["image"][None])[0]}
        np.testing.assert_allclose(action, sac.act(vectors, deterministic=True), atol=1e-5)
        np.testing.assert_allclose(runtime.encode(obs), vectors["visual"], atol=1e-5)


def test_encoder_onnx_matches_torch(tmp_path):
    images, _ = shape_images(40, seed=2)
    pretrain_encoder(images, epochs=1, seed=0, out_path=tmp_path / "enc.pt", feature_dim=48)
    encoder = load_frozen_encoder(tmp_path / "enc.pt")
    assert export_encoder_onnx(encoder, tmp_path / "encoder.onnx") <= 1e-5
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": images[:7].astype(np.float32) / 255.0})
    np.testing.assert_allclose(got, encode_images(encoder, images[:7]), atol=1e-5)


def test_export_refuses_and_leaves_nothing(exported, tmp_path):
    sac, encoder, _ = exported
    spec = dict(sac.spec)
    # atol 0: onnxruntime's float32 sums differ from torch's by ~1e-7, so the check must fail.
    with pytest.raises(ExportError, match="differ"):
        export_actor(sac, spec, tmp_path / "strict", encoder=encoder, atol=0.0)
    assert list(tmp_path.iterdir()) == []  # neither the directory nor its temporary sibling
    with pytest.raises(ValueError, match="not the SAC's observation spec"):
        export_actor(sac, {**spec, "touch": 11}, tmp_path / "a", encoder=encoder)
    with pytest.raises(ValueError, match="pass the encoder"):
        export_actor(sac, spec, tmp_path / "b")
    with pytest.raises(ValueError, match="action_scales has 2 entries"):
        export_actor(sac, spec, tmp_path / "c", encoder=encoder, action_scales=[1.0, 1.0])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        export_actor(sac, spec, tmp_path / "full", encoder=encoder)


def test_runtime_rejects_bad_observations(exported):
    sac, encoder, out = exported
    manifest = load_manifest(out)
    runtime = Runtime(out, manifest)
    good = sample_observations(sac, encoder, manifest, 1, seed=7)[0]
    runtime.act(good)
    bad_cases = {
        "lacks 'touch'": {k: v for k, v in good.items() if k != "touch"},
        r"hand_joints: shape \(23,\)": good | {"hand_joints": good["hand_joints"][:23]},
        "touch: contains NaN": good | {"touch": np.where(np.arange(10) == 3, np.nan, good["touch"])},
        "ee_pose: contains NaN or inf": good | {"ee_pose": np.full(7, np.inf)},
        "expected uint8": good | {"image": good["image"].astype(np.float32)},
        r"image: shape \(32, 32, 3\)": good | {"image": good["image"][:32, :32]},
    }
    for message, obs in bad_cases.items():
        with pytest.raises(ObservationError, match=message):
            runtime.act(obs)
    assert issubclass(ObservationError, ValueError)


def test_runtime_runs_without_torch(exported, tmp_path):
    sac, encoder, out = exported
    manifest = load_manifest(out)
    obs = sample_observations(sac, encoder, manifest, 1, seed=11)[0]
    np.savez(tmp_path / "obs.npz", **obs)
    expected = torch_policy_action(sac, encoder, manifest, obs)
    script = (
        "import sys, json, numpy as np\n"
        "from dexstack.manifest import load_manifest\n"
        "from dexstack.policies.gpayn.runtime import Runtime\n"
        f"policy = {str(out)!r}\n"
        "runtime = Runtime(policy, load_manifest(policy))\n"
        f"obs = dict(np.load({str(tmp_path / 'obs.npz')!r}))\n"
        "action = runtime.act(obs)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'action': action.tolist()}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    np.testing.assert_allclose(report["action"], expected, atol=1e-5)
