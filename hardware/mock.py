"""Mock hardware, like ros2_control's `mock_components/GenericSystem`: state mirrors command.

The reported position is exactly what a JointTrajectoryController would command at that
instant (the same `TrajectoryExecutor` the sim uses: JTC's validation and sampling), so anything
upstream (safety filter, policy node, recorder) can be exercised end to end without physics or a
robot. A trajectory JTC refuses raises `TrajectoryRejected` and changes nothing.
"""

from __future__ import annotations

import numpy as np

from dexstack.hardware.interface import HardwareInterface, LifecycleState
from dexstack.hardware.profiles import RobotProfile
from dexstack.trajectory import ActionChunk, TrajectoryExecutor


class MockHardware(HardwareInterface):
    """A perfect robot: position = commanded position, velocity = its finite difference, effort 0."""

    def __init__(self, profile: RobotProfile, initial: np.ndarray | tuple[float, ...] | None = None) -> None:
        self.profile = profile
        q0 = np.asarray(profile.home if initial is None else initial, dtype=np.float64)
        if q0.shape != (profile.n_joints,) or not np.all(np.isfinite(q0)):
            raise ValueError(f"initial position must be {profile.n_joints} finite values, got {q0.tolist()}")
        self.executor = TrajectoryExecutor(
            profile.joint_names, q0, interpolate_from_desired_state=profile.jtc_interpolate_from_desired_state
        )
        self.state = LifecycleState.UNCONFIGURED
        self._last_t: float | None = None
        self._last_q = q0.copy()
        self._last_v = np.zeros(profile.n_joints)
        self.chunks_accepted = 0
        self.holds = 0

    def read(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position (rad|m), velocity (backward difference since the previous read), zero effort."""
        if self.state is LifecycleState.UNCONFIGURED:
            raise RuntimeError("read() before configure()")
        q = self.executor.sample(now)
        if self._last_t is not None and now > self._last_t:
            self._last_v = (q - self._last_q) / (now - self._last_t)
        elif self._last_t is None:
            self._last_v = np.zeros_like(q)
        # now <= last read time (clock jump or repeated read): keep the last velocity.
        self._last_t, self._last_q = float(now), q
        return q.copy(), self._last_v.copy(), np.zeros_like(q)

    def write(self, command: ActionChunk | None, now: float) -> int:
        """Execute a chunk (any joint order, profile joints only) with JTC's rules, or hold the
        current command on `None` (JTC's own hold, as on cancel). Raises RuntimeError when not
        active and `TrajectoryRejected` (a ValueError) for a trajectory JTC refuses, in which case
        the previous command keeps running."""
        if self.state is not LifecycleState.ACTIVE:
            raise RuntimeError(f"write() while {self.state}: activate the hardware first")
        if command is None:
            self.executor.hold(now)
            self.holds += 1
            return 0
        # State mirrors command, so the measured position is the command at `now`.
        kept = self.executor.set_chunk(command, now, measured=self.executor.sample(now))
        self.chunks_accepted += 1
        return kept

    @property
    def rejected(self) -> int:
        """Trajectories refused by JTC's rules since start."""
        return self.executor.rejected

    def deactivate(self, now: float) -> None:
        """Stop accepting commands and hold where the command is now."""
        if self.state is LifecycleState.ACTIVE:
            self.executor.hold(now)
        super().deactivate(now)
