"""Diffusion-policy hyperparameters in one dataclass (plain Python: no torch).

Time indexing of a sample at frame k: observations k-To+1 .. k condition the denoiser, which
predicts Tp actions starting at action k-To+1 (diffusion_policy's convention). `action[k]` is the
target commanded for t_k + dt, so the executable slice starts at index To-1 and point i of it is
due (i + 1) * dt after the observation, as the runtime interface promises.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

FAMILY = "diffusion"
DENOISERS = ("unet", "transformer")
SAMPLERS = ("ddim", "edm")
EDM_METHODS = ("euler", "heun")


@dataclass
class DiffusionConfig:
    # --- horizons (policy steps) ---------------------------------------------------------
    n_obs_steps: int = 2  # To: observation frames in the condition
    horizon: int = 16  # Tp: predicted actions per sample (UNet: divisible by 2 ** (len(down_dims) - 1))
    n_action_steps: int = 8  # Ta: actions executed per chunk, from index To - 1

    # --- observation encoder (per frame; features of the To frames are concatenated) ------
    cameras: tuple[str, ...] = ("wrist", "scene")
    conv_channels: tuple[int, ...] = (32, 32, 64)
    group_norm_groups: int = 8
    num_keypoints: int = 32
    pooled_features: int = 0  # globally averaged channels per camera next to the keypoints (colour)
    # Encoder training only (PTP stage 1): weight of an auxiliary L1 loss whose small MLP head
    # predicts, from the condition, the current and future actions of the horizon relative to the
    # current joints (normalised per step and joint). The denoising loss alone reaches the encoder
    # through randomly noised targets, a weak signal; predicting where the arm will go is a direct
    # one (PTP's stage 1 uses 1; the figures it moved are in docs/RESULTS.md). 0 = off.
    # Not exported.
    aux_regression_weight: float = 0.0
    # Extra condition vectors next to the observation features, e.g. language or reasoning features
    # (Diffusion-VLA): name -> width. Each is one vector per sample (the current frame's; dataset
    # feature and runtime input `name`, float32, used as given), projected to `extra_cond_embed_dim`
    # and joined to the denoiser's global condition (UNet: into every FiLM; transformer: one more
    # condition token). Empty: the network is exactly the observation-only one.
    extra_cond_dims: dict[str, int] = field(default_factory=dict)
    extra_cond_embed_dim: int = 64

    # --- denoiser ---------------------------------------------------------------------------
    denoiser: str = "unet"  # one of DENOISERS
    step_embed_dim: int = 128  # sinusoidal diffusion-step embedding width
    # UNet: channels per level; (128, 256, 512) with kernel 5 is ~16M parameters for 9 joints.
    down_dims: tuple[int, ...] = (128, 256, 512)
    kernel_size: int = 5
    unet_groups: int = 8
    # Transformer: causal self-attention over action tokens, cross-attention to condition tokens.
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 6
    dropout: float = 0.0

    # --- diffusion training -------------------------------------------------------------
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: float | None = None  # clip predicted x0 to +-value (None: off; actions are mean/std normalised)
    ema_decay: float = 0.999
    # EDM parameterisation (BESO): sigma ~ lognormal(p_mean, p_std) in training
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2

    # --- sampling (written to manifest["runtime"]; changeable without retraining) ---------
    sampler: str = "ddim"  # "ddim" (eps-prediction denoiser) or "edm" (EDM-trained denoiser)
    ddim_steps: int = 10
    ddim_eta: float = 0.0
    edm_steps: int = 3
    edm_method: str = "euler"  # "euler": 3 network calls; "heun": 2 * steps - 1
    # Policy periods between two samples: 1 re-plans at every call; k > 1 executes k actions of each
    # plan open loop (diffusion_policy executes Ta), returning the rest of the current plan meanwhile.
    replan_every: int = 1

    # --- PTP: past-token prediction -----------------------------------------------------
    # How many of the To - 1 past action tokens (the actions already executed before frame k)
    # count in the denoising loss, nearest to the present first. 0 = off: the standard loss on
    # the current and future tokens only; the uncounted past tokens are also replaced by the
    # earliest counted action before noising, so the denoiser never sees them (history.py).
    past_tokens_in_loss: int = 0

    # --- data (train.py) ---------------------------------------------------------------
    only_successful: bool = True  # train on episodes whose `success` is not False
    val_fraction: float = 0.05  # whole episodes held out for the validation loss
    std_floor: float = 1e-3  # rad or m; keeps near-constant joints from exploding when normalised

    # --- optimisation (train.py) ---------------------------------------------------------
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    grad_clip: float = 1.0
    random_shift_px: int = 4  # DrQ-style random shift on training images, every frame of the window alike
    seed: int = 0
    device: str = "auto"  # auto: cuda (cuda:LOCAL_RANK under torchrun) if available, else cpu
    torch_threads: int = 0  # 0: one per CPU core
    eval_noise_seed: int = 1234  # fixed noise + timesteps for the validation loss, comparable across epochs

    def __post_init__(self) -> None:
        if self.denoiser not in DENOISERS:
            raise ValueError(f"denoiser {self.denoiser!r}; expected one of {DENOISERS}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r}; expected one of {SAMPLERS}")
        if self.edm_method not in EDM_METHODS:
            raise ValueError(f"edm_method {self.edm_method!r}; expected one of {EDM_METHODS}")
        if not 0 < self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} must be in 1..horizon - n_obs_steps + 1 "
                f"= {self.horizon - self.n_obs_steps + 1}"
            )
        if not 1 <= self.replan_every <= self.horizon - self.n_obs_steps + 1 - self.n_action_steps + 1:
            raise ValueError(
                f"replan_every={self.replan_every} must be in 1..horizon - n_obs_steps + 2 - n_action_steps "
                f"= {self.horizon - self.n_obs_steps + 2 - self.n_action_steps} (every returned chunk "
                "must lie inside the plan)"
            )
        if not 0 <= self.past_tokens_in_loss <= self.n_obs_steps - 1:
            raise ValueError(
                f"past_tokens_in_loss={self.past_tokens_in_loss} must be in 0..n_obs_steps - 1 "
                f"= {self.n_obs_steps - 1} (the past action tokens of the horizon)"
            )
        if (
            isinstance(self.pooled_features, bool)
            or not isinstance(self.pooled_features, int)
            or self.pooled_features < 0
        ):
            raise ValueError(f"pooled_features must be an int >= 0, got {self.pooled_features!r}")
        if not (self.aux_regression_weight >= 0.0 and math.isfinite(self.aux_regression_weight)):
            raise ValueError(f"aux_regression_weight must be a finite number >= 0, got {self.aux_regression_weight!r}")
        reserved = {"joint_positions", "noisy_actions", "timestep", "cond"}
        for name, dim in self.extra_cond_dims.items():
            if not (isinstance(name, str) and name.isidentifier()) or name in reserved or name.endswith("_rgb"):
                raise ValueError(
                    f"extra condition name {name!r} must be an identifier and not a graph input's "
                    f"name ({sorted(reserved)}, <camera>_rgb)"
                )
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(f"extra condition {name!r}: width must be an int >= 1, got {dim!r}")
        levels = 2 ** (len(self.down_dims) - 1)
        if self.denoiser == "unet" and self.horizon % levels:
            raise ValueError(
                f"horizon={self.horizon} must be divisible by {levels} for a UNet with {len(self.down_dims)} levels"
            )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        """Inverse of `to_dict`; unknown keys are an error so a typo never goes unnoticed."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown diffusion config keys {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
