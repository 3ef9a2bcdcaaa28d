"""G-PAYN grasping environment on the Adroit hand scene (gym-style, single and vectorised).

The RL training env of the grasp task (`sim/tasks/grasp.py`: placement, the grasp planned from
the camera, the pre-grasp start, reward terms, success and time limit) on the hand's physics
core (`sim/hand_core.py`). This module adds what learning needs: the action space, the
observation dict, and a vectorised wrapper.

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
from dexstack.policies.gpayn.action import ACTION_DIM, ARM_DIM, FINGER_DIM, PalmTarget, apply_action
from dexstack.sim import hand_scene
from dexstack.sim import objects as objects_lib
from dexstack.sim.hand_core import TOUCH_THRESHOLD, HandSim
from dexstack.sim.hand_scene import HAND_JOINTS, TOUCH_PADS
from dexstack.sim.render import RgbdRenderer
from dexstack.sim.tasks.grasp import (  # noqa: F401 (the object sets: re-exported for the trainer)
    CONTROL_HZ,
    FIT_CAMERA_SIZE,
    HELD_OUT_OBJECTS,
    MAX_EPISODE_STEPS,
    TRAIN_OBJECTS,
    VALIDATION_OBJECTS,
    GraspTask,
)
from dexstack.trajectory import ActionChunk, TrajectoryExecutor

SUBSTEPS = int(round(1.0 / (CONTROL_HZ * hand_scene.TIMESTEP)))  # physics steps per action


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

    def __init__(
        self,
        object_name: str = "potted_meat_can",
        seed: int | None = None,
        render: bool = True,
        image_size: tuple[int, int] = (64, 64),
        max_episode_steps: int = MAX_EPISODE_STEPS,
    ) -> None:
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
        self.task = GraspTask(self.sim)
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
        info = self.task.reset(self._rng)
        self._grasp = self.task.grasp
        self._target_pos, self._target_quat = info["pregrasp_pose"]
        self._arm_q = info["ik"].arm_q.copy()
        self._fractions = np.zeros(FINGER_DIM)
        self._executor = TrajectoryExecutor(
            ADROIT.joint_names,
            np.concatenate([self._arm_q, finger_targets(self._fractions)]),
            interpolate_from_desired_state=ADROIT.jtc_interpolate_from_desired_state,
        )
        self._time = 0.0
        self._steps = 0
        self._needs_reset = False
        info["pregrasp_pose"] = (self._target_pos.copy(), self._target_quat.copy())
        return self._observation(), info

    def step(self, action) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action for 1 / CONTROL_HZ s. Returns (obs, reward, terminated, truncated,
        info); info holds `reward_terms`, `success`, `ik_failed`, `ik` (IKResult), `contacts`
        (fingertips on the object), `lift` (m above rest)."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (the episode ended or never started)")
        # The action's meaning (action.py): integrate the palm target, IK with the hand at its
        # measured joints; an unreachable target keeps the arm where it was commanded.
        command, ik = apply_action(
            self.sim.kinematics,
            PalmTarget(self._target_pos, self._target_quat, self._arm_q, self._fractions),
            action,
            self.sim.joint_positions()[ARM_DIM:],
        )
        self._target_pos, self._target_quat = command.position, command.quaternion
        self._arm_q, self._fractions = command.arm_q, command.fractions
        targets = command.joint_targets()
        # Executed as the robot's controller executes the policy node's command: a one-point
        # trajectory due one period ahead, the servo targets ramping linearly from the current
        # command (JTC semantics, the hand sim node's executor). Stepping the targets at once
        # instead trained policies that lifted the meat can 10/10 that way and 6/10 ramped.
        chunk = ActionChunk(ADROIT.joint_names, targets[None], np.array([1.0 / CONTROL_HZ]), self._time)
        self._executor.set_chunk(chunk, now=self._time, measured=self.sim.joint_positions())
        for i in range(SUBSTEPS):
            self.sim.set_targets(self._executor.sample(self._time + i * hand_scene.TIMESTEP))
            self.sim.step(1)
        self._time += SUBSTEPS * hand_scene.TIMESTEP
        self._steps += 1

        terms, reward, terminated, outcome = self.task.step_reward(
            ik_failed=not ik.success, timed_out=self._steps >= self.max_episode_steps
        )
        truncated = self._steps >= self.max_episode_steps and not terminated
        self._needs_reset = terminated or truncated
        info = {
            "reward_terms": terms,
            "success": terms["success"] > 0,
            "ik_failed": not ik.success,
            "ik": ik,
            "steps": self._steps,
        } | outcome
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
            rgb, depth = self._image_renderer.render(self.sim.data, self.sim.camera_id)
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
