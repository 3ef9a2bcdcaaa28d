"""Serving runtime of the BC family: numpy + onnxruntime only (never torch).

`act(observation)` validates the observation against the manifest, normalises each input with
the statistics in the manifest into preallocated buffers, runs `policy.onnx` and turns the
normalised chunk back into absolute joint targets (radians / metres, in
`manifest["outputs"]["joint_names"]` order; point i is due (i + 1) * dt after the observation).
With `manifest["runtime"]["temporal_ensemble"]` it returns, per point, the weighted mean of this
chunk and the earlier chunks that cover the same time step (ACT's temporal ensembling).
The same object serves the policy node and in-process evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dexstack import contract
from dexstack.policies.common import normalization
from dexstack.policies.common.onnx_session import open_session
from dexstack.runtime import ObservationError, check_observation

# onnxruntime threads per session. The robot computer (and this 2-core dev machine) also runs the
# sim or drivers; a ~0.2M-parameter network at batch 1 gains little from a second thread.
THREADS_ENV = "DEXSTACK_ORT_THREADS"
DEFAULT_THREADS = 1


def _normalizer(norm: dict[str, Any] | None, where: str) -> Callable[[np.ndarray, np.ndarray], None]:
    """`fn(raw, out)` writes the normalised float32 input into `out` without allocating."""
    spec = normalization.parse(norm, where)
    if spec.type == "mean_std":
        mean, std = spec.mean, spec.std

        def fn(raw: np.ndarray, out: np.ndarray) -> None:
            np.subtract(raw, mean, out=out, casting="unsafe")
            np.divide(out, std, out=out)
    elif spec.type == "scale":
        scale, offset = spec.scale, np.float32(spec.offset)

        def fn(raw: np.ndarray, out: np.ndarray) -> None:
            np.multiply(raw, scale, out=out, casting="unsafe")
            if offset.any():
                np.add(out, offset, out=out)
    else:

        def fn(raw: np.ndarray, out: np.ndarray) -> None:
            out[...] = raw

    return fn


class Runtime:
    """BC policy runtime. State between calls: the past chunks (temporal ensembling) and the
    previous joint positions (joint-delta input); call `reset()` at the start of each episode and
    `act()` once per policy step (outputs.dt)."""

    def __init__(
        self,
        policy_dir: Path,
        manifest: dict[str, Any],
        threads: int | None = None,
        *,
        profile: Any = None,
        rate_hz: float | None = None,
    ) -> None:
        # The family registry's runtime signature (dexstack/families.py); a BC chunk is already joint
        # targets at outputs.dt, so neither the robot profile nor the node's rate changes it.
        del profile, rate_hz
        self.manifest = manifest
        self.policy_dir = Path(policy_dir)
        graph = self.policy_dir / manifest["graphs"]["policy"]
        self._session = open_session(graph, threads or int(os.environ.get(THREADS_ENV, DEFAULT_THREADS)))

        self._inputs: list[dict[str, Any]] = list(manifest["inputs"])
        expected = [spec["name"] for spec in self._inputs]
        # Optional: the joint motion over the last policy step, as an extra graph input.
        delta = (manifest.get("runtime") or {}).get("joint_delta")
        self._delta_input: str | None = delta["graph_input"] if delta else None
        graph_inputs = {i.name: i for i in self._session.get_inputs()}
        wanted = expected + ([self._delta_input] if self._delta_input else [])
        if sorted(graph_inputs) != sorted(wanted):
            raise ValueError(f"{graph.name} takes inputs {sorted(graph_inputs)}, manifest lists {sorted(wanted)}")
        self._rgb_names = [spec["name"] for spec in self._inputs if spec["kind"] == "rgb"]
        # One float32 buffer per input, batch 1, reused by every call.
        self._buffers = {spec["name"]: np.zeros((1, *spec["shape"]), np.float32) for spec in self._inputs}
        self._normalizers = {
            spec["name"]: _normalizer(spec.get("normalization"), f"input {spec['name']!r}") for spec in self._inputs
        }
        if self._delta_input:
            if contract.JOINT_POSITIONS not in expected:
                raise ValueError("runtime.joint_delta needs a joint_positions input")
            n = len(next(s for s in self._inputs if s["name"] == contract.JOINT_POSITIONS)["names"])
            self._buffers[self._delta_input] = np.zeros((1, n), np.float32)
            self._normalizers[self._delta_input] = _normalizer(delta.get("normalization"), "runtime.joint_delta")
            self._delta = np.zeros(n, np.float64)
        self._previous_q: np.ndarray | None = None
        self._output_name = self._session.get_outputs()[0].name

        out = manifest["outputs"]
        self.joint_names: list[str] = list(out["joint_names"])
        self.chunk_length = int(out["chunk_length"])
        self.dt = float(out["dt"])
        shape = (self.chunk_length, len(self.joint_names))
        chunk_mean, chunk_std = normalization.chunk_mean_std(out)
        self._chunk_mean = np.broadcast_to(chunk_mean, shape).copy()
        self._chunk_std = np.broadcast_to(chunk_std, shape).copy()
        self._relative_to = (out.get("chunk_normalization") or {}).get("relative_to")
        if self._relative_to is not None and self._relative_to not in expected:
            raise ValueError(f"outputs.chunk_normalization.relative_to {self._relative_to!r} is not an input")
        self._feeds = self._buffers  # onnxruntime reads the buffers directly

        ensemble = (manifest.get("runtime") or {}).get("temporal_ensemble")
        self._ensemble = ensemble is not None
        if self._ensemble:
            h = self.chunk_length
            # _past[a] = the chunk predicted a calls ago; its point a + i is due with our point i.
            self._past = np.zeros((h, *shape), np.float64)
            self._valid = np.zeros(h, bool)
            self._age_weight = np.exp(float(ensemble["decay"]) * np.arange(h))
            self._covers = [np.arange(h - i) for i in range(h)]  # ages whose chunk still reaches point i

    def reset(self) -> None:
        """Start an episode: forget the previous joint positions and the past chunks."""
        self._previous_q = None
        if self._ensemble:
            self._valid[:] = False

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Observation (contract keys: joint positions (J,), rgb (H, W, 3) uint8 per camera) ->
        (chunk_length, J) absolute joint targets, float64. Raises ObservationError on bad input."""
        check_observation(observation, self._inputs)
        for name in self._rgb_names:
            if np.asarray(observation[name]).dtype != np.uint8:
                raise ObservationError(f"{name}: dtype {np.asarray(observation[name]).dtype}, expected uint8 rgb")
        q = np.asarray(observation[contract.JOINT_POSITIONS], np.float64) if self._delta_input else None
        if self._delta_input:
            if self._previous_q is None:
                self._delta[:] = 0.0
            else:
                np.subtract(q, self._previous_q, out=self._delta)
        for name, buf in self._buffers.items():
            self._normalizers[name](self._delta if name == self._delta_input else observation[name], buf[0])
        (out,) = self._session.run([self._output_name], self._feeds)
        chunk = out[0] * self._chunk_std + self._chunk_mean
        if self._relative_to is not None:
            chunk += np.asarray(observation[self._relative_to], np.float64)
        if self._delta_input:  # only after a successful call: a rejected observation changes nothing
            self._previous_q = q.copy()
        return self._ensembled(chunk) if self._ensemble else chunk

    def _ensembled(self, chunk: np.ndarray) -> np.ndarray:
        """Weighted mean, per point, of this chunk and the past chunks that cover the same time."""
        self._past[1:] = self._past[:-1].copy()
        self._valid[1:] = self._valid[:-1].copy()
        self._past[0], self._valid[0] = chunk, True
        out = np.empty_like(chunk)
        for i, ages in enumerate(self._covers):
            w = self._age_weight[ages] * self._valid[ages]
            out[i] = w @ self._past[ages, ages + i] / w.sum()
        return out
