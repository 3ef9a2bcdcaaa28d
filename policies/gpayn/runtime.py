"""The G-PAYN actor: numpy + onnxruntime only (never torch).

`act(observation)` takes the actor's observation, GraspEnv's keys as the manifest's
`runtime.observation` lists them (vectors and the uint8 image), validates it (shapes, uint8
image, NaN/inf: `ObservationError`), normalises each vector with the listed statistics, encodes
the image with `encoder.onnx` into the visual features and normalises those (`runtime.visual`),
runs `actor.onnx` and returns the deterministic action (A,) in [-1, 1], A = the length of
`runtime.action.names`. It holds no state between calls.

What the action commands is `action.py`'s business, applied by GraspEnv in training and
evaluation and by `serving.py` on the robot, which also builds this observation from the raw
robot inputs: `serving.make_runtime` is the family's runtime, this class is the part of it that
in-process evaluation drives directly with GraspEnv's observations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dexstack.policies.common.onnx_session import open_session
from dexstack.runtime import ObservationError, check_observation

THREADS_ENV = "DEXSTACK_ORT_THREADS"
DEFAULT_THREADS = 1  # a few-hundred-k-parameter MLP and a small CNN at batch 1: one thread is enough


def _mean_std(norm: dict[str, Any] | None, dim: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 (mean, std) of a mean_std normalisation, broadcast to (dim,)."""
    if not isinstance(norm, dict) or norm.get("type") != "mean_std":
        raise ValueError(f"{where}: expected a mean_std normalization, got {norm!r}")
    mean = np.broadcast_to(np.asarray(norm["mean"], np.float32), (dim,)).copy()
    std = np.broadcast_to(np.asarray(norm["std"], np.float32), (dim,)).copy()
    if not (np.all(np.isfinite(mean)) and np.all(std > 0)):
        raise ValueError(f"{where}: mean must be finite and std > 0")
    return mean, std


class Runtime:
    """G-PAYN actor: observation dict (GraspEnv's keys) -> action (A,) in [-1, 1]. Stateless."""

    def __init__(self, policy_dir: str | Path, manifest: dict[str, Any], threads: int | None = None) -> None:
        self.manifest = manifest
        self.policy_dir = Path(policy_dir)
        threads = threads or int(os.environ.get(THREADS_ENV, DEFAULT_THREADS))
        graphs = manifest["graphs"]
        rt = manifest.get("runtime") or {}
        try:
            self._actor_keys: list[str] = list(rt["actor_inputs"])
        except KeyError:
            raise ValueError("manifest runtime lacks 'actor_inputs' (gpayn runtime settings)") from None
        self._actor = open_session(self.policy_dir / graphs["actor"], threads)
        got = sorted(i.name for i in self._actor.get_inputs())
        if got != sorted(self._actor_keys):
            raise ValueError(
                f"{graphs['actor']} takes inputs {got}, manifest runtime.actor_inputs lists {sorted(self._actor_keys)}"
            )
        self._inputs: list[dict[str, Any]] = list(rt["observation"])
        by_name = {spec["name"]: spec for spec in self._inputs}

        # The visual features: the encoder's output for the image input, normalised like a vector.
        visual = rt.get("visual")
        self._encoder = None
        self._visual_key: str | None = None
        if visual is not None:
            self._visual_key, self._image_key = visual["key"], visual["image_input"]
            image_spec = by_name.get(self._image_key)
            if image_spec is None or image_spec["kind"] != "rgb":
                raise ValueError(
                    f"runtime.visual.image_input {self._image_key!r} is not an rgb key of runtime.observation"
                )
            self._encoder = open_session(self.policy_dir / graphs["encoder"], threads)
            self._image_scale = np.float32(image_spec["normalization"]["scale"])
            self._visual_norm = _mean_std(visual["normalization"], int(visual["feature_dim"]), "runtime.visual")
            self._encoder_input = self._encoder.get_inputs()[0].name
            self._encoder_output = self._encoder.get_outputs()[0].name
            self._image_feed = np.zeros((1, *image_spec["shape"]), np.float32)

        self._norms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for key in self._actor_keys:
            if key == self._visual_key:
                continue
            if key not in by_name:
                raise ValueError(f"actor input {key!r} is neither a runtime.observation key nor the visual key")
            spec = by_name[key]
            self._norms[key] = _mean_std(spec.get("normalization"), int(spec["shape"][-1]), f"input {key!r}")

        self.action_dim = int(rt["action"]["dim"])
        self._action_output = self._actor.get_outputs()[0].name

    def reset(self) -> None:
        """Nothing to forget: the actor sees only the current observation."""

    def encode(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The raw (unnormalised) visual features (F,) float32 of the observation's image, as the
        trainer stores them under the visual key. Raises ObservationError on a bad image."""
        if self._encoder is None:
            raise ValueError("this policy has no image encoder")
        self._check(observation)
        np.multiply(observation[self._image_key], self._image_scale, out=self._image_feed[0], casting="unsafe")
        (features,) = self._encoder.run([self._encoder_output], {self._encoder_input: self._image_feed})
        return features[0]

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Raw observation {input name: value} (vectors float, image (H, W, 3) uint8) -> action (A,)
        float64 in [-1, 1]. Raises ObservationError on bad input, ValueError on a non-finite action."""
        self._check(observation)
        feeds = {}
        for key, (mean, std) in self._norms.items():
            feeds[key] = ((np.asarray(observation[key], np.float32) - mean) / std)[None]
        if self._encoder is not None:
            mean, std = self._visual_norm
            feeds[self._visual_key] = ((self.encode(observation) - mean) / std)[None]
        (action,) = self._actor.run([self._action_output], feeds)
        action = np.asarray(action[0], np.float64)
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"actor.onnx produced {action!r}, expected {self.action_dim} finite values")
        return action

    def _check(self, observation: dict[str, np.ndarray]) -> None:
        if not isinstance(observation, dict):
            raise ObservationError(f"observation must be a dict {{name: array}}, got {type(observation).__name__}")
        check_observation(observation, self._inputs)
        for spec in self._inputs:
            value = np.asarray(observation[spec["name"]])
            if spec["kind"] == "rgb" and value.dtype != np.uint8:
                raise ObservationError(f"{spec['name']}: dtype {value.dtype}, expected uint8 rgb")
            if spec["kind"] != "rgb" and value.dtype.kind not in "fiu":
                raise ObservationError(f"{spec['name']}: dtype {value.dtype} is not numeric")
