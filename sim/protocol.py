"""What a simulated robot offers the sim node and the evaluators: the `SimCoreProtocol`.

Two cores implement it: the Panda's (`sim/core.py`, `SimCore`, the Panda tasks) and the Adroit
hand's (`sim/cores.py`, `HandCore`, the grasp task). `sim.cores.make_core(task, profile,
render, camera_size, options)` builds the one a task runs on (`dexstack/tasks.json`); a task's
options (the grasp task's `object`) are fixed when its core is built, since the object is part of
the compiled scene, and each `reset(seed)` draws the episode from the seed. Time is simulation
time in seconds since the last `reset`; joint vectors are in the profile's joint order;
positions in the world (= robot base) frame, metres.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from dexstack.hardware.profiles import RobotProfile
from dexstack.trajectory import ActionChunk, TrajectoryExecutor


@runtime_checkable
class SimCoreProtocol(Protocol):
    profile: RobotProfile
    dt: float  # physics step, seconds
    executor: TrajectoryExecutor  # executes submitted chunks (JointTrajectoryController semantics)
    task: Any  # the task object: name, instruction, max_time_s, success_hold_s, success()
    divergence: str | None  # why the physics diverged this episode (stepping then stops until reset), or None

    @property
    def time(self) -> float: ...

    @property
    def camera_names(self) -> tuple[str, ...]: ...

    def reset(self, seed: int) -> str | None:
        """Start an episode from `seed` (the task's reset: object placement and its options).
        Returns why the episode does not start as the task plans it (to report), or None."""

    def submit(self, chunk: ActionChunk) -> int:
        """Execute `chunk` from now on; returns the points kept."""

    def hold(self) -> None:
        """Stop the active trajectory and hold the current command."""

    def step(self, n: int = 1) -> None:
        """Advance `n` physics steps, each tracking the executor's command at that time."""

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity and actuator effort, profile order."""

    def sensors(self) -> dict[str, np.ndarray]:
        """Other proprioception by kind, e.g. "tactile": (n_pads,) normal force (N) per pad in
        `profile.tactile_pads` order; empty for a robot without such sensors."""

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The task object's position (3,) m and quaternion wxyz (4,)."""

    def render(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) uint8 and depth (H, W) float32 metres along the optical axis (0 = no return)."""

    def segmentation(self, camera: str) -> np.ndarray:
        """(H, W, 2) int32 (object id, object type) of the nearest surface, -1 for background."""

    def camera_intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """Pinhole fx, fy, cx, cy in pixels (pixel centres at integer coordinates, as in ROS)."""

    def camera_pose(self, camera: str) -> np.ndarray:
        """(4, 4) transform from the camera's optical frame (x right, y down, z forward) to the world."""

    def close(self) -> None:
        """Release the GL contexts."""
