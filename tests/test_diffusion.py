"""Diffusion core: denoisers, DDPM/EDM training losses, DDIM/EDM samplers, ONNX export and the
torch-free runtime. Small networks throughout so the file runs in seconds on 2 cores."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dexstack import contract
from dexstack.hardware.profiles import PANDA
from dexstack.policies.diffusion import schedulers
from dexstack.policies.diffusion.config import DiffusionConfig
from dexstack.policies.diffusion.denoisers import CausalTransformerDenoiser, ConditionalUnet1D
from dexstack.policies.diffusion.export import build_manifest, export_denoiser, write_policy_dir
from dexstack.policies.diffusion.model import (
    IMAGE_SCALE,
    ObservationEncoder,
    build_denoiser,
    edm_training_loss,
    masked_mse,
    torch_step_fn,
    training_loss,
)
from dexstack.policies.diffusion.runtime import Runtime
from dexstack.policies.diffusion.train import EMA
from dexstack.runtime import ObservationError

JOINTS = list(PANDA.joint_names)
J = len(JOINTS)
IMAGE = (24, 32, 3)  # (H, W, 3): not square, so a swapped axis would show


def tiny_config(**overrides) -> DiffusionConfig:
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
        n_layers=2,
    )
    return DiffusionConfig(**{**base, **overrides})


def stats(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return dict(
        joint_mean=rng.normal(size=J),
        joint_std=rng.uniform(0.5, 2.0, J),
        action_mean=rng.normal(size=J),
        action_std=rng.uniform(0.5, 2.0, J),
    )


def observation(seed: int, image: tuple[int, int, int] = IMAGE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        contract.JOINT_POSITIONS: rng.normal(size=J).astype(np.float32),
        contract.rgb_key("wrist"): rng.integers(0, 256, image, dtype=np.uint8),
    }


def make_policy(
    root: Path, config: DiffusionConfig, image: tuple[int, int, int] = IMAGE
) -> tuple[Path, ObservationEncoder, torch.nn.Module, dict]:
    torch.manual_seed(0)
    encoder = ObservationEncoder(config, J, {"wrist": image[:2]}).eval()
    denoiser = build_denoiser(config, J, config.n_obs_steps * encoder.out_dim).eval()
    manifest = build_manifest(config, JOINTS, {"wrist": list(image)}, 10.0, **stats())
    out = write_policy_dir(root / f"{config.denoiser}_{config.sampler}_{image[0]}", encoder, denoiser, manifest)
    return out, encoder, denoiser, json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> dict[str, tuple]:
    root = tmp_path_factory.mktemp("diffusion")
    return {
        (den, smp): make_policy(root, tiny_config(denoiser=den, sampler=smp))
        for den, smp in (("unet", "ddim"), ("transformer", "ddim"), ("unet", "edm"))
    }


def torch_cond(encoder: ObservationEncoder, frames: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Torch reference of the runtime's condition: features of the frames, oldest first."""
    s = stats()
    feats = []
    with torch.no_grad():
        for obs in frames:
            q = (
                torch.as_tensor(obs[contract.JOINT_POSITIONS], dtype=torch.float32)
                - torch.as_tensor(s["joint_mean"], dtype=torch.float32)
            ) / torch.as_tensor(s["joint_std"], dtype=torch.float32)
            img = torch.as_tensor(obs[contract.rgb_key("wrist")]).to(torch.float32) * IMAGE_SCALE
            feats.append(encoder(q[None], img[None])[0].numpy())
    return np.concatenate(feats)[None]


# --- ONNX vs torch ----------------------------------------------------------------------------
def test_encoder_onnx_matches_torch(policies):
    policy_dir, encoder, _, manifest = policies[("unet", "ddim")]
    assert manifest["provenance"]["onnx_max_abs_diff"]["encoder"] <= 1e-4
    runtime = Runtime(policy_dir, manifest)
    for seed in range(3):
        obs = observation(seed)
        np.testing.assert_allclose(runtime.encode(obs), torch_cond(encoder, [obs])[0], atol=1e-4, rtol=0)


def test_pooled_colour_features_are_exported_and_tell_colours_apart(tmp_path):
    """pooled_features adds globally averaged channels after the keypoints: ONNX matches torch,
    and two uniform images of different colours, same keypoints, differ in those features."""
    policy_dir, encoder, _, manifest = make_policy(tmp_path, tiny_config(pooled_features=4))
    assert encoder.out_dim == J + 2 * 8 + 4
    runtime = Runtime(policy_dir, manifest)
    obs = observation(0)
    np.testing.assert_allclose(runtime.encode(obs), torch_cond(encoder, [obs])[0], atol=1e-4, rtol=0)
    red, blue = dict(obs), dict(obs)
    red[contract.rgb_key("wrist")] = np.zeros(IMAGE, np.uint8) + np.array([200, 0, 0], np.uint8)
    blue[contract.rgb_key("wrist")] = np.zeros(IMAGE, np.uint8) + np.array([0, 0, 200], np.uint8)
    f_red, f_blue = runtime.encode(red), runtime.encode(blue)
    assert np.abs(f_red[-4:] - f_blue[-4:]).max() > 1e-2


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_denoiser_step_onnx_matches_torch(policies, kind):
    import onnxruntime as ort

    policy_dir, _, denoiser, manifest = policies[(kind, "ddim")]
    assert manifest["provenance"]["onnx_max_abs_diff"]["denoiser"] <= 1e-4
    session = ort.InferenceSession(str(policy_dir / "denoiser.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 8, J)).astype(np.float32)
    t = np.array([0, 13, 50, 77, 99], np.float32)
    cond = rng.standard_normal((5, denoiser.cond_dim)).astype(np.float32)
    (got,) = session.run(None, {"noisy_actions": x, "timestep": t, "cond": cond})
    with torch.no_grad():
        expected = denoiser(torch.as_tensor(x), torch.as_tensor(t), torch.as_tensor(cond)).numpy()
    assert np.abs(expected).max() > 1e-2  # a real output, not zeros
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("key", [("unet", "ddim"), ("transformer", "ddim"), ("unet", "edm")])
def test_full_sampling_run_onnx_matches_torch(policies, key):
    """DDIM-10 / EDM-3 with fixed noise: the runtime's loop around onnxruntime equals the same loop
    around the torch denoiser."""
    policy_dir, encoder, denoiser, manifest = policies[key]
    runtime = Runtime(policy_dir, manifest)
    frames = [observation(1), observation(2)]
    cond = torch_cond(encoder, frames)
    noise = np.random.default_rng(3).standard_normal((1, 8, J)).astype(np.float32)
    got = runtime.sample(cond, noise)
    step = torch_step_fn(denoiser, cond)
    if key[1] == "ddim":
        assert manifest["runtime"]["ddim"]["steps"] == 10
        expected = schedulers.ddim_sample(step, noise, schedulers.alphas_cumprod(100), 10)
    else:
        assert manifest["runtime"]["edm"]["steps"] == 3
        expected = schedulers.edm_sample(step, noise, 3)
    assert not np.allclose(expected, noise, atol=1e-2)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_export_refuses_a_mismatch(tmp_path):
    """A graph onnxruntime cannot reproduce is rejected and not left on disk."""
    from dexstack.policies.common.export_check import ExportError

    class Unexportable(ConditionalUnet1D):
        def forward(self, x, t, c):  # noqa: ANN001, ANN201 - depends on a Python-side counter: traced as a constant
            self.calls = getattr(self, "calls", 0) + 1
            return super().forward(x, t, c) + self.calls

    with pytest.raises(ExportError, match="differ"):
        export_denoiser(Unexportable(J, 6, 16, (16, 32)), tmp_path / "d.onnx", 8, J, 6)
    assert not (tmp_path / "d.onnx").exists()


# --- runtime ----------------------------------------------------------------------------------
def test_act_returns_the_executable_slice_unnormalised(policies):
    policy_dir, encoder, denoiser, manifest = policies[("unet", "ddim")]
    runtime = Runtime(policy_dir, manifest, seed=11)
    first, second = observation(4), observation(5)
    chunk1 = runtime.act(first)
    chunk2 = runtime.act(second)
    assert chunk1.shape == (4, J) and chunk1.dtype == np.float64

    # Reference: same noise stream, torch denoiser; history = [first, first], then [first, second].
    rng = np.random.default_rng(11)
    s = stats()
    for frames, chunk in (([first, first], chunk1), ([first, second], chunk2)):
        noise = rng.standard_normal((1, 8, J)).astype(np.float32)
        cond = torch_cond(encoder, frames)
        seq = schedulers.ddim_sample(torch_step_fn(denoiser, cond), noise, schedulers.alphas_cumprod(100))
        absolute = seq[0] * s["action_std"] + s["action_mean"]
        np.testing.assert_allclose(chunk, absolute[1:5], atol=1e-3, rtol=1e-4)  # To - 1 = 1 .. 1 + Ta


def test_runtime_rejects_bad_observations_and_keeps_its_history(policies):
    policy_dir, _, _, manifest = policies[("unet", "ddim")]
    runtime, untouched = Runtime(policy_dir, manifest, seed=1), Runtime(policy_dir, manifest, seed=1)
    good = observation(0)
    bad_nan = {**good, contract.JOINT_POSITIONS: np.full(J, np.nan, np.float32)}
    bad_dtype = {**good, contract.rgb_key("wrist"): good[contract.rgb_key("wrist")].astype(np.float32)}
    bad_shape = {**good, contract.rgb_key("wrist"): np.zeros((IMAGE[1], IMAGE[0], 3), np.uint8)}
    for bad, message in (
        (bad_nan, "NaN"),
        (bad_dtype, "uint8"),
        (bad_shape, "shape"),
        ({contract.JOINT_POSITIONS: good[contract.JOINT_POSITIONS]}, "lacks"),
    ):
        with pytest.raises(ObservationError, match=message):
            runtime.act(bad)
    runtime._rng = np.random.default_rng(1)  # the rejected calls drew no noise; keep both streams equal anyway
    np.testing.assert_array_equal(runtime.act(good), untouched.act(good))
    with pytest.raises(ValueError, match="noise has shape"):
        runtime.sample(np.zeros((1, 2 * runtime.encode(good).size), np.float32), np.zeros((1, 3, J), np.float32))


def test_runtime_refuses_inconsistent_manifests(policies):
    policy_dir, _, _, manifest = policies[("unet", "ddim")]
    wrong_chunk = json.loads(json.dumps(manifest))
    wrong_chunk["outputs"]["chunk_length"] = 5
    with pytest.raises(ValueError, match="chunk_length=5 differs"):
        Runtime(policy_dir, wrong_chunk)
    wrong_sampler = json.loads(json.dumps(manifest))
    wrong_sampler["runtime"]["sampler"] = "dpm"
    with pytest.raises(ValueError, match="sampler is 'dpm'"):
        Runtime(policy_dir, wrong_sampler)
    missing = json.loads(json.dumps(manifest))
    missing["graphs"]["denoiser"] = "nope.onnx"
    with pytest.raises(ValueError, match="cannot load ONNX graph"):
        Runtime(policy_dir, missing)


def test_published_policy_loads_through_the_store(tmp_path, dexstack_home):
    from dexstack.manifest import check_against_profile, validate_manifest
    from dexstack.runtime import load_runtime
    from dexstack.store import PolicyStore

    panda_image = (PANDA.camera("wrist").height, PANDA.camera("wrist").width, 3)
    policy_dir, _, _, manifest = make_policy(tmp_path, tiny_config(denoiser="transformer"), panda_image)
    store = PolicyStore(Path(dexstack_home) / "policies", bundled=False)
    store.publish(policy_dir, name="diffusion_test")
    loaded = store.load("diffusion_test", PANDA)
    validate_manifest(loaded.manifest)
    check_against_profile(loaded.manifest, PANDA)
    runtime = load_runtime(loaded.path, loaded.manifest, profile=PANDA)
    direct = Runtime(policy_dir, manifest)
    obs = observation(9, panda_image)
    np.testing.assert_array_equal(runtime.act(obs), direct.act(obs))


def test_runtime_does_not_import_torch(policies):
    policy_dir, _, _, _ = policies[("unet", "edm")]
    code = (
        "import json, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from dexstack.policies.diffusion.runtime import Runtime\n"
        f"d = Path({str(policy_dir)!r})\n"
        "rt = Runtime(d, json.loads((d / 'manifest.json').read_text()))\n"
        f"obs = {{'joint_positions': np.zeros({J}), 'wrist_rgb': np.zeros({IMAGE!r}, np.uint8)}}\n"
        "print(rt.act(obs).shape, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"(4, {J}) False"


# --- sampler math against known answers -------------------------------------------------------
def test_ddim_with_the_true_noise_recovers_the_clean_sample():
    alpha_bar = schedulers.alphas_cumprod(100)
    x0 = np.random.default_rng(0).standard_normal((2, 8, 3)).astype(np.float32)

    def oracle(x, t):  # the eps that explains x_t exactly given the clean x0
        a = alpha_bar[int(t[0])]
        return (x - math.sqrt(a) * x0) / math.sqrt(1 - a)

    noise = np.random.default_rng(1).standard_normal(x0.shape).astype(np.float32)
    for steps in (10, 4, 1):
        np.testing.assert_allclose(schedulers.ddim_sample(oracle, noise, alpha_bar, steps), x0, atol=1e-4)
    assert list(schedulers.ddim_timesteps(100, 10)) == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    betas = schedulers.squaredcos_cap_v2_betas(100)
    assert np.all(np.diff(betas) > 0) and betas.max() <= 0.999 and alpha_bar[-1] < 1e-5


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_edm_with_a_perfect_denoiser_recovers_the_clean_sample(method):
    x0 = np.random.default_rng(0).standard_normal((2, 8, 3))
    calls = []

    def oracle(x_in, c_noise):  # F such that D(x) = x0, undoing the preconditioning
        sigma = math.exp(4 * float(c_noise[0]))
        c_skip, c_out, c_in, _ = schedulers.edm_preconditioning(sigma)
        calls.append(sigma)
        return (x0 - c_skip * (x_in / c_in)) / c_out

    noise = np.random.default_rng(1).standard_normal(x0.shape).astype(np.float32)
    np.testing.assert_allclose(schedulers.edm_sample(oracle, noise, 3, method=method), x0, atol=1e-4)
    assert len(calls) == (3 if method == "euler" else 5)
    np.testing.assert_allclose(calls[0], 80.0, rtol=1e-5)
    sigmas = schedulers.karras_sigmas(3)
    assert sigmas[-1] == 0 and np.isclose(sigmas[-2], 0.002) and np.all(np.diff(sigmas) < 0)


# --- denoisers --------------------------------------------------------------------------------
def test_transformer_is_causal_over_action_tokens():
    torch.manual_seed(0)
    model = CausalTransformerDenoiser(
        3, 12, horizon=8, d_model=32, n_heads=2, n_layers=2, cond_tokens=2, step_embed_dim=16
    ).eval()
    x = torch.randn(2, 8, 3)
    later_changed = x.clone()
    later_changed[:, 5:] += 1.0
    t, c = torch.tensor([3.0, 40.0]), torch.randn(2, 12)
    with torch.no_grad():
        a, b = model(x, t, c), model(later_changed, t, c)
    assert torch.equal(a[:, :5], b[:, :5])  # tokens 0..4 never see tokens 5..7
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3
    with torch.no_grad():  # the step and the observation both condition the output
        assert (model(x, t + 20, c) - a).abs().max() > 1e-3 and (model(x, t, c + 1) - a).abs().max() > 1e-3


def test_unet_shapes_and_conditioning():
    torch.manual_seed(0)
    model = ConditionalUnet1D(3, 6, step_embed_dim=16, down_dims=(16, 32, 64)).eval()
    x, t, c = torch.randn(2, 16, 3), torch.tensor([5, 60]), torch.randn(2, 6)
    with torch.no_grad():
        out = model(x, t, c)
        assert out.shape == (2, 16, 3)
        assert (model(x, t + 10, c) - out).abs().max() > 1e-4 and (model(x, t, c + 1) - out).abs().max() > 1e-4
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny_config(horizon=10, down_dims=(16, 32, 64))


# --- training -----------------------------------------------------------------------------------
def toy_batch(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """action[t, a] = sin(0.4 t + w_a . cond): a smooth sequence fully determined by cond."""
    cond = torch.randn(n, 4, generator=gen)
    w = torch.tensor([[1.0, -0.5, 0.3, 0.0], [0.2, 0.8, -0.6, 0.5]])
    phase = cond @ w.T  # (n, 2)
    return torch.sin(0.4 * torch.arange(8.0)[None, :, None] + phase[:, None, :]), cond


@pytest.mark.parametrize("loss_kind", ["ddpm", "edm"])
def test_tiny_training_run_lowers_the_loss(loss_kind):
    torch.manual_seed(0)
    model = ConditionalUnet1D(2, 4, step_embed_dim=32, down_dims=(32, 64))
    ema = EMA(model, decay=0.99)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    loss_fn = training_loss if loss_kind == "ddpm" else edm_training_loss

    # Fixed evaluation batch, noise and noise levels, so before/after compare the same quantity.
    eval_gen = torch.Generator().manual_seed(123)
    actions, cond = toy_batch(eval_gen, 256)
    noise = torch.randn(actions.shape, generator=eval_gen)
    fixed = (
        {"timesteps": torch.randint(0, 100, (256,), generator=eval_gen)}
        if loss_kind == "ddpm"
        else {"sigma": (-1.2 + 1.2 * torch.randn(256, generator=eval_gen)).exp()}
    )

    def evaluate(net: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(loss_fn(net, actions, cond, noise=noise, **fixed))

    before = evaluate(model)
    for _ in range(150):
        a, c = toy_batch(gen, 64)
        loss = loss_fn(model, a, c, gen)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        ema.update(model)
    after, after_ema = evaluate(model), evaluate(ema.model)
    assert after < 0.5 * before, (before, after)
    assert after_ema < 0.7 * before, (before, after_ema)
    assert ema.updates == 150


def test_loss_mask_removes_masked_tokens():
    torch.manual_seed(0)
    model = ConditionalUnet1D(2, 4, step_embed_dim=16, down_dims=(16, 32))
    actions, cond = toy_batch(torch.Generator().manual_seed(0), 3)
    mask = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1], dtype=torch.bool)  # e.g. 3 past tokens not counted

    # Gradient of the loss w.r.t. the denoiser's output is zero exactly at the masked tokens.
    outputs = []

    class Recorder(torch.nn.Module):
        def forward(self, x, t, c):  # noqa: ANN001, ANN201
            out = model(x, t, c)
            out.retain_grad()
            outputs.append(out)
            return out

    training_loss(Recorder(), actions, cond, torch.Generator().manual_seed(1), mask=mask).backward()
    grad = outputs[0].grad
    assert torch.all(grad[:, :3] == 0) and torch.all(grad[:, 3:].abs().sum(dim=-1) > 0)

    # ... and w.r.t. the targets; changing masked targets leaves the value unchanged.
    pred = torch.randn(3, 8, 2)
    target = torch.randn(3, 8, 2, requires_grad=True)
    value = masked_mse(pred, target, mask)
    value.backward()
    assert torch.all(target.grad[:, :3] == 0) and torch.all(target.grad[:, 3:] != 0)
    changed = target.detach().clone()
    changed[:, :3] += 5.0
    assert torch.equal(masked_mse(pred, changed, mask), value.detach())
    np.testing.assert_allclose(float(value.detach()), float(((pred - target.detach())[:, 3:] ** 2).mean()), rtol=1e-6)
    # Per-sample masks (B, T), and bad masks with clear errors.
    per_sample = torch.ones(3, 8)
    per_sample[0] = 0
    assert torch.equal(masked_mse(pred, target, per_sample), masked_mse(pred[1:], target[1:]))
    with pytest.raises(ValueError, match="keeps no action token"):
        masked_mse(pred, target, torch.zeros(8))
    with pytest.raises(ValueError, match="loss mask has shape"):
        masked_mse(pred, target, torch.ones(7))


def test_config_round_trip_and_errors():
    config = tiny_config(denoiser="transformer", sampler="edm")
    assert DiffusionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown diffusion config keys"):
        DiffusionConfig.from_dict({"horizn": 8})
    with pytest.raises(ValueError, match="n_action_steps"):
        tiny_config(n_action_steps=8)
    with pytest.raises(ValueError, match="sampler"):
        tiny_config(sampler="dpm")
