"""Composable conditioning of the diffusion core: an extra condition vector (e.g. language features)
next to the observation features trains, exports to ONNX as a denoiser input and is served by the
onnxruntime runtime; without extras the network is the observation-only one, parameter for
parameter. Real torch, real onnxruntime, real files; tiny networks."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from dexstack import contract
from dexstack.hardware.profiles import PANDA
from dexstack.runtime import ObservationError

torch = pytest.importorskip("torch")

JOINTS = list(PANDA.joint_names)
J = len(JOINTS)
IMAGE = (24, 32, 3)
WORD = 6  # width of the extra condition vector


def _config(**overrides):
    from dexstack.policies.diffusion.config import DiffusionConfig

    base = dict(
        cameras=("wrist",),
        conv_channels=(8, 16),
        num_keypoints=8,
        down_dims=(32, 64),
        horizon=8,
        n_obs_steps=2,
        n_action_steps=4,
        step_embed_dim=32,
        d_model=32,
        n_heads=2,
        n_layers=1,
    )
    return DiffusionConfig(**{**base, **overrides})


def _stats() -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    return dict(
        joint_mean=rng.normal(size=J).tolist(),
        joint_std=rng.uniform(0.5, 2.0, J).tolist(),
        action_mean=rng.normal(size=J).tolist(),
        action_std=rng.uniform(0.5, 2.0, J).tolist(),
    )


def _policy(config):
    from dexstack.policies.diffusion.model import DiffusionPolicy

    torch.manual_seed(0)
    return DiffusionPolicy(config, J, {"wrist": IMAGE[:2]}, _stats())


def _batch(b: int, seed: int, instruction: torch.Tensor | None = None):
    from dexstack.policies.diffusion.model import Batch

    gen = torch.Generator().manual_seed(seed)
    extra = {"instruction": instruction if instruction is not None else torch.randn(b, WORD, generator=gen)}
    return Batch(
        joint_positions=torch.randn(b, 2, J, generator=gen),
        images=[torch.randint(0, 256, (b, 2, *IMAGE), generator=gen, dtype=torch.uint8)],
        actions=torch.randn(b, 8, J, generator=gen),
        extra=extra,
    )


def _observation(seed: int, instruction: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        contract.JOINT_POSITIONS: rng.normal(size=J).astype(np.float32),
        contract.rgb_key("wrist"): rng.integers(0, 256, IMAGE, dtype=np.uint8),
        "instruction": instruction,
    }


def _layout(model) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype};".encode())
    return h.hexdigest()[:16]


# Parameter names, shapes and dtypes of `_config(denoiser=...)` as built before extra conditions
# existed (commit 8801119): checkpoints and exports of that code load unchanged.
LAYOUT_WITHOUT_EXTRAS = {"unet": "2a0fa76447397442", "transformer": "170ce4afbd320d69"}


@pytest.mark.parametrize("denoiser", ["unet", "transformer"])
def test_without_extra_conditions_the_state_dict_is_unchanged(denoiser):
    model = _policy(_config(denoiser=denoiser))
    assert _layout(model) == LAYOUT_WITHOUT_EXTRAS[denoiser]
    with_extra = _policy(_config(denoiser=denoiser, extra_cond_dims={"instruction": WORD}))
    added = set(with_extra.state_dict()) - set(model.state_dict())
    assert added and all(k.startswith("denoiser.extra_") for k in added), added


@pytest.mark.parametrize("denoiser", ["unet", "transformer"])
def test_extra_condition_vector_trains_exports_and_is_served(tmp_path, denoiser):
    from dexstack.policies.diffusion import schedulers
    from dexstack.policies.diffusion.export import build_manifest, write_policy_dir
    from dexstack.policies.diffusion.model import torch_step_fn
    from dexstack.policies.diffusion.runtime import Runtime

    config = _config(denoiser=denoiser, extra_cond_dims={"instruction": WORD})
    model = _policy(config)

    # One training step: the loss depends on the vector, and its projection receives gradient.
    batch = _batch(4, seed=1)
    noise = torch.randn(batch.actions.shape, generator=torch.Generator().manual_seed(2))
    timesteps = torch.tensor([5, 30, 60, 90])
    loss = model(batch, noise=noise, timesteps=timesteps)
    other = model(_batch(4, seed=1, instruction=batch.extra["instruction"] + 1.0), noise=noise, timesteps=timesteps)
    assert loss.item() != other.item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss.backward()
    projection = model.denoiser.extra_cond["instruction"]
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    before = projection.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, projection.weight)
    model.eval()

    # Export: the vector is a manifest input of kind vector and an input of denoiser.onnx.
    manifest = build_manifest(
        config, JOINTS, {"wrist": list(IMAGE)}, 10.0, **{k: np.asarray(v) for k, v in _stats().items()}
    )
    manifest["runtime"]["past_tokens_in_loss"] = config.past_tokens_in_loss  # as export_run writes it
    out = write_policy_dir(tmp_path / "policy", model.encoder, model.denoiser, manifest)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"]["extra_cond"] == ["instruction"]
    spec = next(s for s in manifest["inputs"] if s["name"] == "instruction")
    assert (spec["kind"], spec["shape"]) == ("vector", [WORD])
    assert manifest["provenance"]["onnx_max_abs_diff"]["denoiser"] <= 1e-4

    # Served: act() takes the vector from the observation; the sampler matches the torch reference.
    runtime = Runtime(out, manifest)
    word = np.random.default_rng(3).normal(size=WORD).astype(np.float32)
    chunk = runtime.act(_observation(0, word))
    assert chunk.shape == (4, J) and np.all(np.isfinite(chunk))
    with pytest.raises(ObservationError, match="instruction"):
        runtime.act({k: v for k, v in _observation(1, word).items() if k != "instruction"})
    with pytest.raises(ObservationError, match="instruction"):
        runtime.act(_observation(1, np.zeros(WORD + 1, np.float32)))

    rng = np.random.default_rng(4)
    cond = rng.standard_normal((2, config.n_obs_steps * model.encoder.out_dim)).astype(np.float32)
    noise = rng.standard_normal((2, 8, J)).astype(np.float32)
    extra = np.repeat(word[None], 2, axis=0)
    got = runtime.sample(cond, noise, extra={"instruction": word[None]})
    alpha_bar = schedulers.alphas_cumprod(config.num_train_timesteps)
    expected = schedulers.ddim_sample(
        torch_step_fn(model.denoiser, cond, model.first_counted, (extra,)), noise, alpha_bar, config.ddim_steps
    )
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
    changed = runtime.sample(cond, noise, extra={"instruction": word[None] + 1.0})
    assert np.abs(changed - got).max() > 1e-4
    with pytest.raises(ValueError, match="extra condition vectors"):
        runtime.sample(cond, noise)


def test_extra_condition_config_is_checked():
    with pytest.raises(ValueError, match="must be an identifier"):
        _config(extra_cond_dims={"cond": 4})
    with pytest.raises(ValueError, match="width must be an int"):
        _config(extra_cond_dims={"instruction": 0})
    config = _config(extra_cond_dims={"instruction": WORD})
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config
