"""What a G-PAYN action means, once: GraspEnv (training) and serving (the policy node) both apply
actions through this module, so the meaning cannot drift between them.

Action (float, [-1, 1], `ACTION_DIM` = 11, names `ACTION_NAMES`), each a step per action period:
- [0:3] palm translation in the world frame, x `MAX_TRANSLATION` (1 cm);
- [3:6] palm rotation vector in the world frame about the palm's origin, x `MAX_ROTATION` (0.05 rad);
- [6:11] change of each finger's closing fraction (thumb, index, middle, ring, little), x
  `MAX_FINGER_DELTA`, along the finger's open -> closed line (`hardware/hand_synergy.py`).
The palm command is integrated into a target pose (`PalmTarget`) that inverse kinematics
(`hardware/kinematics.py`, with the hand at its measured joints) turns into arm joint targets;
the joint targets are IK's arm joints, then the fingers' synergy targets.

Numpy, scipy and the robot's kinematics only: no torch, no simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from dexstack.hardware.hand_synergy import (
    ACTION_DIM,
    ARM_DIM,
    FINGER_DIM,
    FINGERS,
    MAX_FINGER_DELTA,
    MAX_ROTATION,
    MAX_TRANSLATION,
    finger_fractions,
    finger_targets,
)
from dexstack.hardware.kinematics import IKResult, RobotKinematics

ACTION_NAMES: tuple[str, ...] = (
    "palm_dx",
    "palm_dy",
    "palm_dz",
    "palm_rx",
    "palm_ry",
    "palm_rz",
    *(f"close_{pad}" for pad in FINGERS),
)
ACTION_SCALES: tuple[float, ...] = (MAX_TRANSLATION,) * 3 + (MAX_ROTATION,) * 3 + (MAX_FINGER_DELTA,) * FINGER_DIM


class IKFailed(RuntimeError):
    """The commanded palm pose is out of the arm's reach: the caller must hold."""


def check_action(action: Any, dim: int = ACTION_DIM) -> np.ndarray:
    """The action as float64 (dim,) clipped to [-1, 1]; TypeError if not numeric, ValueError for a
    wrong shape or non-finite values."""
    try:
        a = np.asarray(action, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"action must be a numeric array of {dim} values, got {type(action).__name__}") from exc
    if a.shape != (dim,):
        raise ValueError(
            f"action must have shape ({dim},) (3 palm translation, 3 palm rotation, 5 fingers), got {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"action must be finite, got {a}")
    return np.clip(a, -1.0, 1.0)


def integrate_action(
    position: np.ndarray,
    quaternion: np.ndarray,
    fractions: np.ndarray,
    action: np.ndarray,
    scales: np.ndarray,
    step_fraction: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The palm target (position m, quaternion wxyz, world) moved by action[0:3] x scale and turned
    by the world-frame rotation vector action[3:6] x scale, and the five closing fractions changed
    by action[6:11] x scale, clipped to [0, 1]; all steps times `step_fraction` (the part of one
    action period this call covers)."""
    step = np.asarray(action, dtype=float) * np.asarray(scales, dtype=float) * float(step_fraction)
    new_position = np.asarray(position, dtype=float) + step[:3]
    turn = Rotation.from_rotvec(step[3:ARM_DIM])
    new_quaternion = (turn * Rotation.from_quat(quaternion, scalar_first=True)).as_quat(scalar_first=True)
    new_fractions = np.clip(np.asarray(fractions, dtype=float) + step[ARM_DIM:], 0.0, 1.0)
    return new_position, new_quaternion, new_fractions


@dataclass
class PalmTarget:
    """The commanded state: palm target pose (world), arm joints that reach it, finger fractions."""

    position: np.ndarray
    quaternion: np.ndarray
    arm_q: np.ndarray
    fractions: np.ndarray

    def joint_targets(self) -> np.ndarray:
        """ADROIT joint targets (30,): the arm joints, then the fingers' synergy targets."""
        return np.concatenate([self.arm_q, finger_targets(self.fractions)])


def apply_action(
    kinematics: RobotKinematics,
    target: PalmTarget,
    action: Any,
    hand_q: np.ndarray,
    scales: np.ndarray | tuple[float, ...] = ACTION_SCALES,
    step_fraction: float = 1.0,
) -> tuple[PalmTarget, IKResult]:
    """The commanded state after `action` (checked, clipped) for `step_fraction` of its period,
    and IK's result for the new palm target, solved from the target's arm joints with the hand at
    `hand_q` (24,), its measured joints (the policy was trained on that). When IK fails, the palm
    target and arm joints stay where they were and only the fingers move: the caller decides
    whether to act on that (GraspEnv does and ends the episode; serving holds)."""
    a = check_action(action)
    position, quaternion, fractions = integrate_action(
        target.position, target.quaternion, target.fractions, a, scales, step_fraction
    )
    ik = kinematics.solve(position, quaternion, target.arm_q, rest=np.concatenate([target.arm_q, hand_q]))
    if ik.success:
        return PalmTarget(position, quaternion, ik.arm_q.copy(), fractions), ik
    return PalmTarget(target.position, target.quaternion, target.arm_q, fractions), ik


class PalmCommander:
    """Actions -> ADROIT joint targets (30,) on the robot, keeping the commanded state.

    It starts from the measured state (palm pose by forward kinematics, closing fractions
    projected from the hand joints), so a zero action holds the current pose, and from then on
    integrates its own commanded state, never the measured one, until `reset()`, as GraspEnv
    (where the policy was trained) never re-anchors either: the policy lifts a heavy object by
    leading the arm, and its fingers squeeze by commanding past where the object stops them. A
    target IK cannot reach raises `IKFailed` and changes nothing.
    """

    def __init__(self, kinematics: RobotKinematics, scales: np.ndarray | tuple[float, ...] = ACTION_SCALES) -> None:
        scales = np.asarray(scales, dtype=float)
        if scales.shape != (ACTION_DIM,) or not np.all(np.isfinite(scales) & (scales > 0)):
            raise ValueError(f"scales must be {ACTION_DIM} finite numbers > 0, got {scales}")
        self.kinematics, self.scales = kinematics, scales
        self.target: PalmTarget | None = None

    def reset(self) -> None:
        """Forget the commanded state: the next command starts from the measured one."""
        self.target = None

    def start(self, q: np.ndarray) -> PalmTarget:
        """Command the measured state: the palm where it is, fingers at their projected fractions."""
        q = np.asarray(q, dtype=float)
        position, quaternion = self.kinematics.site_pose(q)
        self.target = PalmTarget(position, quaternion, q[:ARM_DIM].copy(), finger_fractions(q[ARM_DIM:]))
        return self.target

    def command(self, action: Any, q: np.ndarray, step_fraction: float = 1.0) -> np.ndarray:
        """Apply `action` (11,) for `step_fraction` of its period from the measured joints q (30,);
        returns the joint targets (30,). Raises IKFailed (state unchanged) when the new palm
        target is out of reach."""
        check_action(action)
        if not (np.isfinite(step_fraction) and step_fraction > 0):
            raise ValueError(f"step_fraction must be a positive number, got {step_fraction}")
        q = np.asarray(q, dtype=float)
        # Only the first command after a reset starts from the measured state. Re-anchoring
        # whenever the arm lagged its command by 0.1 (m or rad) dropped the palm target and
        # re-projected the squeezing fingers' fractions from where the object stopped them in
        # the middle of a bleach cleanser's lift (ARRx lagged 0.11 rad): the grip loosened and
        # the object slipped, 0 of 20 lifts through ROS against 20 of 20 in GraspEnv.
        target = self.start(q) if self.target is None else self.target
        new, ik = apply_action(self.kinematics, target, action, q[ARM_DIM:], self.scales, step_fraction)
        if not ik.success:
            raise IKFailed(f"the next palm target is out of reach: {ik.message}")
        self.target = new
        return new.joint_targets()
