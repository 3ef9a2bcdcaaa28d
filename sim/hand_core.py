"""Physics core of the hand scene: Adroit arm + hand, one object, fingertip touch, RGB-D + mask.

`HandSim` owns the MuJoCo model and data of `sim/hand_scene.py`. Joint vectors are in the
`ADROIT` profile's order: 6 arm joints (ARTx/y/z in metres, ARRx/y/z in radians, about the
forearm's mount frame) then the 24 hand joints (radians). Positions are in the world frame
(z up, table top at z = 0), metres; forces in newtons.

Touch: each of the five distal phalanges (`TOUCH_PADS`: thumb, index, middle, ring, little)
is one pad. Its normal force is the sum of the normal contact forces (`mj_contactForce`) on
the phalanx's collision capsule from anything that is not part of the hand (object, table).
The hand touching itself (thumb on index during a closing) is not reported: on the real hand
the pads face the object, and a policy rewarded for contacts must not earn them in free air.
"""

from __future__ import annotations

import copy
import weakref

import mujoco
import numpy as np
from numpy.typing import ArrayLike

from dexstack.contract import TACTILE_CONTACT_N
from dexstack.hardware.hand_synergy import finger_targets
from dexstack.hardware.kinematics import IKResult, RobotKinematics
from dexstack.hardware.profiles import ADROIT
from dexstack.perception.camera import camera_intrinsics, optical_pose_from_mujoco, segmentation_mask
from dexstack.perception.planning import box_superquadric
from dexstack.perception.superquadric import Superquadric
from dexstack.sim import hand_scene
from dexstack.sim import objects as objects_lib
from dexstack.sim.hand_scene import HAND_JOINTS, TOUCH_PADS
from dexstack.sim.render import RgbdRenderer

SETTLE_STEPS = 100  # physics steps at reset so the object rests on the table
TOUCH_THRESHOLD = TACTILE_CONTACT_N  # N; a pad with more normal force than this is "in contact"


def close_hand_targets(fraction: float) -> np.ndarray:
    """Scripted "close the hand" controller: hand joint targets (24,) in radians, linearly
    from open (fraction 0) to closed (fraction 1); fractions outside [0, 1] are clipped."""
    if not np.isfinite(fraction):
        raise ValueError(f"closing fraction must be finite, got {fraction}")
    return finger_targets(np.full(len(TOUCH_PADS), float(fraction)))


def _close_renderers(renderers: list) -> None:
    for renderer in renderers:
        renderer.close()
    renderers.clear()


class HandSim:
    """MuJoCo physics of the hand scene + fingertip touch + a scene RGB-D camera with an object mask."""

    def __init__(
        self, object_name: str = "potted_meat_can", render: bool = True, camera_size: tuple[int, int] = (160, 120)
    ) -> None:
        """camera_size: (width, height) of the scene camera in pixels."""
        if len(camera_size) != 2 or min(camera_size) < 1:
            raise ValueError(f"camera_size must be (width, height) in pixels, got {camera_size}")
        root, self.names = hand_scene.build_hand_scene(object_name, camera_size=camera_size)
        self.model: mujoco.MjModel = hand_scene.compile_model(root)
        self.data = mujoco.MjData(self.model)
        self.dt = float(self.model.opt.timestep)
        self.profile = ADROIT
        self.object_name = object_name
        self.object_spec = objects_lib.CATALOG[object_name]
        m = self.model
        joints = self.names.arm_joints + self.names.hand_joints
        self._qpos_adr = np.array([m.jnt_qposadr[m.joint(j).id] for j in joints])
        self._dof_adr = np.array([m.jnt_dofadr[m.joint(j).id] for j in joints])
        self._act = np.array([m.actuator(a).id for a in self.names.actuators])
        self._lower, self._upper = ADROIT.lower, ADROIT.upper
        self._pad_geom = np.array([m.geom(g).id for g in self.names.pad_geoms])
        robot_root = m.body(self.names.palm_body).rootid[0]
        self._hand_geom = m.body_rootid[m.geom_bodyid] == robot_root  # (ngeom,) bool
        self._palm_site = m.site(self.names.palm_site).id
        # IK on the robot model alone (the scene's robot is that model): the live state stays untouched.
        self.kinematics = RobotKinematics(ADROIT)
        self._object_body = m.body(self.names.object_body).id
        self._object_geoms = np.flatnonzero(m.geom_bodyid == self._object_body)
        free = m.body_jntadr[self._object_body]
        self._object_qpos = int(m.jnt_qposadr[free])
        self._object_dof = int(m.jnt_dofadr[free])

        self.camera_size = (int(camera_size[0]), int(camera_size[1]))
        self.camera_id = m.camera(self.names.camera).id
        self._renderers: list = []
        self.render_enabled = render
        if render:
            self._rgbd = RgbdRenderer(m, *self.camera_size)
            self._segment = mujoco.Renderer(m, height=self.camera_size[1], width=self.camera_size[0])
            self._segment.enable_segmentation_rendering()
            self._renderers += [self._rgbd, self._segment]
        # Free GL contexts when the sim is collected or at exit, while EGL is still loaded.
        self._finalizer = weakref.finalize(self, _close_renderers, self._renderers)
        self.reset()

    # --- episode --------------------------------------------------------------------------
    def reset(self, object_xy: tuple[float, float] | None = None, object_yaw: float | None = None) -> None:
        """Robot at `start_pose()` (joints and targets), object upright on the table at `object_xy` (m)
        turned by `object_yaw` (rad about z), by default `hand_scene.OBJECT_XY`/`OBJECT_YAW`;
        settles, t = 0."""
        mujoco.mj_resetData(self.model, self.data)
        home = self.start_pose()
        self.data.qpos[self._qpos_adr] = home
        self.set_targets(home)
        xy = hand_scene.OBJECT_XY if object_xy is None else object_xy
        yaw = hand_scene.OBJECT_YAW if object_yaw is None else object_yaw
        self.place_object([xy[0], xy[1], self.object_spec.grasp_height], yaw=yaw)
        for _ in range(SETTLE_STEPS):
            mujoco.mj_step(self.model, self.data)
        self.data.time = 0.0
        mujoco.mj_forward(self.model, self.data)

    def start_pose(self) -> np.ndarray:
        """(30,) joint positions at reset: the profile's home with the hand lifted (ARTy) so the
        open hand clears this scene's object."""
        home = np.asarray(ADROIT.home, dtype=float).copy()
        home[1] = hand_scene.start_lift(self.object_spec.height())
        return home

    def place_object(self, position, yaw: float = 0.0) -> None:
        """Put the object's grasp frame (see `sim/objects.py`) at `position` (3,) m, world frame,
        upright and turned by `yaw` rad about z, at rest."""
        position = np.asarray(position, dtype=float)
        if position.shape != (3,) or not np.isfinite(position).all() or not np.isfinite(yaw):
            raise ValueError(f"object position must be 3 finite numbers and yaw finite; got {position}, {yaw}")
        a = self._object_qpos
        self.data.qpos[a : a + 3] = position
        self.data.qpos[a + 3 : a + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self.data.qvel[self._object_dof : self._object_dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def park_object(self) -> None:
        """Move the object off the table, out of the hand's reach and the camera's view."""
        self.place_object(hand_scene.PARK_POSITION)

    # --- commands -------------------------------------------------------------------------
    def set_targets(self, q: np.ndarray) -> None:
        """Position targets (30,) for all joints in profile order (m, rad), clipped to limits."""
        q = np.asarray(q, dtype=float)
        if q.shape != (ADROIT.n_joints,) or not np.isfinite(q).all():
            raise ValueError(f"targets must be {ADROIT.n_joints} finite joint positions, got shape {q.shape}")
        self.data.ctrl[self._act] = np.clip(q, self._lower, self._upper)

    def set_hand_targets(self, q_hand: np.ndarray) -> None:
        """Position targets (24,) in radians for the hand joints only; arm targets are kept."""
        q = self.data.ctrl[self._act].copy()
        q_hand = np.asarray(q_hand, dtype=float)
        if q_hand.shape != (len(HAND_JOINTS),):
            raise ValueError(f"hand targets must have {len(HAND_JOINTS)} entries, got shape {q_hand.shape}")
        q[6:] = q_hand
        self.set_targets(q)

    def set_arm_pose(self, arm_q: np.ndarray, settle_steps: int = 0) -> None:
        """Put the arm at `arm_q` (6,) (m, rad) at rest, with its targets there too (a teleport,
        for resets); the hand keeps its joints and targets. Then `settle_steps` physics steps."""
        arm_q = np.asarray(arm_q, dtype=float)
        if arm_q.shape != (6,) or not np.isfinite(arm_q).all():
            raise ValueError(f"arm pose must be 6 finite joint positions, got shape {arm_q.shape}")
        arm_q = np.clip(arm_q, self._lower[:6], self._upper[:6])
        self.data.qpos[self._qpos_adr[:6]] = arm_q
        self.data.qvel[self._dof_adr[:6]] = 0.0
        targets = self.data.ctrl[self._act].copy()
        targets[:6] = arm_q
        self.set_targets(targets)
        mujoco.mj_forward(self.model, self.data)
        self.step(settle_steps)

    def set_arm_targets(self, arm_q: np.ndarray) -> None:
        """Position targets (6,) for the arm joints only (m, rad); hand targets are kept."""
        arm_q = np.asarray(arm_q, dtype=float)
        if arm_q.shape != (6,):
            raise ValueError(f"arm targets must have 6 entries, got shape {arm_q.shape}")
        q = self.data.ctrl[self._act].copy()
        q[:6] = arm_q
        self.set_targets(q)

    def step(self, n: int = 1) -> None:
        """Advance `n` physics steps of `dt` seconds."""
        for _ in range(n):
            mujoco.mj_step(self.model, self.data)

    def run_closing(self, duration_s: float = 0.6, hold_s: float = 0.3) -> None:
        """Scripted closing: ramp the hand from open to closed over `duration_s`, then hold for
        `hold_s` (seconds of sim time), with the arm held where it is."""
        ramp = max(1, int(round(duration_s / self.dt)))
        for k in range(1, ramp + 1):
            self.set_hand_targets(close_hand_targets(k / ramp))
            mujoco.mj_step(self.model, self.data)
        self.step(int(round(hold_s / self.dt)))

    # --- state ----------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Seconds of simulation time since the last reset."""
        return float(self.data.time)

    def joint_positions(self) -> np.ndarray:
        """(30,) joint positions in profile order (m, rad)."""
        return self.data.qpos[self._qpos_adr].copy()

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position (m, rad), velocity (m/s, rad/s) and actuator force (N, N m), profile order."""
        d = self.data
        return self.joint_positions(), d.qvel[self._dof_adr].copy(), d.actuator_force[self._act].copy()

    def targets(self) -> np.ndarray:
        """(30,) position targets the servos are commanded to now, profile order (m, rad)."""
        return self.data.ctrl[self._act].copy()

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Object grasp-frame position (3,) m and quaternion wxyz (4,), world frame."""
        a = self._object_qpos
        return self.data.qpos[a : a + 3].copy(), self.data.qpos[a + 3 : a + 7].copy()

    def object_tilt(self) -> float:
        """Angle (rad) between the object's up axis and world z: 0 upright."""
        up = self.data.xmat[self._object_body].reshape(3, 3)[2, 2]
        return float(np.arccos(np.clip(up, -1.0, 1.0)))

    def object_center(self) -> np.ndarray:
        """(3,) world centre of the object's bounding box (metres), e.g. the true centre a
        superquadric fit should find."""
        return self.object_box().position

    def object_box(self) -> Superquadric:
        """The object's bounding box as a box `Superquadric` (`perception.planning.box_superquadric`),
        world frame: the oracle perception of render-free runs."""
        d, g = self.data, self._object_geoms
        body = d.body(self._object_body)
        return box_superquadric(
            body.xpos,
            body.xmat.reshape(3, 3),
            d.geom_xpos[g],
            d.geom_xmat[g].reshape(-1, 3, 3),
            self.model.geom_aabb[g, 3:],
        )

    def palm_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Palm (grasp) frame `hardware.models.PALM_SITE`: position (3,) m and quaternion wxyz (4,),
        world frame (z = approach into the object, x = closing direction)."""
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._palm_site])
        return self.data.site_xpos[self._palm_site].copy(), quat

    def solve_palm_ik(self, position: ArrayLike, quaternion: ArrayLike, arm_q0: ArrayLike | None = None) -> IKResult:
        """Arm joints (6,) that put the palm frame at `position` (3,) m, `quaternion` wxyz (world),
        with the hand's joints where they are now: `RobotKinematics.solve` (hardware/kinematics.py)
        from `arm_q0` (default: the current arm joints). `success` is False when the best iterate
        is further than ADROIT's IK tolerances from the pose (out of reach or limits)."""
        q = self.joint_positions()
        return self.kinematics.solve(position, quaternion, q[:6] if arm_q0 is None else arm_q0, rest=q)

    def pad_forces(self, object_only: bool = False) -> np.ndarray:
        """(5,) normal force in newtons on each pad (`TOUCH_PADS` order) from contacts with
        anything outside the hand (with `object_only`, with the object's geoms only: what a
        reward that counts fingertips on the object needs; a pad on the table is not a grasp)."""
        m, d = self.model, self.data
        forces = np.zeros(len(TOUCH_PADS))
        if d.ncon == 0:
            return forces
        pairs = d.contact.geom[: d.ncon]
        wrench = np.zeros(6)
        for k, pad_geom in enumerate(self._pad_geom):
            for i in np.flatnonzero((pairs == pad_geom).any(axis=1)):
                other = pairs[i, 1] if pairs[i, 0] == pad_geom else pairs[i, 0]
                if self._hand_geom[other] or d.contact.efc_address[i] < 0:
                    continue  # self-contact, or a contact inside the margin with no force yet
                if object_only and m.geom_bodyid[other] != self._object_body:
                    continue
                mujoco.mj_contactForce(m, d, int(i), wrench)
                forces[k] += wrench[0]  # contact frame x is the normal
        return forces

    def fingertip_touch(self) -> dict[str, tuple[bool, float]]:
        """{pad: (in contact, normal force N)} for the five `TOUCH_PADS`; contact means a normal
        force above `TOUCH_THRESHOLD`."""
        forces = self.pad_forces()
        return {pad: (bool(f > TOUCH_THRESHOLD), float(f)) for pad, f in zip(TOUCH_PADS, forces, strict=True)}

    # --- camera ---------------------------------------------------------------------------
    def _check_render(self) -> None:
        if not self.render_enabled:
            raise RuntimeError("this HandSim was created with render=False (or closed)")

    def render(self, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scene camera: RGB (H, W, 3) uint8 and depth (H, W) float32 in metres along the
        optical axis (0 where nothing is within range), from one render pass, of the live state
        or of `data` (e.g. a `scratch_state`)."""
        self._check_render()
        return self._rgbd.render(self.data if data is None else data, self.camera_id)

    def segmentation(self, data: mujoco.MjData | None = None) -> np.ndarray:
        """Scene camera's segmentation (H, W, 2) int32: (object id, object type) of the nearest
        surface, -1 for background (MuJoCo segmentation rendering), of the live state or `data`."""
        self._check_render()
        self._segment.update_scene(self.data if data is None else data, camera=self.camera_id)
        return self._segment.render()

    def object_mask(self, data: mujoco.MjData | None = None) -> np.ndarray:
        """(H, W) bool: pixels of the scene camera where the object is the nearest surface."""
        return segmentation_mask(self.segmentation(data), self._object_geoms)

    def scratch_state(self, arm_q: np.ndarray) -> mujoco.MjData:
        """A copy of the live physics state with the arm's joints at `arm_q` (6,) (kinematics
        only, nothing stepped), to render a view the robot is not in: the live state is untouched."""
        scratch = copy.copy(self.data)  # MjData's copy is a deep copy
        scratch.qpos[self._qpos_adr[:6]] = arm_q
        mujoco.mj_forward(self.model, scratch)
        return scratch

    def camera_intrinsics(self) -> tuple[float, float, float, float]:
        """Pinhole fx, fy, cx, cy in pixels (pixel centres at integer coordinates, as in ROS)."""
        return camera_intrinsics(self.model.cam_fovy[self.camera_id], *self.camera_size)

    def camera_pose(self) -> np.ndarray:
        """(4, 4) transform from the scene camera's optical frame (REP 103: x right, y down, z
        forward) to the world frame; with `render`, `object_mask` and `camera_intrinsics` this is
        what `perception.camera.points_from_depth` needs for the object's cloud."""
        return optical_pose_from_mujoco(self.data.cam_xpos[self.camera_id], self.data.cam_xmat[self.camera_id])

    def close(self) -> None:
        """Release the GL contexts (renderers)."""
        _close_renderers(self._renderers)
        self.render_enabled = False
