"""PTP test-time self-verification (numpy only; runs inside the serving runtime).

A long-context policy trained with past-token prediction also predicts the actions it already
executed. Sampling N candidate sequences for one observation window and keeping the one whose
predicted past best matches the actions the robot actually executed picks the candidate most
consistent with the episode so far (PTP, "Learning Long-Context Diffusion Policies via
Past-Token Prediction").

Time indexing (the runtime's): the sample at policy step k predicts Tp action tokens starting at
step k-To+1; token To-1 is the action commanded now. The `past_tokens_in_loss` (P) past tokens
nearest the present, indices [To-1-P, To-1), were trained and are the actions commanded at steps
k-P .. k-1, i.e. the first action returned by each of the last P `act()` calls (the runtime is
called once per policy period, so only a chunk's first action executes before it is replaced).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

DEFAULT_CANDIDATES = 8


def select_candidate(
    candidates: np.ndarray, executed_past: np.ndarray, first_past_index: int
) -> tuple[int, np.ndarray]:
    """The candidate whose predicted past best matches the executed actions.

    candidates (N, Tp, A) and executed_past (P, A) are normalised actions (the denoiser's space,
    so every joint weighs alike); candidate tokens [first_past_index, first_past_index + P) are
    compared with executed_past, oldest first. Returns (index of the lowest error, errors (N,)
    float64: mean squared error over the P tokens and A joints). Ties go to the lowest index."""
    candidates = np.asarray(candidates)
    executed_past = np.asarray(executed_past)
    if candidates.ndim != 3 or candidates.shape[0] < 1:
        raise ValueError(f"candidates must be (N >= 1, Tp, A), got shape {candidates.shape}")
    if executed_past.ndim != 2 or executed_past.shape[0] < 1 or executed_past.shape[1] != candidates.shape[2]:
        raise ValueError(f"executed_past must be (P >= 1, A={candidates.shape[2]}), got shape {executed_past.shape}")
    n_past = executed_past.shape[0]
    if not 0 <= first_past_index <= candidates.shape[1] - n_past:
        raise ValueError(
            f"past tokens [{first_past_index}, {first_past_index + n_past}) do not fit in the "
            f"horizon of {candidates.shape[1]} tokens"
        )
    if not (np.all(np.isfinite(candidates)) and np.all(np.isfinite(executed_past))):
        raise ValueError("candidates and executed_past must be finite")
    predicted = candidates[:, first_past_index : first_past_index + n_past].astype(np.float64)
    errors = ((predicted - executed_past.astype(np.float64)[None]) ** 2).mean(axis=(1, 2))
    return int(np.argmin(errors)), errors


def num_candidates(setting: Any) -> int:
    """manifest["runtime"]["self_verification"] -> N candidates: an int N >= 2, `true` for the
    default, or {"num_candidates": N}."""
    if setting is True:
        return DEFAULT_CANDIDATES
    if isinstance(setting, dict):
        unknown = sorted(set(setting) - {"num_candidates"})
        if unknown:
            raise ValueError(f"runtime.self_verification has unknown keys {unknown}; known: ['num_candidates']")
        setting = setting.get("num_candidates", DEFAULT_CANDIDATES)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 2:
        raise ValueError(f"runtime.self_verification: number of candidates must be an integer >= 2, got {setting!r}")
    return setting


class SelfVerifier:
    """History of the executed (normalised) actions of the current episode and the choice among
    candidates. Inactive (candidate 0) until the history covers the P trained past tokens."""

    def __init__(self, setting: Any, first_past_index: int, past_tokens: int) -> None:
        self.num_candidates = num_candidates(setting)
        if past_tokens < 1:
            raise ValueError(
                "runtime.self_verification needs a policy trained with past-token prediction "
                "(past_tokens_in_loss >= 1); this policy predicts no past actions to verify"
            )
        self.first_past_index = first_past_index
        self.past_tokens = past_tokens
        self._executed: deque[np.ndarray] = deque(maxlen=past_tokens)
        self.last_errors: np.ndarray | None = None  # errors of the latest active choice; None while inactive

    @property
    def active(self) -> bool:
        """True once the history holds the P executed actions the past tokens predict."""
        return len(self._executed) == self.past_tokens

    def executed_past(self) -> np.ndarray:
        """(len, A) the executed normalised actions held, oldest first."""
        return np.stack(list(self._executed))

    def choose(self, candidates: np.ndarray) -> int:
        """Index of the candidate (N, Tp, A normalised) to execute: the best verified one once active, else 0."""
        if not self.active:
            self.last_errors = None
            return 0
        index, self.last_errors = select_candidate(candidates, self.executed_past(), self.first_past_index)
        return index

    def record(self, executed_action: np.ndarray) -> None:
        """Append the normalised action (A,) executed this policy step."""
        self._executed.append(np.array(executed_action, np.float32))

    def reset(self) -> None:
        """Start an episode: forget the executed actions."""
        self._executed.clear()
        self.last_errors = None
