"""Serving a G-PAYN actor on the Adroit hand: raw robot inputs in, joint targets out.

`make_runtime` is the family's runtime (`family.py`, the PolicyRuntime contract of
dexstack/runtime.py). The policy node wires the manifest's inputs (schema 2) and hands `act` the
raw values by input name: `joint_states` (every ADROIT joint), one wrench per tactile pad
(`tactile/<pad>`), the latched grasp target pose (`grasp_target`) and the camera image, already
centre-cropped and resized to the input's shape (`preprocess: center_crop_resize`, which
reproduces GraspEnv's square render of the same camera). From them:

- `ObservationBuilder` computes the actor's observation, GraspEnv's keys, by the manifest's
  `runtime.observation` (each key says what it `read`s from which input: see READS);
- the actor (`runtime.Runtime`, numpy + onnxruntime) maps it to an action in [-1, 1]^11;
- `action.PalmCommander` applies the action with GraspEnv's meaning (`action.py`, the one
  implementation) and IK on the robot model alone (`hardware/kinematics.py`): a one-point chunk
  of absolute targets for every ADROIT joint, due one action period (`outputs.dt`) ahead.

Rate: an action is a step of `runtime.action.dt` seconds. Served at another rate, each call
applies the fraction (1 / rate) / dt of it, so the palm and fingers move at the speed the policy
was trained with (at 50 Hz, a fifth of each step every 20 ms). The commanded state is kept until
`reset()` (the node resets at each new episode, on enable and when the clock jumps back); a
target IK cannot reach raises `action.IKFailed` and changes nothing (the node holds).

Imports neither torch nor the simulator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from dexstack import contract
from dexstack.hardware.kinematics import RobotKinematics
from dexstack.hardware.profiles import RobotProfile
from dexstack.policies.gpayn.action import ACTION_DIM, ACTION_NAMES, PalmCommander
from dexstack.policies.gpayn.runtime import Runtime
from dexstack.runtime import ObservationError

FAMILY = "gpayn"
FORCE_Z = 2  # a tactile wrench's normal force: wrench.force.z (contract: tactile pads)

# What an actor observation key can read from the raw inputs, and the input kind it reads:
# joint_positions: the input's joints by `names`; tactile: per pad of `inputs` (wrenches), the
# contact flags (normal force > contract.TACTILE_CONTACT_N) then the normal forces (N) with
# `layout` "flags_and_forces", or the forces only ("forces"); palm_pose: the palm frame (position
# m + quaternion wxyz, world) by forward kinematics of the joint input; grasp_position: the grasp
# pose's position (m, world); grasp_position_in_palm: the same in the palm frame, R_palm^T
# (grasp - palm), the palm by FK of `joints_input`; rgb: the image input as it is.
READS: dict[str, str] = {
    "joint_positions": "joint_positions",
    "tactile": "wrench",
    "palm_pose": "joint_positions",
    "grasp_position": "pose",
    "grasp_position_in_palm": "pose",
    "rgb": "rgb",
}


def _pose(value: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(position, unit quaternion wxyz) of a pose input's value (7,); ObservationError if it is not
    finite or its quaternion is no rotation."""
    value = np.asarray(value, dtype=float)
    if value.shape != (7,) or not np.isfinite(value).all() or np.linalg.norm(value[3:]) <= 1e-6:
        raise ObservationError(f"{where} is not finite or not a rotation")
    return value[:3], value[3:] / np.linalg.norm(value[3:])


class ObservationBuilder:
    """The actor's observation dict from the raw inputs, by `runtime.observation` (see READS).
    Raises ValueError at construction for a key it cannot serve."""

    def __init__(
        self, observation: list[dict[str, Any]], inputs: list[dict[str, Any]], kinematics: RobotKinematics
    ) -> None:
        self.specs = list(observation)
        self.kinematics = kinematics
        by_name = {spec["name"]: spec for spec in inputs}
        self._joint_index: dict[str, np.ndarray] = {}
        for spec in self.specs:
            read = spec.get("read")
            if read not in READS:
                raise ValueError(f"observation {spec.get('name')!r}: unknown read {read!r}; known: {sorted(READS)}")
            wanted = (
                [(name, READS[read]) for name in spec["inputs"]]
                if read == "tactile"
                else [(spec.get("input"), READS[read])]
            )
            if read == "grasp_position_in_palm":
                wanted.append((spec.get("joints_input"), "joint_positions"))
            for name, kind in wanted:
                if name not in by_name or by_name[name]["kind"] != kind:
                    raise ValueError(
                        f"observation {spec['name']!r} reads {read} from {name!r}, which is not a "
                        f"{kind} input of the manifest"
                    )
            if read == "joint_positions":
                index = {n: i for i, n in enumerate(by_name[spec["input"]]["names"])}
                missing = [n for n in spec["names"] if n not in index]
                if missing:
                    raise ValueError(f"observation {spec['name']!r}: joints {missing} are not in {spec['input']!r}")
                self._joint_index[spec["name"]] = np.array([index[n] for n in spec["names"]])
        self._sources = {name: spec["source"] for name, spec in by_name.items()}

    def build(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        """raw: {input name: value} as the node gives them. Raises ObservationError on a grasp
        pose that is not a rotation."""
        obs: dict[str, np.ndarray] = {}
        palm: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per joint input: FK once per call
        for spec in self.specs:
            name, read = spec["name"], spec["read"]
            if read == "joint_positions":
                value = np.asarray(raw[spec["input"]])[self._joint_index[name]]
            elif read == "rgb":
                value = np.asarray(raw[spec["input"]])
            elif read == "tactile":
                forces = np.array([float(np.asarray(raw[pad])[FORCE_Z]) for pad in spec["inputs"]], dtype=float)
                value = (
                    forces
                    if spec["layout"] == "forces"
                    else np.concatenate([(forces > contract.TACTILE_CONTACT_N).astype(float), forces])
                )
            elif read == "palm_pose":
                value = np.concatenate(self._palm(palm, spec["input"], raw))
            else:
                position, _ = _pose(raw[spec["input"]], f"grasp pose on {self._sources[spec['input']]}")
                if read == "grasp_position":
                    value = position
                else:  # grasp_position_in_palm, as GraspEnv: R_palm^T (grasp - palm)
                    palm_position, palm_quaternion = self._palm(palm, spec["joints_input"], raw)
                    rotation = Rotation.from_quat(palm_quaternion, scalar_first=True).as_matrix()
                    value = rotation.T @ (position - palm_position)
            obs[name] = np.asarray(value).astype(np.dtype(spec.get("dtype", "float32")), copy=False)
        return obs

    def _palm(self, cache: dict, joints_input: str, raw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if joints_input not in cache:
            cache[joints_input] = self.kinematics.site_pose(np.asarray(raw[joints_input], dtype=float))
        return cache[joints_input]


class GraspServing:
    """A gpayn policy version served as a one-point joint chunk (the PolicyRuntime contract).

    policy_dir / manifest: a verified store version (schema 2, see export.py). profile: the robot
    (its kinematics and joint order). rate_hz: how often `act` is called; None: once per action.
    """

    def __init__(
        self, policy_dir: str | Path, manifest: dict[str, Any], profile: RobotProfile, rate_hz: float | None = None
    ) -> None:
        if manifest.get("family") != FAMILY:
            raise ValueError(f"gpayn serving serves family {FAMILY!r}, got {manifest.get('family')!r}")
        outputs, rt = manifest["outputs"], manifest.get("runtime") or {}
        action = rt.get("action") or {}
        if tuple(action.get("names") or ()) != ACTION_NAMES:
            raise ValueError(
                f"runtime.action.names {action.get('names')} are not GraspEnv's action layout {list(ACTION_NAMES)}"
            )
        if (
            outputs.get("kind") != "joint_position_chunk"
            or tuple(outputs.get("joint_names", ())) != profile.joint_names
            or outputs.get("chunk_length") != 1
        ):
            raise ValueError(
                f"gpayn serving commands a one-point joint_position_chunk over {profile.name}'s joints "
                f"{list(profile.joint_names)}, the manifest's outputs are {outputs}"
            )
        self.dt = float(action["dt"])
        if float(outputs["dt"]) != self.dt:
            raise ValueError(f"outputs.dt {outputs['dt']} must be the action period runtime.action.dt {self.dt}")
        if rate_hz is not None and not (np.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be a positive number, got {rate_hz}")
        self.step_fraction = 1.0 if rate_hz is None else (1.0 / float(rate_hz)) / self.dt
        self.manifest = manifest
        self.profile = profile
        self.joints_input = next(
            spec["name"]
            for spec in manifest["inputs"]
            if spec["kind"] == "joint_positions" and tuple(spec.get("names", ())) == profile.joint_names
        )
        self.actor = Runtime(policy_dir, manifest)
        if self.actor.action_dim != ACTION_DIM:
            raise ValueError(f"the actor makes {self.actor.action_dim} actions, GraspEnv's have {ACTION_DIM}")
        kinematics = RobotKinematics(profile)
        self.commander = PalmCommander(kinematics, action["scales"])
        self.builder = ObservationBuilder(rt["observation"], manifest["inputs"], kinematics)
        self.last_action: np.ndarray | None = None

    def reset(self) -> None:
        """New episode, re-enabled or clock jumped back: the next command starts from the measured state."""
        self.commander.reset()
        self.actor.reset()

    def observation(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        """The actor's observation (GraspEnv's keys) from the node's raw inputs."""
        return self.builder.build(raw)

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        """Raw inputs {input name: value} -> joint targets (1, n_joints) in the profile's order, due
        outputs.dt after the observation. Raises ObservationError or action.IKFailed; both leave the
        commanded state as it was."""
        action = self.actor.act(self.builder.build(observation))
        targets = self.commander.command(action, observation[self.joints_input], self.step_fraction)
        self.last_action = action
        return targets[None]


def make_runtime(
    policy_dir: Path, manifest: dict[str, Any], *, profile: RobotProfile, rate_hz: float | None
) -> GraspServing:
    """The gpayn family's runtime (`family.py`): see GraspServing."""
    return GraspServing(policy_dir, manifest, profile, rate_hz)
