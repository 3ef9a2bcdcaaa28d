"""Scripted expert for pick_lift: approach above the object, descend, close, lift.

It sees only what a ROS node sees: joint positions (`/joint_states`) and the object's pose
(`/sim/object_pose`, the object's grasp frame: origin at the grasp point, narrow side along
its local y). It plans in Cartesian space and converts every waypoint to joints with the
robot's kinematics (`hardware/kinematics.py`, on the robot model alone), so the same object
serves in-process rollouts and the expert ROS node. Positions in metres in the robot base
frame (= world frame of the sim), joint values in the profile's order.
"""

from __future__ import annotations

import enum

import mujoco
import numpy as np

from dexstack import contract
from dexstack.hardware.kinematics import RobotKinematics
from dexstack.hardware.profiles import PANDA, RobotProfile
from dexstack.trajectory import ActionChunk

CHUNK_POINTS = 8
APPROACH_HEIGHT = 0.10  # m above the grasp point before descending
LIFT_HEIGHT = 0.20  # m the object is lifted above its grasp position
SPEED = {"approach": 0.35, "descend": 0.12, "lift": 0.15}  # m/s along the Cartesian path
MAX_JOINT_SPEED = 1.2  # rad/s, well inside the Panda's limits
GRIPPER_OPEN, GRIPPER_CLOSED = 0.04, 0.0  # m per finger
CLOSE_TIME_S = 0.6  # s to wait for the fingers to close before lifting
REACHED_M = {"approach": 0.012, "descend": 0.006}  # measured TCP error that ends a phase


class Phase(enum.StrEnum):
    APPROACH = "approach"
    DESCEND = "descend"
    CLOSE = "close"
    LIFT = "lift"


def _top_down_rotation(closing_axis: np.ndarray) -> np.ndarray:
    """Hand orientation pointing straight down with the fingers closing along `closing_axis`."""
    y = np.array([closing_axis[0], closing_axis[1], 0.0])
    y /= np.linalg.norm(y)
    z = np.array([0.0, 0.0, -1.0])
    return np.column_stack([np.cross(y, z), y, z])


class PickLiftExpert:
    """Joint-space action chunks that pick up the object and lift it."""

    def __init__(
        self, profile: RobotProfile = PANDA, policy_hz: float = contract.POLICY_HZ, chunk_points: int = CHUNK_POINTS
    ) -> None:
        self.profile = profile
        self.dt = 1.0 / policy_hz
        self.chunk_points = chunk_points
        self.kin = RobotKinematics(profile)
        _, home_rot = self.kin.forward(np.asarray(profile.home[:7]))
        self._home_closing_axis = home_rot[:, 1]
        self.reset()

    def reset(self) -> None:
        """Forget the episode: start again from the approach phase."""
        self.phase = Phase.APPROACH
        self._phase_start = 0.0
        self._plan_t: np.ndarray | None = None  # absolute times of the last chunk's knots
        self._plan_q: np.ndarray | None = None  # (K, 8) positions at those times
        self._grasp_pos: np.ndarray | None = None
        self._rot: np.ndarray | None = None

    def _planned(self, t: float, measured: np.ndarray) -> np.ndarray:
        """What our last chunk commands at time t (the executor starts the next chunk from it)."""
        if self._plan_t is None or t < self._plan_t[0]:
            return measured.copy()
        if t >= self._plan_t[-1]:
            return self._plan_q[-1].copy()
        return np.array([np.interp(t, self._plan_t, self._plan_q[:, j]) for j in range(self._plan_q.shape[1])])

    def _target(self, object_position: np.ndarray, object_quat: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Cartesian goal (m), gripper command (m) and path speed (m/s) for the current phase."""
        if self.phase == Phase.APPROACH:
            return object_position + [0.0, 0.0, APPROACH_HEIGHT], GRIPPER_OPEN, SPEED["approach"]
        if self.phase == Phase.DESCEND:
            return object_position.copy(), GRIPPER_OPEN, SPEED["descend"]
        if self.phase == Phase.CLOSE:
            return self._grasp_pos.copy(), GRIPPER_CLOSED, SPEED["descend"]
        return self._grasp_pos + [0.0, 0.0, LIFT_HEIGHT], GRIPPER_CLOSED, SPEED["lift"]

    def _update_phase(self, t: float, tcp: np.ndarray, object_position: np.ndarray) -> None:
        if self.phase == Phase.APPROACH:
            if np.linalg.norm(tcp - (object_position + [0.0, 0.0, APPROACH_HEIGHT])) < REACHED_M["approach"]:
                self.phase, self._phase_start = Phase.DESCEND, t
        elif self.phase == Phase.DESCEND:
            if np.linalg.norm(tcp - object_position) < REACHED_M["descend"]:
                self.phase, self._phase_start = Phase.CLOSE, t
                self._grasp_pos = object_position.copy()
        elif self.phase == Phase.CLOSE and t - self._phase_start >= CLOSE_TIME_S:
            self.phase, self._phase_start = Phase.LIFT, t

    def act(
        self, t: float, joint_positions: np.ndarray, object_position: np.ndarray, object_quat: np.ndarray
    ) -> ActionChunk:
        """A chunk stamped `t` (s): `chunk_points` joint targets spaced 1/policy_hz apart.

        joint_positions: measured joints in profile order (rad, finger opening m);
        object_position / object_quat (wxyz): the object's grasp frame in the base frame.
        """
        q_meas = np.asarray(joint_positions, dtype=np.float64)
        object_position = np.asarray(object_position, dtype=np.float64)
        if q_meas.shape != (self.profile.n_joints,) or not np.all(np.isfinite(q_meas)):
            raise ValueError(f"joint_positions must be {self.profile.n_joints} finite values, got {q_meas}")
        if object_position.shape != (3,) or not np.all(np.isfinite(object_position)):
            raise ValueError(f"object_position must be 3 finite values, got {object_position}")
        tcp_meas, _ = self.kin.forward(q_meas[:7])
        self._update_phase(t, tcp_meas, object_position)

        if self._rot is None or self.phase in (Phase.APPROACH,):
            self._rot = self._grasp_rotation(np.asarray(object_quat, dtype=np.float64))
        goal, gripper, speed = self._target(object_position, object_quat)

        start = self._planned(t, q_meas)
        q = start.copy()
        pos, _ = self.kin.forward(q[:7])
        points = np.empty((self.chunk_points, self.profile.n_joints))
        max_step = speed * self.dt
        max_joint_step = MAX_JOINT_SPEED * self.dt
        for i in range(self.chunk_points):
            delta = goal - pos
            dist = np.linalg.norm(delta)
            pos = goal.copy() if dist <= max_step else pos + delta * (max_step / dist)
            q_arm = self.kin.solve(pos, self._rot, q[:7]).arm_q
            step = q_arm - q[:7]
            biggest = np.max(np.abs(step))
            if biggest > max_joint_step:  # orientation changes can demand big joint moves
                q_arm = q[:7] + step * (max_joint_step / biggest)
                pos, _ = self.kin.forward(q_arm)
            q = np.append(q_arm, gripper)
            points[i] = q
        chunk = ActionChunk.uniform(self.profile.joint_names, points, self.dt, stamp=t)
        self._plan_t = np.concatenate([[t], t + chunk.times])
        self._plan_q = np.vstack([start, points])
        return chunk

    def _grasp_rotation(self, object_quat: np.ndarray) -> np.ndarray:
        """Top-down hand orientation closing across the object's local y, turned the way that
        needs the least wrist rotation from home (a grasp across y works either way round)."""
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, object_quat / np.linalg.norm(object_quat))
        axis = rot.reshape(3, 3)[:, 1]
        if np.dot(axis[:2], self._home_closing_axis[:2]) < 0.0:
            axis = -axis
        return _top_down_rotation(axis)
