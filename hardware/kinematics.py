"""Forward and inverse kinematics of a robot from its model file alone (no scene, no objects).

`RobotKinematics(profile)` compiles the profile's robot model (`hardware/models.py`, the model
the sim composes its scenes from) at the profile's base pose and uses MuJoCo as a kinematics
engine: `forward` gives the pose of the profile's IK site (`profile.model.ik_site`) in the
world frame, `solve` the first `profile.model.ik_joints` joints that put that site at a pose
(damped least squares on MuJoCo's site Jacobian, each step clipped to the profile's joint
limits; the robot's `IKSettings` say the damping, iterations and error form). The Panda's
scripted expert and G-PAYN's serving (palm targets -> arm joints) both use it; neither imports
the sim. Positions in metres, quaternions wxyz, joint values in the profile's order (m, rad).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import mujoco
import numpy as np
from dm_control import mjcf
from numpy.typing import ArrayLike

from dexstack.hardware.models import attach_robot
from dexstack.hardware.profiles import RobotProfile

# Convergence: the iteration stops once the site is this close to the target (m, rad).
CONVERGED_POSITION = 1e-4
CONVERGED_ROTATION = 1e-3


@dataclass(frozen=True)
class IKResult:
    """Outcome of `RobotKinematics.solve`.

    arm_q: (ik_joints,) joint positions (m, rad) of the returned iterate, within the joint limits.
    success: position_error <= position_tolerance and rotation_error <= rotation_tolerance.
    position_error (m), rotation_error (rad): distance of the site at `arm_q` from the target.
    iterations: Jacobian steps taken. message: why it failed ("" on success).
    """

    arm_q: np.ndarray
    success: bool
    position_error: float
    rotation_error: float
    iterations: int
    message: str = ""


def unit_quaternion(quat: ArrayLike) -> np.ndarray:
    """`quat` (w, x, y, z) normalised; ValueError if not 4 finite numbers or all zero."""
    q = np.asarray(quat, dtype=float)
    if q.shape != (4,) or not np.isfinite(q).all() or np.linalg.norm(q) < 1e-9:
        raise ValueError(f"quaternion must be 4 finite numbers (w, x, y, z), not all zero; got {quat}")
    return q / np.linalg.norm(q)


def _quaternion_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (3,), world frame, that turns frame `current` into `target` (wxyz)."""
    local = np.zeros(3)
    mujoco.mju_subQuat(local, target, current)  # current * quat(local) = target, in current's frame
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, current)
    return rot.reshape(3, 3) @ local


def _axes_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Small-angle rotation error (3,), world frame: half the sum of the cross products of the
    frames' axes (rotation matrices)."""
    return 0.5 * sum(np.cross(current[:, i], target[:, i]) for i in range(3))


@functools.lru_cache(maxsize=8)
def _robot_model(profile: RobotProfile) -> tuple[mujoco.MjModel, str]:
    """The profile's robot model compiled at its base pose, and its elements' name prefix. Cached:
    compiling takes ~0.4 s for ADROIT, every HandSim has a RobotKinematics, and a compiled model is
    only read (each RobotKinematics has its own MjData)."""
    root = mjcf.RootElement(model=f"{profile.name}_kinematics")
    _, prefix = attach_robot(root, profile)
    return mujoco.MjModel.from_xml_string(root.to_xml_string(), assets=root.get_assets()), prefix


class RobotKinematics:
    """FK and IK of one robot's IK site on its robot-only model (see the module docstring)."""

    def __init__(self, profile: RobotProfile) -> None:
        if profile.model is None:
            raise ValueError(f"robot profile {profile.name!r} names no robot model: no kinematics")
        self.profile = profile
        self.settings = profile.model.ik
        self.model, prefix = _robot_model(profile)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.n_ik = profile.model.ik_joints
        self._qpos_adr = np.array([m.jnt_qposadr[m.joint(prefix + j).id] for j in profile.joint_names])
        self._ik_dofs = np.array([m.jnt_dofadr[m.joint(prefix + j).id] for j in profile.joint_names[: self.n_ik]])
        self._site = m.site(prefix + profile.model.ik_site).id
        self.lower, self.upper = profile.lower[: self.n_ik], profile.upper[: self.n_ik]

    def _set_joints(self, q: np.ndarray) -> None:
        """Joint positions: all the profile's joints, or the IK joints only (the others at the
        model's reference pose), then the kinematics pass."""
        q = np.asarray(q, dtype=float)
        if q.shape not in ((self.n_ik,), (self.profile.n_joints,)) or not np.isfinite(q).all():
            raise ValueError(
                f"joint positions must be {self.n_ik} or {self.profile.n_joints} finite numbers "
                f"({self.profile.name} order), got shape {q.shape}"
            )
        self.data.qpos[:] = self.model.qpos0
        self.data.qpos[self._qpos_adr[: len(q)]] = q
        mujoco.mj_kinematics(self.model, self.data)

    def _site_frame(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.site_xpos[self._site].copy(), self.data.site_xmat[self._site].reshape(3, 3).copy()

    def forward(self, q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The IK site's position (3,) m and rotation matrix (3, 3), world frame, at joint
        positions q (all the profile's joints, or the first `ik_joints` with the rest at zero)."""
        self._set_joints(q)
        return self._site_frame()

    def site_pose(self, q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """`forward` with the orientation as a quaternion wxyz (4,)."""
        self._set_joints(q)
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._site])
        return self.data.site_xpos[self._site].copy(), quat

    def solve(
        self, position: ArrayLike, orientation: ArrayLike, q0: ArrayLike, rest: ArrayLike | None = None
    ) -> IKResult:
        """The first `ik_joints` joints (from `q0`) that put the IK site at `position` (3,) m with
        `orientation`, a quaternion wxyz (4,) or a rotation matrix (3, 3), world frame.

        rest: all the profile's joints; the others than the IK joints are held there during the
        solve (default: at zero). Returns an `IKResult`; `success` is False when the returned
        iterate is further than the robot's tolerances from the target (out of reach or limits).
        """
        s = self.settings
        target_p = np.asarray(position, dtype=float)
        if target_p.shape != (3,) or not np.isfinite(target_p).all():
            raise ValueError(f"target position must be 3 finite numbers (m), got {position}")
        orientation = np.asarray(orientation, dtype=float)
        if orientation.shape == (3, 3):
            if not np.isfinite(orientation).all():
                raise ValueError(f"target rotation matrix must be finite, got {orientation}")
            target_mat = orientation
            target_q = np.zeros(4)
            mujoco.mju_mat2Quat(target_q, orientation.reshape(-1))
        else:
            target_q = unit_quaternion(orientation)
            target_mat = np.zeros(9)
            mujoco.mju_quat2Mat(target_mat, target_q)
            target_mat = target_mat.reshape(3, 3)
        q = np.array(q0, dtype=float)
        if q.shape != (self.n_ik,) or not np.isfinite(q).all():
            raise ValueError(f"the start must be {self.n_ik} finite joint positions, got {q0}")
        if s.clip_start:
            q = np.clip(q, self.lower, self.upper)
        full = np.array(self.model.qpos0[self._qpos_adr]) if rest is None else np.array(rest, dtype=float)
        if full.shape != (self.profile.n_joints,) or not np.isfinite(full).all():
            raise ValueError(f"rest must be {self.profile.n_joints} finite joint positions, got {rest}")
        m, d = self.model, self.data
        jac_p, jac_r = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        best = None
        for iteration in range(s.max_iterations + 1):
            full[: self.n_ik] = q
            self._set_joints(full)
            p, mat = self._site_frame()
            if s.rotation_error == "axes":
                rot_error = _axes_error(target_mat, mat)
            else:
                quat = np.zeros(4)
                mujoco.mju_mat2Quat(quat, d.site_xmat[self._site])
                rot_error = _quaternion_error(target_q, quat)
            error = np.concatenate([target_p - p, rot_error])
            pos_err, rot_err = float(np.linalg.norm(error[:3])), float(np.linalg.norm(error[3:]))
            if s.result == "last" or best is None or pos_err + 0.1 * rot_err < best[1] + 0.1 * best[2]:
                best = (q.copy(), pos_err, rot_err)
            if pos_err < CONVERGED_POSITION and rot_err < CONVERGED_ROTATION or iteration == s.max_iterations:
                break
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, jac_p, jac_r, self._site)
            jac = np.vstack([jac_p[:, self._ik_dofs], jac_r[:, self._ik_dofs]])
            jac = np.asfortranarray(jac) if s.jacobian_order == "F" else np.ascontiguousarray(jac)
            step = jac.T @ np.linalg.solve(jac @ jac.T + s.damping**2 * np.eye(6), error)
            q = np.clip(q + step, self.lower, self.upper)
        arm_q, pos_err, rot_err = best
        success = pos_err <= s.position_tolerance and rot_err <= s.rotation_tolerance
        message = (
            ""
            if success
            else (
                f"no joint positions within {s.position_tolerance * 1000:.0f} mm / {s.rotation_tolerance} rad of the "
                f"asked {self.profile.model.ik_site} pose (best: {pos_err * 1000:.1f} mm, {rot_err:.3f} rad; out of reach "
                "or at joint limits)"
            )
        )
        return IKResult(arm_q, success, pos_err, rot_err, iteration, message)
