"""G-PAYN grasping environment on the Adroit hand scene (gym-style, single and vectorised).

An episode (G-PAYN, Ceola et al. 2023): the object is placed upright at a random spot and yaw
near `hand_scene.OBJECT_XY`; with the arm out of the way the scene camera renders depth and the
object's mask, a superquadric is fitted to the back-projected points (`fit_superquadric`, table
prior at z = 0), `grasp_pose(..., approach="auto")` gives the 6-D grasp pose and inverse
kinematics puts the open hand at the pre-grasp pose, 5 cm back along the approach. The policy
takes over from there; it has to reach the grasp pose, close the fingers and lift the object
10 cm (`rewards.py`).

Control at `CONTROL_HZ` = 10 Hz of sim time (50 physics steps of 2 ms per action): the arm's
position servos settle in ~0.2 s (slides kp 2000 N/m, kv 200 N s/m), so at 10 Hz each Cartesian
command is mostly reached before the next one (each command ramps in over its period, as the
robot's trajectory controller executes it), and an episode of a 5 cm approach, a closing and
a 10 cm lift fits in ~30 steps, short horizons for SAC. 20 Hz would double the steps per
episode for commands the arm follows no better.

Action (float32, [-1, 1], `ACTION_DIM` = 11): palm translation and rotation in the world frame
and one closing amount per finger, each a step per action; what it means is `action.py`, which
serving applies too. A five-finger synergy instead of the 24 joints keeps the closing that lands
all five pads on the object reachable by one action, as G-PAYN's iCub couples its finger joints;
the wrist stays straight. A palm target IK cannot reach is refused (the arm holds) and ends the
episode with -1.

Observation (dict of float32 arrays, `observation_spec()`): `hand_joints` (24, rad), `touch`
(10: five contact flags then five normal forces in N, `TOUCH_PADS` order; contact with
anything, as a real tactile sensor reports), `ee_pose` (palm position m + quaternion wxyz),
`grasp_center` (3, the grasp pose's position, world), `grasp_center_in_palm` (3, the same in
the palm frame), and with rendering `image` (H, W, 3 uint8 RGB of the scene camera, for a
frozen encoder) and `depth` (H, W float32, metres).

Without rendering (`render=False`) there is no camera: the grasp pose comes from an oracle
superquadric, the object's true bounding box (for fast tests and state-only training).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from dexstack.hardware.hand_synergy import finger_targets
from dexstack.hardware.profiles import ADROIT
from dexstack.policies.gpayn import rewards
from dexstack.policies.gpayn.action import ACTION_DIM, ARM_DIM, FINGER_DIM, PalmTarget, apply_action
from dexstack.policies.gpayn.grasp_pose import grasp_pose, pregrasp
from dexstack.policies.gpayn.superquadric import Superquadric, fit_superquadric, points_from_depth
from dexstack.sim import hand_scene
from dexstack.sim import objects as objects_lib
from dexstack.sim.hand_core import TOUCH_THRESHOLD, HandSim
from dexstack.sim.hand_scene import HAND_JOINTS, TOUCH_PADS
from dexstack.sim.render import RgbdRenderer
from dexstack.trajectory import ActionChunk, TrajectoryExecutor

# G-PAYN's training objects (YCB) and shapes never used in training.
TRAIN_OBJECTS: tuple[str, ...] = ("sugar_box", "mustard_bottle", "bleach_cleanser", "power_drill", "potted_meat_can")
HELD_OUT_OBJECTS: tuple[str, ...] = ("chips_can", "rubiks_cube", "pear", "tomato_soup_can")
# Objects for choosing training settings: neither trained on nor held out, so the held-out numbers
# stay untouched by tuning.
VALIDATION_OBJECTS: tuple[str, ...] = ("pudding_box", "apple", "wood_block", "tuna_fish_can")

CONTROL_HZ = 10
SUBSTEPS = int(round(1.0 / (CONTROL_HZ * hand_scene.TIMESTEP)))  # physics steps per action
MAX_EPISODE_STEPS = 50  # 5 s of sim time

PREGRASP_DISTANCE = 0.05  # m back along the approach
GRASP_STANDOFF = 0.0  # m; the palm frame lies on the palm's skin
# Object placement: uniform within this square (m) around OBJECT_XY and this yaw range (rad)
# around OBJECT_YAW; wider yaws need arm rotations beyond ARRy's reach once the arm also has to
# shift sideways (measured: IK holds within +-0.5 rad at the default spot).
PLACEMENT_XY = 0.03
PLACEMENT_YAW = 0.35
MAX_RESET_TRIES = 5
FIT_CAMERA_SIZE = (160, 120)  # (width, height) for the depth + mask the fit uses
# Arm pose while the camera looks at the object: hand pulled back towards the mount, behind
# the object as seen from the camera, so it occludes nothing.
CAMERA_CLEAR_ARM = np.array([0.0, 0.15, -0.3, 0.0, 0.0, 0.0])
SETTLE_STEPS = 50  # physics steps after putting the arm at the pre-grasp pose


ROUND_RATIO = 1.1  # widest / narrowest width across the approach below which a section is round


def arm_friendly_grasp(grasp: tuple[np.ndarray, np.ndarray], fit: Superquadric,
                       reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grasp turned about its approach axis to the equivalent grasp the arm reaches best.

    `grasp_pose` closes across the narrower width; on a round section (a can: all widths within
    ROUND_RATIO) every closing direction is as good and the one it returns is arbitrary, and on
    any box the grasp turned by pi (thumb and fingers swapped) or, for a square section, by
    pi/2 is the same grasp. The Adroit arm's wrist turns only about +-0.5 rad from closing along
    the direction away from its mount, so pick, among these equivalents, the one whose closing
    direction is closest to it: exactly that direction on a round section, the best multiple
    of pi/2 (closing no wider than the original) otherwise.
    """
    rot = _rotation(grasp[1])
    z, x = rot[:, 2], rot[:, 0]
    away = fit.position - reference
    away = away - (away @ z) * z
    if np.linalg.norm(away) < 1e-9:
        return grasp

    def turned(angle: float) -> np.ndarray:
        return Rotation.from_rotvec(angle * z).as_matrix() @ x

    widths = [2.0 * fit.support(turned(a)) for a in np.linspace(0.0, np.pi, 8, endpoint=False)]
    if max(widths) <= ROUND_RATIO * min(widths):
        new_x = away / np.linalg.norm(away)
    else:
        width = 2.0 * fit.support(x)
        options = [turned(k * np.pi / 2) for k in range(4)]
        options = [o for o in options if 2.0 * fit.support(o) <= ROUND_RATIO * width]
        new_x = max(options, key=lambda o: float(o @ away))
    new_rot = np.stack([new_x, np.cross(z, new_x), z], axis=1)
    return np.asarray(grasp[0], dtype=float), Rotation.from_matrix(new_rot).as_quat(scalar_first=True)


def _close_all(renderers: list) -> None:
    for renderer in renderers:
        renderer.close()
    renderers.clear()


def _rotation(quat: np.ndarray) -> np.ndarray:
    return Rotation.from_quat(quat, scalar_first=True).as_matrix()


class GraspEnv:
    """One object, one Adroit hand: the G-PAYN grasping task (see the module docstring).

    object_name: a key of `sim.objects.CATALOG`. seed: for object placement. render: camera on
    (vision-based grasp pose, `image` and `depth` observations). image_size: (width, height)
    of the policy's image. max_episode_steps: time limit (steps of 1 / CONTROL_HZ s).
    """

    def __init__(self, object_name: str = "potted_meat_can", seed: int | None = None, render: bool = True,
                 image_size: tuple[int, int] = (64, 64), max_episode_steps: int = MAX_EPISODE_STEPS) -> None:
        if object_name not in objects_lib.CATALOG:
            raise ValueError(f"unknown object {object_name!r}; known: {sorted(objects_lib.CATALOG)}")
        if len(image_size) != 2 or min(image_size) < 8:
            raise ValueError(f"image_size must be (width, height) of at least 8 pixels, got {image_size}")
        if not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
        self.object_name = object_name
        self.render_enabled = render
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.max_episode_steps = max_episode_steps
        self.action_dim = ACTION_DIM
        self.sim = HandSim(object_name, render=render, camera_size=FIT_CAMERA_SIZE)
        self._renderers: list = []
        if render:
            self._image_renderer = RgbdRenderer(self.sim.model, *self.image_size)
            self._renderers.append(self._image_renderer)
        self._finalizer = weakref.finalize(self, _close_all, self._renderers)
        self._rng = np.random.default_rng(seed)
        self._needs_reset = True

    # --- spaces ---------------------------------------------------------------------------
    def observation_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """{key: (shape, dtype)} of every observation this env returns."""
        spec: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "hand_joints": ((len(HAND_JOINTS),), np.dtype(np.float32)),
            "touch": ((2 * len(TOUCH_PADS),), np.dtype(np.float32)),
            "ee_pose": ((7,), np.dtype(np.float32)),
            "grasp_center": ((3,), np.dtype(np.float32)),
            "grasp_center_in_palm": ((3,), np.dtype(np.float32)),
        }
        if self.render_enabled:
            width, height = self.image_size
            spec["image"] = ((height, width, 3), np.dtype(np.uint8))
            spec["depth"] = ((height, width), np.dtype(np.float32))
        return spec

    # --- episode --------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """New episode: place the object, fit, plan the grasp, put the open hand at the pre-grasp.

        Returns (observation, info); info holds `grasp_pose`, `pregrasp_pose` ((position,
        quaternion wxyz), world), `fit` (the Superquadric), `ik` (the pre-grasp IKResult),
        `object_xy`, `object_yaw`, `reset_attempts` and `failed_attempts` (why each earlier
        placement was resampled). Raises RuntimeError when MAX_RESET_TRIES placements all fail.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        failures: list[str] = []
        for attempt in range(1, MAX_RESET_TRIES + 1):
            xy = np.asarray(hand_scene.OBJECT_XY) + self._rng.uniform(-PLACEMENT_XY, PLACEMENT_XY, 2)
            yaw = hand_scene.OBJECT_YAW + self._rng.uniform(-PLACEMENT_YAW, PLACEMENT_YAW)
            self.sim.reset(object_xy=tuple(xy), object_yaw=float(yaw))
            self.sim.set_arm_pose(CAMERA_CLEAR_ARM)
            try:
                fit = self._perceive()
                grasp = grasp_pose(fit, "auto", standoff=GRASP_STANDOFF,
                                   reference=np.asarray(hand_scene.ARM_MOUNT_POS, dtype=float))
            except ValueError as exc:  # too few object pixels, or no width fits the hand
                failures.append(f"attempt {attempt}: {exc}")
                continue
            grasp = arm_friendly_grasp(grasp, fit, np.asarray(hand_scene.ARM_MOUNT_POS, dtype=float))
            pre = pregrasp(grasp, PREGRASP_DISTANCE)
            ik = self.sim.solve_palm_ik(*pre, arm_q0=self.sim.start_pose()[:6])
            if ik.success:
                break
            failures.append(f"attempt {attempt}: pre-grasp IK failed: {ik.message}")
        else:
            raise RuntimeError(f"{self.object_name}: no reachable grasp after {MAX_RESET_TRIES} placements: "
                               + "; ".join(failures))
        self.sim.set_arm_pose(ik.arm_q, settle_steps=SETTLE_STEPS)
        self._grasp = (np.asarray(grasp[0], dtype=float), np.asarray(grasp[1], dtype=float))
        self._target_pos, self._target_quat = np.asarray(pre[0], dtype=float), np.asarray(pre[1], dtype=float)
        self._arm_q = ik.arm_q.copy()
        self._fractions = np.zeros(FINGER_DIM)
        self._executor = TrajectoryExecutor(ADROIT.joint_names,
                                            np.concatenate([self._arm_q, finger_targets(self._fractions)]))
        self._time = 0.0
        self._steps = 0
        self._rest_height = float(self.sim.object_center()[2])
        self._prev_height = self._rest_height
        self._prev_contacts = self._object_contacts()
        self._prev_distance = self._palm_distance()
        self._touched = self._prev_contacts > 0
        self._needs_reset = False
        info = {"grasp_pose": self._grasp, "pregrasp_pose": (self._target_pos.copy(), self._target_quat.copy()),
                "fit": fit, "ik": ik, "object": self.object_name, "object_xy": xy, "object_yaw": float(yaw),
                "reset_attempts": attempt, "failed_attempts": failures}
        return self._observation(), info

    def step(self, action) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action for 1 / CONTROL_HZ s. Returns (obs, reward, terminated, truncated,
        info); info holds `reward_terms`, `success`, `ik_failed`, `ik` (IKResult), `contacts`
        (fingertips on the object), `lift` (m above rest)."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode ended or never started)")
        # The action's meaning (action.py): integrate the palm target, IK with the hand at its
        # measured joints; an unreachable target keeps the arm where it was commanded.
        command, ik = apply_action(self.sim.kinematics,
                                   PalmTarget(self._target_pos, self._target_quat, self._arm_q, self._fractions),
                                   action, self.sim.joint_positions()[ARM_DIM:])
        self._target_pos, self._target_quat = command.position, command.quaternion
        self._arm_q, self._fractions = command.arm_q, command.fractions
        targets = command.joint_targets()
        # Executed as the robot's controller executes the policy node's command: a one-point
        # trajectory due one period ahead, the servo targets ramping linearly from the current
        # command (JTC semantics, the hand sim node's executor). Stepping the targets at once
        # instead trained policies that lifted the meat can 10/10 that way and 6/10 ramped.
        chunk = ActionChunk(ADROIT.joint_names, targets[None], np.array([1.0 / CONTROL_HZ]), self._time)
        self._executor.set_chunk(chunk, now=self._time)
        for i in range(SUBSTEPS):
            self.sim.set_targets(self._executor.sample(self._time + i * hand_scene.TIMESTEP))
            self.sim.step(1)
        self._time += SUBSTEPS * hand_scene.TIMESTEP
        self._steps += 1

        contacts = self._object_contacts()
        height = float(self.sim.object_center()[2])
        distance = self._palm_distance()
        state = rewards.RewardState(
            contacts=contacts, prev_contacts=self._prev_contacts, object_height=height,
            prev_object_height=self._prev_height, rest_height=self._rest_height, palm_distance=distance,
            prev_palm_distance=self._prev_distance, touched_before=self._touched,
            object_tilt=self.sim.object_tilt(), ik_failed=not ik.success,
            timed_out=self._steps >= self.max_episode_steps)
        terms, reward, terminated = rewards.compute_reward(state)
        truncated = state.timed_out and not terminated
        self._prev_contacts, self._prev_height, self._prev_distance = contacts, height, distance
        self._touched = self._touched or contacts > 0
        self._needs_reset = terminated or truncated
        info = {"reward_terms": terms, "success": terms["success"] > 0, "ik_failed": not ik.success, "ik": ik,
                "contacts": contacts, "lift": height - self._rest_height, "steps": self._steps}
        return self._observation(), reward, terminated, truncated, info

    # --- state ----------------------------------------------------------------------------
    @property
    def grasp(self) -> tuple[np.ndarray, np.ndarray]:
        """This episode's grasp pose (position, quaternion wxyz), world frame."""
        return self._grasp

    @property
    def palm_target(self) -> tuple[np.ndarray, np.ndarray]:
        """The commanded palm pose (position, quaternion wxyz) the arm servos towards."""
        return self._target_pos.copy(), self._target_quat.copy()

    def _object_contacts(self) -> int:
        return int((self.sim.pad_forces(object_only=True) > TOUCH_THRESHOLD).sum())

    def _palm_distance(self) -> float:
        return float(np.linalg.norm(self.sim.palm_pose()[0] - self._grasp[0]))

    def _perceive(self) -> Superquadric:
        """Superquadric of the object: fitted to the camera's masked depth, or (no rendering) the
        object's true bounding box."""
        if not self.render_enabled:
            return self._oracle_superquadric()
        _, depth = self.sim.render()
        mask = self.sim.object_mask()
        points = points_from_depth(depth, mask, *self.sim.camera_intrinsics(), self.sim.camera_pose())
        return fit_superquadric(points, support_z=0.0)

    def _oracle_superquadric(self) -> Superquadric:
        m, d, sim = self.sim.model, self.sim.data, self.sim
        body = d.body(sim._object_body)
        rot = body.xmat.reshape(3, 3)
        corners = []
        for g in sim._object_geoms:
            centre = rot.T @ (d.geom_xpos[g] - body.xpos)
            extent = np.abs(rot.T @ d.geom_xmat[g].reshape(3, 3)) @ m.geom_aabb[g, 3:]
            corners += [centre - extent, centre + extent]
        lo, hi = np.min(corners, axis=0), np.max(corners, axis=0)
        return Superquadric(size=(hi - lo) / 2, exponents=np.array([0.1, 0.1]),
                            position=body.xpos + rot @ ((lo + hi) / 2), rotation=rot.copy())

    def _observation(self) -> dict[str, np.ndarray]:
        forces = self.sim.pad_forces()
        palm_pos, palm_quat = self.sim.palm_pose()
        grasp_in_palm = _rotation(palm_quat).T @ (self._grasp[0] - palm_pos)
        obs = {
            "hand_joints": self.sim.joint_positions()[6:].astype(np.float32),
            "touch": np.concatenate([(forces > TOUCH_THRESHOLD).astype(float), forces]).astype(np.float32),
            "ee_pose": np.concatenate([palm_pos, palm_quat]).astype(np.float32),
            "grasp_center": self._grasp[0].astype(np.float32),
            "grasp_center_in_palm": grasp_in_palm.astype(np.float32),
        }
        if self.render_enabled:
            rgb, depth = self._image_renderer.render(self.sim.data, self.sim._cam_id)
            obs["image"], obs["depth"] = rgb, depth
        return obs

    def close(self) -> None:
        """Release the GL contexts."""
        _close_all(self._renderers)
        self.sim.close()


class VectorGraspEnv:
    """`n_envs` GraspEnvs stepped one after another in this process (simple beats fancy here:
    physics + a 64x64 render is ~5 ms a step). Env i grasps `objects[i % len(objects)]` with
    seed `seed + i`. Finished envs reset themselves: their returned observation is the new
    episode's first, and `infos[i]["final_observation"]` / `["final_info"]` hold the last step's.
    """

    def __init__(self, n_envs: int, objects: tuple[str, ...] = TRAIN_OBJECTS, seed: int = 0, **env_kwargs) -> None:
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive int, got {n_envs!r}")
        if not objects:
            raise ValueError("objects must name at least one object")
        self.envs = [GraspEnv(objects[i % len(objects)], seed=seed + i, **env_kwargs) for i in range(n_envs)]
        self.n_envs = n_envs
        self.action_dim = ACTION_DIM

    def observation_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        return self.envs[0].observation_spec()

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """Reset every env (env i with `seed + i` when a seed is given); observations stacked."""
        results = [env.reset(None if seed is None else seed + i) for i, env in enumerate(self.envs)]
        return _stack([obs for obs, _ in results]), [info for _, info in results]

    def step(self, actions) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """actions (n_envs, ACTION_DIM). Returns stacked obs, rewards, terminated, truncated (n_envs,)
        and one info dict per env."""
        actions = np.asarray(actions, dtype=float)
        if actions.shape != (self.n_envs, ACTION_DIM):
            raise ValueError(f"actions must have shape ({self.n_envs}, {ACTION_DIM}), got {actions.shape}")
        observations, infos = [], []
        rewards_out = np.zeros(self.n_envs, dtype=np.float32)
        terminated = np.zeros(self.n_envs, dtype=bool)
        truncated = np.zeros(self.n_envs, dtype=bool)
        for i, env in enumerate(self.envs):
            obs, reward, term, trunc, info = env.step(actions[i])
            rewards_out[i], terminated[i], truncated[i] = reward, term, trunc
            if term or trunc:
                final_obs, final_info = obs, info
                obs, reset_info = env.reset()
                info = {"final_observation": final_obs, "final_info": final_info, "reset_info": reset_info}
            observations.append(obs)
            infos.append(info)
        return _stack(observations), rewards_out, terminated, truncated, infos

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _stack(observations: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}
