"""The one interface every policy family serves through (BRIEF §4).

A runtime is ROS-free and torch-free: it runs ONNX graphs with onnxruntime. The policy node
and in-process evaluation use the same runtime object, so their actions agree.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class ObservationError(ValueError):
    """An observation the policy must not act on: missing key, wrong shape or dtype, NaN/inf."""


class PolicyRuntime(Protocol):
    manifest: dict[str, Any]

    def reset(self) -> None:
        """Forget episode state (history buffers, executed actions)."""

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Return a chunk of absolute joint targets, shape (chunk_length, n_joints), in the
        order of manifest["outputs"]["joint_names"]; point i is due (i + 1) * dt after the
        observation's stamp. Raises ObservationError on bad input."""


def check_observation(observation: dict[str, np.ndarray], inputs: list[dict[str, Any]]) -> None:
    """Validate an observation against the manifest's inputs; raises ObservationError."""
    for spec in inputs:
        name = spec["name"]
        if name not in observation:
            raise ObservationError(f"observation lacks {name!r}")
        value = np.asarray(observation[name])
        if tuple(value.shape) != tuple(spec["shape"]):
            raise ObservationError(f"{name}: shape {tuple(value.shape)}, expected {tuple(spec['shape'])}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ObservationError(f"{name}: contains NaN or inf")


def load_runtime(policy_dir: str | Path, manifest: dict[str, Any]) -> PolicyRuntime:
    """Build the family's runtime (`dexstack.policies.<family>.runtime.Runtime`)."""
    family = manifest["family"]
    try:
        module = importlib.import_module(f"dexstack.policies.{family}.runtime")
    except ModuleNotFoundError as exc:
        raise ValueError(f"no runtime for policy family {family!r}") from exc
    return module.Runtime(Path(policy_dir), manifest)
