"""Noise schedules and samplers (numpy only: the runtime runs them).

The sampler math is plain numpy (`ddim_step`, `ddim_sample`, `karras_sigmas`,
`edm_preconditioning`, `edm_sample`) around a per-step network call `net(x, timestep)`, so the
torch reference (`model.torch_step_fn`) and the onnxruntime runtime run the very same loop; only
the network call differs. Actions are normalised (B, T, A) float32 arrays throughout. The training
losses that pair with each sampler are in `model.py`.

Two parameterisations, each needing a denoiser trained for it:
- DDPM / DDIM: eps-prediction, `num_train_timesteps` (100) steps with the squared-cosine beta
  schedule ("squaredcos_cap_v2"); the network gets the integer step t.
- EDM (Karras et al. 2022, as in BESO): the network F gets c_in * x and c_noise = log(sigma) / 4
  and the denoised estimate is D(x) = c_skip * x + c_out * F; sampled on a Karras sigma schedule
  with deterministic Euler or Heun steps (3 steps by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

StepFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x (B,T,A) float32, timestep (B,) float32) -> (B,T,A)


# --- DDPM noise schedule (numpy) ---------------------------------------------------------------
def squaredcos_cap_v2_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """Betas whose alpha_bar(t) = cos^2(((t / N) + 0.008) / 1.008 * pi / 2) (Nichol & Dhariwal),
    each capped at `max_beta` so the last step does not destroy the signal in one go."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_train_timesteps
    return np.array([min(1.0 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)], np.float64)


def alphas_cumprod(num_train_timesteps: int = 100, beta_schedule: str = "squaredcos_cap_v2") -> np.ndarray:
    """alpha_bar_t for t = 0 .. N-1 (float64)."""
    if beta_schedule != "squaredcos_cap_v2":
        raise ValueError(f"beta_schedule {beta_schedule!r} is not supported; use 'squaredcos_cap_v2'")
    return np.cumprod(1.0 - squaredcos_cap_v2_betas(num_train_timesteps))


# --- DDIM sampling (numpy) ---------------------------------------------------------------------
def ddim_timesteps(num_train_timesteps: int, num_steps: int) -> np.ndarray:
    """The `num_steps` training steps DDIM visits, descending, evenly spaced from 0
    ("leading" spacing: 100 train steps, 10 steps -> 90, 80, ..., 0)."""
    if not 0 < num_steps <= num_train_timesteps:
        raise ValueError(f"DDIM steps must be in 1..{num_train_timesteps}, got {num_steps}")
    stride = num_train_timesteps // num_steps
    return (np.arange(num_steps, dtype=np.int64) * stride)[::-1].copy()


def ddim_step(
    x: np.ndarray,
    eps: np.ndarray,
    t: int,
    t_prev: int,
    alpha_bar: np.ndarray,
    eta: float = 0.0,
    noise: np.ndarray | None = None,
    clip_sample: float | None = None,
) -> np.ndarray:
    """One DDIM update x_t -> x_{t_prev} from the predicted noise (t_prev < 0: to the clean sample).

    eta = 0 is deterministic; eta > 0 adds `noise` (standard normal, shape of x) scaled by
    eta * sigma_t. `clip_sample` clips the predicted clean sample to +-value first."""
    a_t = float(alpha_bar[t])
    a_prev = float(alpha_bar[t_prev]) if t_prev >= 0 else 1.0
    x0 = (x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
    if clip_sample is not None:
        x0 = np.clip(x0, -clip_sample, clip_sample)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)
    std = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
    out = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - std * std, 0.0)) * eps
    if std > 0.0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        out = out + std * noise
    return out.astype(np.float32)


def ddim_sample(
    net: StepFn,
    x_init: np.ndarray,
    alpha_bar: np.ndarray,
    num_steps: int = 10,
    eta: float = 0.0,
    step_noise: np.ndarray | None = None,
    clip_sample: float | None = None,
) -> np.ndarray:
    """Run DDIM from pure noise `x_init` (B, T, A) with an eps-prediction network
    `net(x, t)`; `step_noise` (num_steps, B, T, A) is used when eta > 0 (drawn if None)."""
    timesteps = ddim_timesteps(len(alpha_bar), num_steps)
    stride = len(alpha_bar) // num_steps
    x = np.asarray(x_init, np.float32)
    t_batch = np.empty(x.shape[0], np.float32)
    rng = np.random.default_rng() if (eta > 0 and step_noise is None) else None
    for i, t in enumerate(timesteps):
        t_batch[:] = t
        eps = net(x, t_batch)
        noise = None
        if eta > 0:
            noise = step_noise[i] if step_noise is not None else rng.standard_normal(x.shape).astype(np.float32)
        x = ddim_step(x, eps, int(t), int(t) - stride, alpha_bar, eta, noise, clip_sample)
    return x


# --- EDM / Karras sampling (numpy) ---------------------------------------------------------------
def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """Karras et al.'s noise levels, descending from sigma_max to sigma_min, then a final 0:
    shape (num_steps + 1,). rho = 7 spends more steps at low noise."""
    if num_steps < 1:
        raise ValueError(f"EDM steps must be >= 1, got {num_steps}")
    ramp = np.linspace(0.0, 1.0, num_steps) if num_steps > 1 else np.zeros(1)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return np.append(inv**rho, 0.0)


def edm_preconditioning(sigma: float, sigma_data: float = 0.5) -> tuple[float, float, float, float]:
    """(c_skip, c_out, c_in, c_noise) of EDM: D(x) = c_skip x + c_out F(c_in x, c_noise), chosen so
    that F's input and training target have unit variance for data of std `sigma_data`."""
    s2, d2 = sigma * sigma, sigma_data * sigma_data
    return d2 / (s2 + d2), sigma * sigma_data / math.sqrt(s2 + d2), 1.0 / math.sqrt(s2 + d2), 0.25 * math.log(sigma)


def edm_denoise(net: StepFn, x: np.ndarray, sigma: float, sigma_data: float = 0.5) -> np.ndarray:
    """The denoised estimate D(x; sigma) from the raw network F (`net(c_in x, c_noise)`)."""
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data)
    f = net((c_in * x).astype(np.float32), np.full(x.shape[0], c_noise, np.float32))
    return c_skip * x + c_out * f


def edm_sample(
    net: StepFn,
    noise: np.ndarray,
    num_steps: int = 3,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    sigma_data: float = 0.5,
    method: str = "euler",
) -> np.ndarray:
    """Deterministic EDM sampling from x = sigma_max * noise (noise: standard normal (B, T, A)).

    "euler": one network call per step; "heun": adds a corrector call on every step but the last
    (2 * num_steps - 1 calls)."""
    if method not in ("euler", "heun"):
        raise ValueError(f"EDM method {method!r}; expected 'euler' or 'heun'")
    sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho)
    x = np.asarray(noise, np.float64) * sigmas[0]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        slope = (x - edm_denoise(net, x, float(sigma), sigma_data)) / sigma
        x_next = x + (sigma_next - sigma) * slope
        if method == "heun" and sigma_next > 0:
            slope_next = (x_next - edm_denoise(net, x_next, float(sigma_next), sigma_data)) / sigma_next
            x_next = x + (sigma_next - sigma) * 0.5 * (slope + slope_next)
        x = x_next
    return x.astype(np.float32)
