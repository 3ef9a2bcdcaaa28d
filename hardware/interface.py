"""The hardware boundary, after ros2_control's `hardware_interface::SystemInterface`.

A driver goes through a small lifecycle: unconfigured -> `configure()` -> inactive ->
`activate(now)` -> active -> `deactivate(now)` -> inactive. While configured it can be
`read`; only while active does it accept commands through `write`. Mock hardware
(`dexstack.hardware.mock`) implements it; the MuJoCo sim core and real drivers are the
other implementations. Times are seconds on the caller's clock; positions are radians or
metres in the robot profile's joint order.
"""

from __future__ import annotations

import abc
import enum

import numpy as np

from dexstack.trajectory import ActionChunk


class LifecycleState(enum.StrEnum):
    UNCONFIGURED = "unconfigured"
    INACTIVE = "inactive"
    ACTIVE = "active"


class HardwareInterface(abc.ABC):
    """One robot's joints: read the measured state, write joint-trajectory commands."""

    state: LifecycleState = LifecycleState.UNCONFIGURED

    def configure(self) -> None:
        """Connect and allocate; after this `read` works."""
        self.state = LifecycleState.INACTIVE

    def activate(self, now: float) -> None:
        """Start accepting commands; the robot holds its current position until the first one."""
        if self.state is LifecycleState.UNCONFIGURED:
            raise RuntimeError("activate() before configure()")
        self.state = LifecycleState.ACTIVE

    def deactivate(self, now: float) -> None:
        """Stop accepting commands (the robot holds)."""
        if self.state is LifecycleState.ACTIVE:
            self.state = LifecycleState.INACTIVE

    @abc.abstractmethod
    def read(self, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Measured (position, velocity, effort) at `now`: rad|m, rad/s|m/s, Nm|N."""

    @abc.abstractmethod
    def write(self, command: ActionChunk | None, now: float) -> int:
        """Execute `command` from `now` with JointTrajectoryController semantics; `None` is a
        hold (cancel and keep the current command). Returns the number of points kept."""
