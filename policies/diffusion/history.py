"""Observation and action history of the diffusion policy (numpy only: the trainer and the runtime share it).

Time indexing of a sample at frame k (`config.py`): observation frames k-To+1 .. k condition the
denoiser, which predicts Tp action tokens starting at action k-To+1. Token To-1 is the action
commanded at frame k; tokens 0 .. To-2 are the past actions already executed.

PTP's past-token setting: the `past_tokens_in_loss` (P) past tokens nearest the present count in the
loss with the current and future ones; the earlier past tokens are hidden: they repeat the earliest
counted token, in training (before noising) and at every sampler step of the runtime, so neither
the loss nor the network input depends on them.
"""

from __future__ import annotations

from collections import deque
from typing import TypeVar

import numpy as np

Sequence = TypeVar("Sequence")  # a numpy array or a torch tensor (B, Tp, A)


def window_indices(length: int, n_obs_steps: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame k of an episode of `length` frames: observation rows (length, To) and action rows
    (length, Tp), both starting at k-To+1, clamped to 0 .. length-1 (edge frames repeat)."""
    k = np.arange(length)[:, None]
    obs = np.clip(k - n_obs_steps + 1 + np.arange(n_obs_steps)[None], 0, length - 1)
    act = np.clip(k - n_obs_steps + 1 + np.arange(horizon)[None], 0, length - 1)
    return obs, act


def future_rows(n_obs_steps: int, horizon: int) -> slice:
    """Tokens of the action window from the current action (To-1) to the end of the horizon."""
    return slice(n_obs_steps - 1, horizon)


def first_counted_token(n_obs_steps: int, past_tokens_in_loss: int) -> int:
    """Index of the earliest action token in the loss: To-1 (the current action) minus the past tokens."""
    return n_obs_steps - 1 - past_tokens_in_loss


def loss_mask(horizon: int, first_counted: int) -> np.ndarray:
    """(Tp,) bool: which action tokens count in the loss."""
    mask = np.zeros(horizon, dtype=bool)
    mask[first_counted:] = True
    return mask


def hold_uncounted_past(x: Sequence, first_counted: int) -> Sequence:
    """Action sequences (B, Tp, A), numpy or torch, with the past tokens before `first_counted`
    replaced by token `first_counted`, as if the window started there (a copy; `x` itself when
    `first_counted` is 0)."""
    if first_counted <= 0:
        return x
    x = x.copy() if isinstance(x, np.ndarray) else x.clone()
    x[:, :first_counted] = x[:, first_counted : first_counted + 1]
    return x


class FrameHistory:
    """The features (F,) of the To most recent frames of an episode; the first frame after `clear()`
    fills every slot (the window before the episode start repeats its first frame, as in training)."""

    def __init__(self, n_obs_steps: int) -> None:
        self.n_obs_steps = n_obs_steps
        self._frames: deque[np.ndarray] = deque(maxlen=n_obs_steps)

    def clear(self) -> None:
        self._frames.clear()

    def push(self, features: np.ndarray) -> np.ndarray:
        """Add this frame's features; returns the condition (To * F,), oldest frame first."""
        while len(self._frames) < self.n_obs_steps - 1:
            self._frames.append(features)
        self._frames.append(features)
        return np.concatenate(list(self._frames))
