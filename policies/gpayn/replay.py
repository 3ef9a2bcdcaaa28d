"""Fixed-capacity replay buffer for dict observations (numpy, preallocated).

One array per observation key (from an env's `observation_spec()`), for the observation and
the next observation, plus actions, rewards and two done flags: `terminated` (a true end of
the task: success, knocked over, IK failure; SAC does not bootstrap past it) and `truncated`
(the time limit; SAC bootstraps from next_obs). Storing next_obs explicitly costs memory
(twice the images) but keeps transitions independent of episode boundaries and of the ring's
wrap-around, which is what makes sampling and checkpointing simple and correct.

`keys` stores a subset of the observation (e.g. no `depth`, or precomputed features instead of
images). `keep_current()` makes the transitions stored so far permanent (G-PAYN's demonstrations):
later writes wrap around the rest of the ring, and `sample(..., kept_fraction=f)` draws a fixed
share f of every batch from the kept part and the rest from the newer transitions, as G-PAYN's
SAC samples half of each batch from its demonstration buffer. `save`/`load` write one .npz (atomically: temporary file then rename) holding the
filled part of the arrays, the write position and the spec.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

_FIELDS = ("action", "reward", "terminated", "truncated")


class ReplayBuffer:
    """Ring buffer of (obs, action, reward, next_obs, terminated, truncated) transitions."""

    def __init__(
        self, capacity: int, observation_spec: dict, action_dim: int, keys: tuple[str, ...] | None = None
    ) -> None:
        """observation_spec: {key: (shape, dtype)}; keys: the subset to store (default all)."""
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if not isinstance(action_dim, int) or action_dim < 1:
            raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
        keys = tuple(observation_spec) if keys is None else tuple(keys)
        unknown = [k for k in keys if k not in observation_spec]
        if unknown or not keys:
            raise ValueError(f"keys {unknown or keys} not in the observation spec {sorted(observation_spec)}")
        self.capacity, self.action_dim = capacity, action_dim
        self.spec = {k: (tuple(int(n) for n in observation_spec[k][0]), np.dtype(observation_spec[k][1])) for k in keys}
        self.obs = {k: np.zeros((capacity,) + shape, dtype) for k, (shape, dtype) in self.spec.items()}
        self.next_obs = {k: np.zeros((capacity,) + shape, dtype) for k, (shape, dtype) in self.spec.items()}
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, bool)
        self.truncated = np.zeros(capacity, bool)
        self._next = 0  # index the next transition is written to
        self._size = 0
        self._kept = 0  # the first `_kept` slots are never overwritten (keep_current)

    def __len__(self) -> int:
        return self._size

    def add(self, obs: dict, action, reward: float, next_obs: dict, terminated: bool, truncated: bool) -> None:
        """Store one transition (overwrites the oldest once full)."""
        self._check_obs(obs, "obs")
        self._check_obs(next_obs, "next_obs")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.action_dim,):
            raise ValueError(f"action must have shape ({self.action_dim},), got {action.shape}")
        self.add_batch(
            self._as_batch(obs),
            action[None],
            np.asarray([reward]),
            self._as_batch(next_obs),
            np.asarray([terminated]),
            np.asarray([truncated]),
        )

    @property
    def kept(self) -> int:
        """How many leading transitions are permanent (`keep_current`)."""
        return self._kept

    def keep_current(self) -> None:
        """Make every transition stored so far permanent: later writes overwrite only newer ones."""
        if self._size >= self.capacity:
            raise ValueError(f"keep_current: keeping all {self.capacity} slots leaves no room for new transitions")
        self._kept = self._size

    def _as_batch(self, obs: dict) -> dict:
        return {k: np.asarray(obs[k])[None] for k in self.spec}

    def add_batch(self, obs: dict, actions, rewards, next_obs: dict, terminated, truncated) -> None:
        """Store B transitions: each observation key (B, ...), actions (B, action_dim), rewards,
        terminated, truncated (B,)."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise ValueError(f"actions must have shape (B, {self.action_dim}), got {actions.shape}")
        n = actions.shape[0]
        if not np.isfinite(actions).all():
            raise ValueError("actions must be finite")
        rewards = np.asarray(rewards, dtype=np.float32)
        terminated, truncated = np.asarray(terminated), np.asarray(truncated)
        for name, arr in (("rewards", rewards), ("terminated", terminated), ("truncated", truncated)):
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        if not np.isfinite(rewards).all():
            raise ValueError("rewards must be finite")
        for label, o in (("obs", obs), ("next_obs", next_obs)):
            if not isinstance(o, dict):
                raise TypeError(f"{label} must be a dict of arrays, got {type(o).__name__}")
            for k, (shape, _) in self.spec.items():
                if k not in o:
                    raise ValueError(f"{label} has no key {k!r}")
                if np.shape(o[k]) != (n,) + shape:
                    raise ValueError(f"{label}[{k!r}] must have shape {(n,) + shape}, got {np.shape(o[k])}")
        ring = self.capacity - self._kept  # the slots new transitions cycle through
        if n > ring:  # only the last `ring` survive anyway
            sl = slice(n - ring, n)
            obs, next_obs = {k: v[sl] for k, v in obs.items()}, {k: v[sl] for k, v in next_obs.items()}
            actions, rewards, terminated, truncated = actions[sl], rewards[sl], terminated[sl], truncated[sl]
            n = ring
        idx = self._kept + (self._next - self._kept + np.arange(n)) % ring
        for k in self.spec:
            self.obs[k][idx] = obs[k]
            self.next_obs[k][idx] = next_obs[k]
        self.action[idx] = actions
        self.reward[idx] = rewards
        self.terminated[idx] = terminated.astype(bool)
        self.truncated[idx] = truncated.astype(bool)
        self._next = int(self._kept + (self._next - self._kept + n) % ring)
        self._size = min(self.capacity, self._size + n)

    def sample(self, batch_size: int, rng: np.random.Generator, kept_fraction: float = 0.0) -> dict:
        """Uniform sample with replacement: {"obs": {key: (B, ...)}, "next_obs": {...},
        "action" (B, A), "reward" (B,), "terminated" (B,), "truncated" (B,), "demo" (B,) (a kept
        row)}. With
        `kept_fraction` > 0 and kept transitions, round(B x kept_fraction) rows come from the kept
        part and the rest from the newer transitions (all from the kept part while there are none)."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not 0.0 <= kept_fraction <= 1.0:
            raise ValueError(f"kept_fraction must be in [0, 1], got {kept_fraction!r}")
        if kept_fraction > 0.0 and self._kept:
            newer = self._size - self._kept
            n_kept = batch_size if newer == 0 else int(round(batch_size * kept_fraction))
            idx = np.concatenate(
                [
                    rng.integers(0, self._kept, size=n_kept),
                    rng.integers(self._kept, self._size, size=batch_size - n_kept),
                ]
            )
        else:
            idx = rng.integers(0, self._size, size=batch_size)
        return {
            "obs": {k: v[idx] for k, v in self.obs.items()},
            "next_obs": {k: v[idx] for k, v in self.next_obs.items()},
            "action": self.action[idx],
            "reward": self.reward[idx],
            "terminated": self.terminated[idx],
            "truncated": self.truncated[idx],
            "demo": idx < self._kept,
        }

    def save(self, path: str | Path) -> None:
        """Write the filled part to `path` (.npz), atomically."""
        path = Path(path)
        order = self._chronological()
        arrays = {f"obs/{k}": v[order] for k, v in self.obs.items()}
        arrays |= {f"next_obs/{k}": v[order] for k, v in self.next_obs.items()}
        arrays |= {name: getattr(self, name)[order] for name in _FIELDS}
        meta = {
            "capacity": self.capacity,
            "action_dim": self.action_dim,
            "kept": self._kept,
            "spec": {k: [list(shape), dtype.str] for k, (shape, dtype) in self.spec.items()},
        }
        arrays["meta"] = np.array(json.dumps(meta))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> ReplayBuffer:
        """A buffer with the capacity, spec and transitions saved at `path` (oldest first)."""
        with np.load(Path(path), allow_pickle=False) as data:
            if "meta" not in data:
                raise ValueError(f"{path} is not a saved ReplayBuffer (no 'meta')")
            meta = json.loads(str(data["meta"]))
            spec = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in meta["spec"].items()}
            buffer = cls(int(meta["capacity"]), spec, int(meta["action_dim"]))
            kept = int(meta.get("kept", 0))
            for sl in (slice(0, kept), slice(kept, len(data["reward"]))):  # kept part first, then keep it
                if sl.stop > sl.start:
                    buffer.add_batch(
                        {k: data[f"obs/{k}"][sl] for k in spec},
                        data["action"][sl],
                        data["reward"][sl],
                        {k: data[f"next_obs/{k}"][sl] for k in spec},
                        data["terminated"][sl],
                        data["truncated"][sl],
                    )
                if sl.start == 0 and kept:
                    buffer.keep_current()
        return buffer

    def _chronological(self) -> np.ndarray:
        """Indices of the stored transitions, oldest first (the kept ones before all others)."""
        if self._size < self.capacity:
            return np.arange(self._size)
        ring = self.capacity - self._kept
        return np.concatenate([np.arange(self._kept), self._kept + (self._next - self._kept + np.arange(ring)) % ring])

    def _check_obs(self, obs: dict, label: str) -> None:
        if not isinstance(obs, dict):
            raise TypeError(f"{label} must be a dict of arrays, got {type(obs).__name__}")
        for k, (shape, _) in self.spec.items():
            if k not in obs:
                raise ValueError(f"{label} has no key {k!r}")
            if np.shape(obs[k]) != shape:
                raise ValueError(f"{label}[{k!r}] must have shape {shape}, got {np.shape(obs[k])}")
