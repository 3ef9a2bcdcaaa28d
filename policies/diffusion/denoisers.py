"""Conditional denoisers for action sequences (torch; training, export and reference only).

Both take `forward(noisy_actions (B, T, A), timestep (B,), cond (B, C), *extra) -> (B, T, A)`:
`noisy_actions` are normalised actions plus noise (T policy steps, A joints in the manifest's
order), `timestep` is the DDPM step index (int or float) or, for an EDM-trained model, c_noise
= log(sigma) / 4, `cond` is the global condition (observation features of the To frames), and
`extra` the optional extra condition vectors (B, D_i), one per entry of `extra_cond_dims`, in its
order (e.g. language features). What the output means (noise eps, or the EDM network output F) is
the scheduler's business.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalStepEmbedding(nn.Module):
    """Diffusion step (B,) -> (B, dim): sin/cos at geometrically spaced frequencies 1 .. 1e-4."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"step embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        angles = timestep.to(torch.float32)[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def step_mlp(embed_dim: int) -> nn.Sequential:
    """Sinusoidal embedding followed by a small MLP (learned mixing of the frequencies)."""
    return nn.Sequential(
        SinusoidalStepEmbedding(embed_dim),
        nn.Linear(embed_dim, 4 * embed_dim),
        nn.Mish(),
        nn.Linear(4 * embed_dim, embed_dim),
    )


# --- 1-D temporal UNet -------------------------------------------------------------------------
class ConvNormMish(nn.Sequential):
    """Conv1d over time + GroupNorm + Mish; keeps the sequence length."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, groups: int) -> None:
        super().__init__(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(min(groups, out_ch), out_ch),
            nn.Mish(),
        )


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; between them the features are scaled and shifted per channel by a linear
    map of the global condition (FiLM), so every layer sees the observation and the step."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.block1 = ConvNormMish(in_ch, out_ch, kernel_size, groups)
        self.block2 = ConvNormMish(out_ch, out_ch, kernel_size, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        scale, shift = self.film(cond)[:, :, None].chunk(2, dim=1)
        h = self.block2(h * scale + shift)
        return h + self.skip(x)


def extra_projections(extra_cond_dims: dict[str, int] | None, out_dim: int) -> nn.ModuleDict:
    """One linear map per extra condition vector to `out_dim`: a wide vector (a 768-d language
    embedding) is compressed once instead of widening every FiLM layer. Empty without extras (no
    parameters, no random draws: the network's initial weights are unchanged)."""
    return nn.ModuleDict({name: nn.Linear(dim, out_dim) for name, dim in (extra_cond_dims or {}).items()})


class ConditionalUnet1D(nn.Module):
    """1-D UNet over the time axis with FiLM conditioning (the Diffusion Policy CNN design).

    Each level halves the sequence length (strided conv) and the decoder doubles it back
    (transposed conv) with skip connections, so T must be divisible by 2 ** (levels - 1). The FiLM
    condition is [step embedding, cond, projected extra conditions...].
    """

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        step_embed_dim: int = 128,
        down_dims: tuple[int, ...] = (128, 256, 512),
        kernel_size: int = 5,
        groups: int = 8,
        extra_cond_dims: dict[str, int] | None = None,
        extra_cond_embed_dim: int = 64,
    ) -> None:
        super().__init__()
        self.action_dim, self.cond_dim = action_dim, cond_dim
        self.time_divisor = 2 ** (len(down_dims) - 1)
        self.step_embedding = step_mlp(step_embed_dim)
        n_extra = len(extra_cond_dims or {})
        film_dim = step_embed_dim + cond_dim + n_extra * extra_cond_embed_dim
        dims = [action_dim, *down_dims]
        levels = list(zip(dims[:-1], dims[1:], strict=True))

        def block(i: int, o: int) -> FiLMResidualBlock:
            return FiLMResidualBlock(i, o, film_dim, kernel_size, groups)

        self.down = nn.ModuleList()
        for n, (i, o) in enumerate(levels):
            last = n == len(levels) - 1
            self.down.append(
                nn.ModuleList(
                    [block(i, o), block(o, o), nn.Identity() if last else nn.Conv1d(o, o, 3, stride=2, padding=1)]
                )
            )
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        for i, o in reversed(levels[1:]):  # one upsampling per downsampling
            self.up.append(
                nn.ModuleList([block(2 * o, i), block(i, i), nn.ConvTranspose1d(i, i, 4, stride=2, padding=1)])
            )
        self.head = nn.Sequential(
            ConvNormMish(down_dims[0], down_dims[0], kernel_size, groups), nn.Conv1d(down_dims[0], action_dim, 1)
        )
        self.extra_cond = extra_projections(extra_cond_dims, extra_cond_embed_dim)  # last: see extra_projections

    def forward(
        self, noisy_actions: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor, *extra: torch.Tensor
    ) -> torch.Tensor:
        extra_features = [proj(x) for proj, x in zip(self.extra_cond.values(), extra, strict=True)]
        film = torch.cat([self.step_embedding(timestep), cond, *extra_features], dim=-1)
        x = noisy_actions.transpose(1, 2)  # (B, A, T): channels = joints, convolve over time
        skips = []
        for res1, res2, downsample in self.down:
            x = res2(res1(x, film), film)
            skips.append(x)
            x = downsample(x)
        for res in self.mid:
            x = res(x, film)
        for res1, res2, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(res2(res1(x, film), film))
        return self.head(x).transpose(1, 2)


# --- causal time-series transformer ------------------------------------------------------------
class CausalTransformerDenoiser(nn.Module):
    """Action tokens attend causally to earlier action tokens and freely to condition tokens.

    Condition tokens: one for the diffusion step, then `cond_tokens` for the observation (the
    condition vector is split into `cond_tokens` equal parts, e.g. one per observation frame), then
    one per extra condition vector.
    A pre-norm transformer decoder (self-attention with a causal mask, cross-attention to the
    condition tokens) maps the T action tokens to T outputs.
    """

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        horizon: int,
        d_model: int = 256,
        n_heads: int = 4,
        n_layers: int = 6,
        cond_tokens: int = 1,
        step_embed_dim: int = 128,
        dropout: float = 0.0,
        extra_cond_dims: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if cond_dim % cond_tokens:
            raise ValueError(f"cond_dim={cond_dim} is not divisible into cond_tokens={cond_tokens} tokens")
        self.action_dim, self.cond_dim, self.horizon, self.cond_tokens = action_dim, cond_dim, horizon, cond_tokens
        self.action_in = nn.Linear(action_dim, d_model)
        self.action_pos = nn.Parameter(torch.zeros(1, horizon, d_model))
        self.step_embedding = nn.Sequential(step_mlp(step_embed_dim), nn.Linear(step_embed_dim, d_model))
        self.cond_in = nn.Linear(cond_dim // cond_tokens, d_model)
        self.cond_pos = nn.Parameter(torch.zeros(1, 1 + cond_tokens, d_model))
        self.cond_mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.Mish(), nn.Linear(4 * d_model, d_model))
        layer = nn.TransformerDecoderLayer(
            d_model, n_heads, 4 * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, n_layers)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, action_dim)
        # Additive mask: -inf above the diagonal, so token t sees tokens 0..t only.
        self.register_buffer(
            "causal_mask", torch.triu(torch.full((horizon, horizon), float("-inf")), diagonal=1), persistent=False
        )
        nn.init.normal_(self.action_pos, std=0.02)
        nn.init.normal_(self.cond_pos, std=0.02)
        # Created last, and only with extras: without them the weights and their names are unchanged.
        self.extra_cond = extra_projections(extra_cond_dims, d_model)
        if self.extra_cond:
            self.extra_pos = nn.Parameter(torch.zeros(1, len(self.extra_cond), d_model))
            nn.init.normal_(self.extra_pos, std=0.02)

    def forward(
        self, noisy_actions: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor, *extra: torch.Tensor
    ) -> torch.Tensor:
        b, t, _ = noisy_actions.shape
        if t != self.horizon:
            raise ValueError(f"transformer denoiser built for horizon {self.horizon}, got {t} action tokens")
        step_token = self.step_embedding(timestep)[:, None, :]
        obs_tokens = self.cond_in(cond.reshape(b, self.cond_tokens, self.cond_dim // self.cond_tokens))
        extra_tokens = [proj(x)[:, None, :] for proj, x in zip(self.extra_cond.values(), extra, strict=True)]
        tokens, pos = [step_token, obs_tokens, *extra_tokens], self.cond_pos
        if extra_tokens:
            pos = torch.cat([pos, self.extra_pos], dim=1)
        memory = self.cond_mlp(torch.cat(tokens, dim=1) + pos)
        x = self.action_in(noisy_actions) + self.action_pos
        x = self.decoder(x, memory, tgt_mask=self.causal_mask)
        return self.head(self.norm(x))
