"""Robot profiles: joint names, limits, controller and camera names (one per robot).

The sim builds its robot from a profile and the real robot's driver is described by the
same profile, so a policy manifest checked against a profile is valid for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dexstack import contract


@dataclass(frozen=True)
class CameraSpec:
    name: str
    width: int
    height: int
    hz: float = contract.CAMERA_HZ


@dataclass(frozen=True)
class RobotProfile:
    """What a robot exposes. Positions in radians (revolute) or metres (prismatic)."""

    name: str
    joint_names: tuple[str, ...]
    position_lower: tuple[float, ...]
    position_upper: tuple[float, ...]
    velocity_limit: tuple[float, ...]  # rad/s or m/s
    home: tuple[float, ...]  # a safe start configuration
    controller: str
    cameras: tuple[CameraSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for attr in ("position_lower", "position_upper", "velocity_limit", "home"):
            if len(getattr(self, attr)) != n:
                raise ValueError(f"profile {self.name}: {attr} has {len(getattr(self, attr))} entries, expected {n}")

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def lower(self) -> np.ndarray:
        return np.asarray(self.position_lower, dtype=np.float64)

    @property
    def upper(self) -> np.ndarray:
        return np.asarray(self.position_upper, dtype=np.float64)

    @property
    def vmax(self) -> np.ndarray:
        return np.asarray(self.velocity_limit, dtype=np.float64)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    @property
    def trajectory_topic(self) -> str:
        return contract.trajectory_topic(self.controller)

    @property
    def policy_output_topic(self) -> str:
        return contract.policy_output_topic(self.controller)

    def topics(self) -> list[contract.TopicSpec]:
        return contract.robot_topics(self.controller, self.camera_names)

    def camera(self, name: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"profile {self.name} has no camera {name!r}; cameras: {self.camera_names}")


# Franka Emika Panda (limits from Franka's published control parameters) with its parallel
# gripper exposed as one prismatic joint: the opening of each finger, 0..0.04 m.
PANDA = RobotProfile(
    name="panda",
    joint_names=(
        "panda_joint1", "panda_joint2", "panda_joint3", "panda_joint4",
        "panda_joint5", "panda_joint6", "panda_joint7", "panda_finger_joint1",
    ),
    position_lower=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973, 0.0),
    position_upper=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973, 0.04),
    velocity_limit=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61, 0.1),
    home=(0.0, -0.5, 0.0, -2.4, 0.0, 1.9, 0.785, 0.04),
    controller="arm_controller",
    cameras=(CameraSpec("wrist", 96, 96), CameraSpec("scene", 96, 96)),
)

PROFILES: dict[str, RobotProfile] = {PANDA.name: PANDA}


def get_profile(name: str) -> RobotProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown robot profile {name!r}; known: {sorted(PROFILES)}") from None
