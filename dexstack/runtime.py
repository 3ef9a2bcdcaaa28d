"""The one interface every policy family serves through (BRIEF §4, docs/ADDING_A_FAMILY.md).

A runtime is ROS-free, torch-free and simulator-free: it runs ONNX graphs with onnxruntime (and
whatever numpy a family needs). The policy node and in-process evaluation use the same runtime
object, so their actions agree. Every family answers in joint space: a family that thinks in
Cartesian space or in normalised actions converts inside its runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np

from dexstack.families import get_family, resolve

if TYPE_CHECKING:
    from dexstack.hardware.profiles import RobotProfile


class ObservationError(ValueError):
    """An observation the policy must not act on: missing key, wrong shape or dtype, NaN/inf.
    The policy node holds with this message, at diagnostics level `level`."""

    level: ClassVar[Literal["WARN", "ERROR"]] = "ERROR"


class AwaitingInput(ObservationError):
    """An input the policy waits for (e.g. a pose not yet published): a WARN hold, not an error."""

    level: ClassVar[Literal["WARN", "ERROR"]] = "WARN"


class PolicyRuntime(Protocol):
    manifest: dict[str, Any]  # the verified manifest it was built from

    def reset(self) -> None:
        """Forget episode state (history buffers, executed actions): new episode, re-enabled, or
        the clock jumped back."""

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        """Return a chunk of absolute joint targets, shape (chunk_length, n_joints), in the
        order of manifest["outputs"]["joint_names"]; point i is due (i + 1) * outputs.dt after
        the observation's stamp. Raises ObservationError (or a subclass) on input it must not
        act on; the node turns any other exception into an ERROR hold."""


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


def load_runtime(
    policy_dir: str | Path, manifest: dict[str, Any], *, profile: RobotProfile, rate_hz: float | None = None
) -> PolicyRuntime:
    """Build the runtime of the manifest's family (the registry's `Family.runtime`) for the robot
    `profile`; `rate_hz`: how often `act` will be called (None: once per outputs.dt). Raises
    KeyError for an unknown family."""
    family = get_family(manifest["family"])
    return resolve(family.runtime)(Path(policy_dir), manifest, profile=profile, rate_hz=rate_hz)
