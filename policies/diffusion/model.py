"""The diffusion policy as a torch module, with its losses (training, export and reference; never served).

`ObservationEncoder` maps ONE frame (normalised joint positions (B, J) and one scaled RGB image
(B, H, W, 3) per camera) to features (B, F). The global condition of the denoiser is the features
of the To most recent frames concatenated oldest first, (B, To * F): encoding per frame lets the
runtime keep a feature history instead of re-encoding old frames, and lets a trainer cache
embeddings of every frame (PTP's multistage training). Optional extra condition vectors
(`config.extra_cond_dims`, e.g. language features) join that condition inside the denoiser.

`DiffusionPolicy` (encoder + denoiser + normalisation) returns the masked denoising loss of a
batch: DDPM eps-prediction (`training_loss`) or EDM (`edm_training_loss`) on mean/std normalised
actions, with PTP's past-token setting (`history.py`). `load_trained` restores a run's EMA weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dexstack import contract
from dexstack.policies.common.runs import CHECKPOINT
from dexstack.policies.common.vision import IMAGE_SCALE, ConvKeypointEncoder
from dexstack.policies.diffusion import history
from dexstack.policies.diffusion.config import DiffusionConfig
from dexstack.policies.diffusion.denoisers import CausalTransformerDenoiser, ConditionalUnet1D
from dexstack.policies.diffusion.schedulers import StepFn, alphas_cumprod


class ObservationEncoder(nn.Module):
    """Keypoint CNN per camera (GroupNorm + spatial softmax, trained from scratch) + proprioception."""

    def __init__(self, config: DiffusionConfig, n_joints: int, image_hw: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        self.cameras = tuple(config.cameras)
        self.n_joints = n_joints
        self.cnns = nn.ModuleDict(
            {
                cam: ConvKeypointEncoder(
                    *image_hw[cam],
                    channels=tuple(config.conv_channels),
                    num_keypoints=config.num_keypoints,
                    groups=config.group_norm_groups,
                    pooled_features=config.pooled_features,
                )
                for cam in self.cameras
            }
        )
        self.out_dim = n_joints + sum(cnn.out_dim for cnn in self.cnns.values())

    def input_names(self) -> list[str]:
        """Graph input names in forward() order: observation keys of the contract."""
        return [contract.JOINT_POSITIONS] + [contract.rgb_key(c) for c in self.cameras]

    def forward(self, joint_positions: torch.Tensor, *images: torch.Tensor) -> torch.Tensor:
        """joint_positions (B, J) normalised, images (B, H, W, 3) scaled, in `cameras` order -> (B, F);
        F = J + (2 * keypoints + pooled features) per camera (keypoints in image coordinates, [-1, 1])."""
        feats = [joint_positions] + [self.cnns[c](img) for c, img in zip(self.cameras, images, strict=True)]
        return torch.cat(feats, dim=1)


def build_denoiser(config: DiffusionConfig, action_dim: int, cond_dim: int) -> nn.Module:
    """The configured denoiser for actions (B, horizon, action_dim), condition (B, cond_dim) and the
    config's extra condition vectors."""
    if config.denoiser == "unet":
        return ConditionalUnet1D(
            action_dim,
            cond_dim,
            config.step_embed_dim,
            tuple(config.down_dims),
            config.kernel_size,
            config.unet_groups,
            config.extra_cond_dims,
            config.extra_cond_embed_dim,
        )
    return CausalTransformerDenoiser(
        action_dim,
        cond_dim,
        config.horizon,
        config.d_model,
        config.n_heads,
        config.n_layers,
        cond_tokens=config.n_obs_steps,
        step_embed_dim=config.step_embed_dim,
        dropout=config.dropout,
        extra_cond_dims=config.extra_cond_dims,
    )


# --- the losses ------------------------------------------------------------------------------------
def _token_weights(mask: Any, shape: tuple[int, ...], device: Any) -> torch.Tensor:
    """mask: None (all tokens), (T,) or (B, T) bool / 0-1 weights -> (B, T, 1) float."""
    b, t = shape[0], shape[1]
    if mask is None:
        return torch.ones(b, t, 1, device=device)
    w = torch.as_tensor(mask, device=device).to(torch.float32)
    if w.shape not in ((t,), (b, t)):
        raise ValueError(f"loss mask has shape {tuple(w.shape)}; expected ({t},) or ({b}, {t})")
    return w.expand(b, t)[:, :, None]


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: Any = None) -> torch.Tensor:
    """Mean squared error over the action tokens the mask keeps ((T,) or (B, T); None: all).
    Masked tokens contribute neither to the value nor to the gradient."""
    w = _token_weights(mask, tuple(pred.shape), pred.device)
    total = w.sum() * pred.shape[-1]
    if float(total) <= 0:
        raise ValueError("loss mask keeps no action token")
    return ((pred - target).square() * w).sum() / total


def add_noise(
    actions: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alpha_bar: torch.Tensor
) -> torch.Tensor:
    """Forward diffusion q(x_t | x_0): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise."""
    a = alpha_bar.to(actions.device, actions.dtype)[timesteps][:, None, None]
    return a.sqrt() * actions + (1.0 - a).sqrt() * noise


def training_loss(
    model: nn.Module,
    actions: torch.Tensor,
    cond: torch.Tensor,
    generator: torch.Generator | None = None,
    mask: Any = None,
    num_train_timesteps: int = 100,
    noise: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
    extra: tuple[torch.Tensor, ...] = (),
) -> torch.Tensor:
    """DDPM eps-prediction loss for normalised `actions` (B, T, A) given `cond` (B, C) and the extra
    condition vectors `extra`.

    t ~ U{0..N-1}, noise ~ N(0, I) from `generator` unless given; `mask` selects which action
    tokens count (e.g. PTP: how many past tokens)."""
    b = actions.shape[0]
    alpha_bar = torch.as_tensor(alphas_cumprod(num_train_timesteps), dtype=torch.float32)
    if noise is None:
        noise = torch.randn(actions.shape, generator=generator).to(actions.device)
    if timesteps is None:
        timesteps = torch.randint(0, num_train_timesteps, (b,), generator=generator).to(actions.device)
    noisy = add_noise(actions, noise, timesteps, alpha_bar)
    return masked_mse(model(noisy, timesteps, cond, *extra), noise, mask)


def edm_training_loss(
    model: nn.Module,
    actions: torch.Tensor,
    cond: torch.Tensor,
    generator: torch.Generator | None = None,
    mask: Any = None,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    noise: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    extra: tuple[torch.Tensor, ...] = (),
) -> torch.Tensor:
    """EDM loss: ln sigma ~ N(p_mean, p_std^2); the network F(c_in x, c_noise) regresses
    (x_0 - c_skip x) / c_out, which is EDM's lambda(sigma)-weighted denoising loss."""
    b = actions.shape[0]
    if sigma is None:
        sigma = (p_mean + p_std * torch.randn(b, generator=generator)).exp().to(actions.device)
    if noise is None:
        noise = torch.randn(actions.shape, generator=generator).to(actions.device)
    s = sigma[:, None, None]
    d2 = sigma_data**2
    c_skip, c_out, c_in = d2 / (s**2 + d2), s * sigma_data / (s**2 + d2).sqrt(), 1.0 / (s**2 + d2).sqrt()
    x = actions + s * noise
    target = (actions - c_skip * x) / c_out
    return masked_mse(model(c_in * x, 0.25 * sigma.log(), cond, *extra), target, mask)


# --- the policy ------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Raw tensors of B windows: joint positions (B, To, J), uint8 images (B, To, H, W, 3) per
    camera, absolute actions (B, Tp, J); or, on cached features, `features` (B, To, F) and no images;
    `extra`: each extra condition vector (B, D) of `config.extra_cond_dims`, by name."""

    joint_positions: torch.Tensor
    images: list[torch.Tensor]
    actions: torch.Tensor
    features: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class DiffusionPolicy(nn.Module):
    """Encoder + denoiser in one module, so DDP, EMA and checkpoints see one set of weights.
    `stats` (normalisation) are buffers: they move with the module to the device."""

    def __init__(
        self,
        config: DiffusionConfig,
        n_joints: int,
        image_hw: dict[str, tuple[int, int]],
        stats: dict[str, list[float]],
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder = ObservationEncoder(config, n_joints, image_hw)
        self.denoiser = build_denoiser(config, n_joints, config.n_obs_steps * self.encoder.out_dim)
        for key, value in stats.items():
            self.register_buffer(key, torch.tensor(value, dtype=torch.float32), persistent=False)
        self.aux_head: nn.Module | None = None
        if config.aux_regression_weight > 0:
            steps = config.horizon - config.n_obs_steps + 1
            cond_dim = config.n_obs_steps * self.encoder.out_dim
            self.aux_head = nn.Sequential(nn.Linear(cond_dim, 256), nn.ReLU(), nn.Linear(256, steps * n_joints))
            # set by train() from the data (`relative_chunk_std`); only training uses it
            self.register_buffer("aux_delta_std", torch.ones(steps, n_joints), persistent=False)

    @property
    def first_counted(self) -> int:
        """Earliest action token in the loss (`history.first_counted_token`)."""
        return history.first_counted_token(self.config.n_obs_steps, self.config.past_tokens_in_loss)

    def condition(self, joint_positions: torch.Tensor, images: list[torch.Tensor]) -> torch.Tensor:
        """Raw joints (B, To, J) and uint8 images (B, To, H, W, 3) -> condition (B, To * F): each frame
        encoded on its own, features concatenated oldest first (what the runtime does)."""
        b, to = joint_positions.shape[:2]
        q = ((joint_positions - self.joint_mean) / self.joint_std).reshape(b * to, -1)
        imgs = [img.reshape(b * to, *img.shape[2:]).to(torch.float32) * IMAGE_SCALE for img in images]
        return self.encoder(q, *imgs).reshape(b, -1)

    def forward(
        self,
        batch: Batch,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The masked denoising loss of a batch (scalar). Noise and timesteps (DDPM t, EDM sigma) are
        drawn from `generator` unless given. The past tokens outside the loss are hidden
        (`history.hold_uncounted_past`): the loss depends on them through neither target nor input."""
        cfg = self.config
        first = self.first_counted
        actions = history.hold_uncounted_past((batch.actions - self.action_mean) / self.action_std, first)
        cond = (
            batch.features.reshape(len(actions), -1)
            if batch.features is not None
            else self.condition(batch.joint_positions, batch.images)
        )
        extra = tuple(batch.extra[name] for name in cfg.extra_cond_dims)
        mask = history.loss_mask(cfg.horizon, first)
        if cfg.sampler == "edm":
            loss = edm_training_loss(
                self.denoiser,
                actions,
                cond,
                generator,
                mask,
                cfg.sigma_data,
                cfg.p_mean,
                cfg.p_std,
                noise=noise,
                sigma=timesteps,
                extra=extra,
            )
        else:
            loss = training_loss(
                self.denoiser,
                actions,
                cond,
                generator,
                mask,
                cfg.num_train_timesteps,
                noise=noise,
                timesteps=timesteps,
                extra=extra,
            )
        if self.aux_head is not None and self.training:  # validation loss stays the denoising loss alone
            loss = loss + cfg.aux_regression_weight * self.aux_regression_loss(cond, batch)
        return loss

    def aux_regression_loss(self, cond: torch.Tensor, batch: Batch) -> torch.Tensor:
        """L1 between the head's prediction from the condition and the current and future actions
        relative to the current joints, both in units of `aux_delta_std`."""
        target = (
            batch.actions[:, history.future_rows(self.config.n_obs_steps, self.config.horizon)]
            - batch.joint_positions[:, -1:]
        )
        predicted = self.aux_head(cond).reshape(target.shape)
        return (predicted - target / self.aux_delta_std).abs().mean()


def torch_step_fn(
    denoiser: nn.Module, cond: np.ndarray, first_counted: int = 0, extra: tuple[np.ndarray, ...] = ()
) -> StepFn:
    """Wrap a torch denoiser, a fixed condition (B, C) and extra condition vectors (B, D_i) as the
    numpy per-step network the samplers call: the torch reference of what the runtime does with
    onnxruntime (past tokens before `first_counted` held as in training)."""
    cond_t = torch.as_tensor(np.asarray(cond, np.float32))
    extra_t = tuple(torch.as_tensor(np.asarray(x, np.float32)) for x in extra)

    def step(x: np.ndarray, timestep: np.ndarray) -> np.ndarray:
        x = history.hold_uncounted_past(x, first_counted)
        with torch.no_grad():
            return denoiser(torch.as_tensor(x), torch.as_tensor(timestep), cond_t, *extra_t).numpy()

    return step


def load_trained(run_dir: str | Path, device: str = "cpu") -> tuple[DiffusionPolicy, DiffusionConfig, dict[str, Any]]:
    """The EMA weights of a trained run (eval mode), its config and run info (+ training time,
    history and normalisation stats)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).exists():
        raise FileNotFoundError(
            f"{run_dir} has no {CHECKPOINT}; train first (dexstack train diffusion --out {run_dir})"
        )
    config = DiffusionConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    run_info = json.loads((run_dir / "run.json").read_text())
    stats = json.loads((run_dir / "stats.json").read_text())
    image_hw = {cam: tuple(run_info["image_shapes"][cam][:2]) for cam in config.cameras}
    model = DiffusionPolicy(config, len(run_info["joint_names"]), image_hw, stats)
    ckpt = torch.load(run_dir / CHECKPOINT, map_location=device, weights_only=False)
    model.load_state_dict(ckpt["ema"])
    model.eval()
    run_info.update(training_time_s=ckpt["training_time_s"], history=ckpt["history"], stats=stats)
    return model, config, run_info
