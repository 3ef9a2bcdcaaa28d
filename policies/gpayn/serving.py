"""Serving a G-PAYN actor on the Adroit hand, without ROS: robot data in, joint targets out.

The actor (`runtime.Runtime`, numpy + onnxruntime) maps an observation dict to an action in
[-1, 1]^11 with GraspEnv's meaning (`env.py`): palm translation and rotation in the world frame
and one closing amount per finger, each a step of `outputs.scales` (default `MAX_TRANSLATION`,
`MAX_ROTATION`, `MAX_FINGER_DELTA`) per `outputs.dt` seconds. What turns that into a command is
here, so that the policy node (ROS) and tests share it:

- `HandKinematics`: forward kinematics of the palm frame and `HandSim.solve_palm_ik` on a
  render-free `HandSim` whose joints are set first (the wrist joints sit between the arm and the
  palm: IK solves with the hand at its commanded joints, so the command is self-consistent).
- `integrate_action` (pure): GraspEnv's update of the palm target pose and finger closing
  fractions by one (possibly partial) action step.
- `PalmCommander`: keeps that state like GraspEnv does. It starts from the measured state (palm
  pose by forward kinematics, closing fractions projected from the hand joints), so a zero action
  holds the current pose, and from then on integrates its own commanded state, never the measured
  one, until `reset()` (the policy node resets at each new episode, on enable and when the clock
  jumps). GraspEnv, where the policy was trained, never re-anchors either: the policy lifts a
  heavy object by leading the arm, and its fingers squeeze by commanding past where the object
  stops them. A target IK cannot reach raises `IKFailed` and changes nothing: the node holds and
  the next action starts again from the last reachable target.
- `ObservationBuilder`: the actor's observation dict from raw data (joint positions, pad normal
  forces, the grasp target pose, camera images), by the manifest inputs' `read` fields
  (`dexstack/manifest.py`); camera images are centre-cropped and resized to the input's size
  (`preprocess: center_crop_resize`), which reproduces GraspEnv's square render of the same
  camera (same vertical field of view).
- `ServingPolicy`: what the policy node serves for family "gpayn". Its `raw_inputs` are the
  assembler specs the node subscribes to (joint states, tactile pads, cameras); the grasp target
  pose is latched context set through `set_pose` (published once per episode, so it is never
  "stale"); `act(raw)` returns a one-point chunk of absolute targets for every ADROIT joint, and
  `node_manifest` describes that chunk, so the node's publishing path is the joint-chunk one.

Rate: an action is a step of `outputs.dt` seconds. Served at another rate, each call applies the
fraction (1 / rate) / dt of it, so the palm and fingers move at the speed the policy was trained
with (at 50 Hz, a fifth of each step every 20 ms).

`annotate_manifest` fills in the `read` fields, sources and image preprocessing for GraspEnv's
observation keys on a manifest that `export.py` wrote.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from dexstack import contract
from dexstack.hardware.profiles import ADROIT, RobotProfile
from dexstack.policies.gpayn.env import ACTION_DIM, ARM_DIM, MAX_FINGER_DELTA, MAX_ROTATION, MAX_TRANSLATION
from dexstack.runtime import ObservationError
from dexstack.sim.hand_core import FINGER_OF_JOINT, HAND_CLOSED, HAND_OPEN, HandSim, IKResult, finger_targets
from dexstack.sim.hand_scene import HAND_JOINTS, TOUCH_PADS

FAMILY = "gpayn"
# What each of the 11 action elements commands (GraspEnv's layout; the names train.py exports),
# and its size at +-1.
ACTION_NAMES: tuple[str, ...] = (
    "palm_dx", "palm_dy", "palm_dz", "palm_rx", "palm_ry", "palm_rz", *(f"close_{pad}" for pad in TOUCH_PADS),
)
DEFAULT_SCALES: tuple[float, ...] = (MAX_TRANSLATION,) * 3 + (MAX_ROTATION,) * 3 + (MAX_FINGER_DELTA,) * 5

TACTILE_NAMESPACE = contract.tactile_topic("x").rsplit("/", 1)[0]  # "/tactile": pads are <ns>/<pad>
JOINT_STATES_INPUT = "joint_states"  # raw input names (the node's assembler keys)
GRASP_READS = ("grasp_position", "grasp_position_in_palm", "grasp_pose")

# How each GraspEnv observation key is read on the robot (`GraspEnv._observation`).
GRASP_ENV_READS: dict[str, dict[str, Any]] = {
    "hand_joints": {"read": "joint_positions", "source": contract.JOINT_STATES, "names": list(HAND_JOINTS)},
    "touch": {"read": "tactile", "source": TACTILE_NAMESPACE, "pads": list(TOUCH_PADS), "layout": "flags_and_forces"},
    "ee_pose": {"read": "palm_pose", "source": contract.JOINT_STATES},
    "grasp_center": {"read": "grasp_position", "source": contract.GRASP_TARGET_POSE},
    "grasp_center_in_palm": {"read": "grasp_position_in_palm", "source": contract.GRASP_TARGET_POSE},
}


class IKFailed(RuntimeError):
    """The commanded palm pose is out of the arm's reach: the caller must hold."""


class AwaitingInput(ObservationError):
    """An input the actor needs has not arrived yet (the grasp pose): a hold at WARN level."""

    hold_level = "WARN"


def annotate_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of an exported gpayn manifest with what serving needs filled in: each `vector` input
    named like a GraspEnv observation key gets its `read` and source (GRASP_ENV_READS), rgb inputs
    `preprocess: center_crop_resize`, and null action `names` / `scales` GraspEnv's. ValueError
    for a vector input this table does not know."""
    if not isinstance(manifest, dict) or manifest.get("family") != FAMILY:
        raise ValueError(f"expected a {FAMILY!r} manifest, got family {manifest.get('family') if isinstance(manifest, dict) else manifest!r}")
    out = copy.deepcopy(manifest)
    for spec in out["inputs"]:
        if spec.get("kind") == "vector":
            if spec["name"] not in GRASP_ENV_READS:
                raise ValueError(f"vector input {spec['name']!r} is not a GraspEnv observation key "
                                 f"{sorted(GRASP_ENV_READS)}; give it a `read` by hand")
            spec.update(copy.deepcopy(GRASP_ENV_READS[spec["name"]]))
        elif spec.get("kind") == "rgb":
            spec["preprocess"] = "center_crop_resize"
    outputs = out["outputs"]
    if outputs.get("names") is None:
        outputs["names"] = list(ACTION_NAMES)
    if outputs.get("scales") is None:
        outputs["scales"] = list(DEFAULT_SCALES)
    return out


# --- pure pieces ----------------------------------------------------------------------------

def check_action(action: Any, dim: int = ACTION_DIM) -> np.ndarray:
    """The action as float64 (dim,) clipped to [-1, 1]; TypeError if not numeric, ValueError for a
    wrong shape or non-finite values."""
    try:
        a = np.asarray(action, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"action must be a numeric array of {dim} values, got {type(action).__name__}") from exc
    if a.shape != (dim,):
        raise ValueError(f"action must have shape ({dim},) (3 palm translation, 3 palm rotation, 5 fingers), "
                         f"got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"action must be finite, got {a}")
    return np.clip(a, -1.0, 1.0)


def integrate_action(position: np.ndarray, quaternion: np.ndarray, fractions: np.ndarray, action: np.ndarray,
                     scales: np.ndarray, step_fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GraspEnv's action update: the palm target (position m, quaternion wxyz, world) moved by
    action[0:3] x scale and turned by the world-frame rotation vector action[3:6] x scale, and the
    five closing fractions changed by action[6:11] x scale, clipped to [0, 1]; all steps times
    `step_fraction` (the part of one action period this call covers)."""
    step = np.asarray(action, dtype=float) * np.asarray(scales, dtype=float) * float(step_fraction)
    new_position = np.asarray(position, dtype=float) + step[:3]
    turn = Rotation.from_rotvec(step[3:ARM_DIM])
    new_quaternion = (turn * Rotation.from_quat(quaternion, scalar_first=True)).as_quat(scalar_first=True)
    new_fractions = np.clip(np.asarray(fractions, dtype=float) + step[ARM_DIM:], 0.0, 1.0)
    return new_position, new_quaternion, new_fractions


def finger_fractions(hand_q: np.ndarray) -> np.ndarray:
    """Closing fraction (5,) of each finger (thumb ... little) that best explains the hand joints
    (24,): the least-squares inverse of `hand_core.finger_targets` along each finger's open ->
    closed line, clipped to [0, 1]."""
    q = np.asarray(hand_q, dtype=float)
    if q.shape != (len(HAND_JOINTS),) or not np.isfinite(q).all():
        raise ValueError(f"hand joints must be {len(HAND_JOINTS)} finite numbers, got shape {q.shape}")
    span = HAND_CLOSED - HAND_OPEN
    fractions = np.zeros(len(TOUCH_PADS))
    for finger in range(len(TOUCH_PADS)):
        joints = FINGER_OF_JOINT == finger
        fractions[finger] = (q[joints] - HAND_OPEN[joints]) @ span[joints] / (span[joints] @ span[joints])
    return np.clip(fractions, 0.0, 1.0)


def center_crop_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3): the centred crop with the output's aspect ratio,
    area-resized. For a camera whose field of view is set vertically (MuJoCo's fovy), this is
    what a render of the same camera at height x width shows."""
    import cv2  # a robot requirement (requirements-robot.txt); imported where it is needed

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ObservationError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if height > h or width > w:
        raise ObservationError(f"image {w}x{h} is smaller than the policy's {width}x{height}")
    if w * height > h * width:  # wider than the output: crop columns
        crop_w = int(round(h * width / height))
        x0 = (w - crop_w) // 2
        image = image[:, x0:x0 + crop_w]
    else:
        crop_h = int(round(w * height / width))
        y0 = (h - crop_h) // 2
        image = image[y0:y0 + crop_h]
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)


# --- kinematics and the commanded state ---------------------------------------------------

class HandKinematics:
    """Palm forward kinematics and IK of the ADROIT arm + hand on a render-free HandSim (the scene's
    object does not take part: IK moves only the six arm joints and ignores contacts)."""

    def __init__(self) -> None:
        self.sim = HandSim(render=False)
        m = self.sim.model
        joints = self.sim.names.arm_joints + self.sim.names.hand_joints
        self._qpos_adr = np.array([m.jnt_qposadr[m.joint(j).id] for j in joints])
        self.n_joints = len(joints)

    def _set_joints(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=float)
        if q.shape != (self.n_joints,) or not np.isfinite(q).all():
            raise ValueError(f"joint positions must be {self.n_joints} finite numbers (ADROIT order), got shape {q.shape}")
        self.sim.data.qpos[self._qpos_adr] = q
        mujoco.mj_kinematics(self.sim.model, self.sim.data)

    def palm_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Palm frame (position m, quaternion wxyz), world, at joint positions q (30,)."""
        self._set_joints(q)
        return self.sim.palm_pose()

    def solve(self, position: np.ndarray, quaternion: np.ndarray, q: np.ndarray, arm_q0: np.ndarray) -> IKResult:
        """`HandSim.solve_palm_ik` with the hand (and wrist) at q[6:] (q: 30 joints), from `arm_q0`."""
        self._set_joints(q)
        return self.sim.solve_palm_ik(position, quaternion, arm_q0=arm_q0)


@dataclass
class PalmTarget:
    """The commanded state: palm target pose (world), arm joints that reach it, finger fractions."""

    position: np.ndarray
    quaternion: np.ndarray
    arm_q: np.ndarray
    fractions: np.ndarray


class PalmCommander:
    """Actions -> ADROIT joint targets (30,), keeping the palm target and finger fractions."""

    def __init__(self, kinematics: HandKinematics, scales: np.ndarray | list[float] = DEFAULT_SCALES) -> None:
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
        position, quaternion = self.kinematics.palm_pose(q)
        self.target = PalmTarget(position, quaternion, q[:ARM_DIM].copy(), finger_fractions(q[ARM_DIM:]))
        return self.target

    def command(self, action: Any, q: np.ndarray, step_fraction: float = 1.0) -> np.ndarray:
        """Apply `action` (11,) for `step_fraction` of its period from the measured joints q (30,);
        returns the joint targets (30,): IK's arm joints, then `finger_targets` of the fractions.
        Raises IKFailed (state unchanged) when the new palm target is out of reach."""
        a = check_action(action)
        if not (np.isfinite(step_fraction) and step_fraction > 0):
            raise ValueError(f"step_fraction must be a positive number, got {step_fraction}")
        q = np.asarray(q, dtype=float)
        # Only the first command after a reset starts from the measured state. Re-anchoring
        # whenever the arm lagged its command by 0.1 (m or rad) dropped the palm target and
        # re-projected the squeezing fingers' fractions from where the object stopped them in
        # the middle of a bleach cleanser's lift (ARRx lagged 0.11 rad): the grip loosened and
        # the object slipped, 0 of 20 lifts through ROS against 20 of 20 in GraspEnv.
        target = self.start(q) if self.target is None else self.target
        position, quaternion, fractions = integrate_action(target.position, target.quaternion, target.fractions,
                                                           a, self.scales, step_fraction)
        hand = finger_targets(fractions)
        # IK with the hand at its measured joints, as GraspEnv solves it (the policy was trained
        # on that): with the commanded ones the arm compensated for a wrist pose the contact
        # forces do not let the hand reach, and a trained actor lifted 0 of 100 times through ROS.
        ik = self.kinematics.solve(position, quaternion, np.concatenate([target.arm_q, q[ARM_DIM:]]),
                                   arm_q0=target.arm_q)
        if not ik.success:
            raise IKFailed(f"palm target {np.round(position, 3).tolist()} m is out of reach: {ik.message}")
        self.target = PalmTarget(position, quaternion, ik.arm_q.copy(), fractions)
        return np.concatenate([ik.arm_q, hand])


# --- observations ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GraspPose:
    """The grasp target (position m, quaternion wxyz, world) and the stamp of its message."""

    stamp_ns: int
    position: np.ndarray
    quaternion: np.ndarray


class ObservationBuilder:
    """The actor's observation dict from raw robot data, by the manifest inputs (see the module
    docstring). Raises ValueError at construction for inputs it cannot serve (depth, unknown reads)."""

    def __init__(self, inputs: list[dict[str, Any]], kinematics: HandKinematics,
                 joint_names: tuple[str, ...] = ADROIT.joint_names) -> None:
        self.inputs = list(inputs)
        self.kinematics = kinematics
        index = {name: i for i, name in enumerate(joint_names)}
        self._joint_index: dict[str, np.ndarray] = {}
        self.pads: list[str] = []
        self.needs_grasp = False
        for spec in self.inputs:
            kind, read = spec["kind"], spec.get("read")
            if kind == "joint_positions" or read == "joint_positions":
                missing = [n for n in spec["names"] if n not in index]
                if missing:
                    raise ValueError(f"input {spec['name']!r}: joints {missing} are not in the joint state")
                self._joint_index[spec["name"]] = np.array([index[n] for n in spec["names"]])
            elif kind == "vector" and read == "tactile":
                self.pads += [p for p in spec["pads"] if p not in self.pads]
            elif kind == "vector" and read in GRASP_READS:
                self.needs_grasp = True
            elif kind == "vector" and read == "palm_pose" or kind == "rgb":
                pass
            else:
                raise ValueError(f"input {spec['name']!r} (kind {kind!r}, read {read!r}) cannot be served by gpayn")

    def build(self, q: np.ndarray, pad_forces: dict[str, float], grasp: GraspPose | None,
              images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """q: joint positions (ADROIT order); pad_forces: {pad: normal force N}; grasp: the target
        pose (needed when an input reads it); images: {input name: camera image (H, W, 3) uint8}."""
        obs: dict[str, np.ndarray] = {}
        palm: tuple[np.ndarray, np.ndarray] | None = None
        for spec in self.inputs:
            name, kind, read = spec["name"], spec["kind"], spec.get("read")
            dtype = np.dtype(spec.get("dtype", "float32"))
            if name in self._joint_index:
                value = np.asarray(q)[self._joint_index[name]]
            elif kind == "rgb":
                value = center_crop_resize(images[name], *spec["shape"][:2]) \
                    if spec.get("preprocess") == "center_crop_resize" else np.asarray(images[name])
            elif read == "tactile":
                forces = np.array([pad_forces[p] for p in spec["pads"]], dtype=float)
                value = forces if spec["layout"] == "forces" else \
                    np.concatenate([(forces > contract.TACTILE_CONTACT_N).astype(float), forces])
            else:
                if palm is None:
                    palm = self.kinematics.palm_pose(q)
                if read == "palm_pose":
                    value = np.concatenate(palm)
                elif grasp is None:
                    raise AwaitingInput(f"no grasp pose yet on {spec['source']}")
                elif read == "grasp_position":
                    value = grasp.position
                elif read == "grasp_pose":
                    value = np.concatenate([grasp.position, grasp.quaternion])
                else:  # grasp_position_in_palm, as GraspEnv: R_palm^T (grasp - palm)
                    rotation = Rotation.from_quat(palm[1], scalar_first=True).as_matrix()
                    value = rotation.T @ (grasp.position - palm[0])
            obs[name] = np.asarray(value).astype(dtype, copy=False)
        return obs


# --- what the policy node serves ------------------------------------------------------------

class ServingPolicy:
    """A gpayn policy version served as a one-point joint chunk (the PolicyRuntime interface).

    policy_dir / manifest: a verified store version (manifest validated, `read` fields present).
    control_period_s: how often `act` is called (1 / the node's rate); None: once per `dt`.
    """

    def __init__(self, policy_dir: str | Path, manifest: dict[str, Any], profile: RobotProfile = ADROIT,
                 control_period_s: float | None = None) -> None:
        from dexstack.policies.gpayn.runtime import Runtime

        if manifest.get("family") != FAMILY:
            raise ValueError(f"ServingPolicy serves family {FAMILY!r}, got {manifest.get('family')!r}")
        if profile.name != ADROIT.name:
            raise ValueError(f"gpayn serving drives the {ADROIT.name!r} hand (its IK model), not {profile.name!r}")
        outputs = manifest["outputs"]
        if outputs.get("kind") != "action" or int(outputs.get("action_dim", 0)) != ACTION_DIM:
            raise ValueError(f"gpayn serving needs outputs of kind 'action' with action_dim {ACTION_DIM}, got "
                             f"kind {outputs.get('kind')!r}, action_dim {outputs.get('action_dim')!r}")
        names = outputs.get("names")
        if names is not None and tuple(names) != ACTION_NAMES:
            raise ValueError(f"outputs.names {names} are not GraspEnv's action layout {list(ACTION_NAMES)}")
        self.dt = float(outputs["dt"])
        if control_period_s is not None and not (np.isfinite(control_period_s) and control_period_s > 0):
            raise ValueError(f"control_period_s must be a positive number of seconds, got {control_period_s}")
        self.step_fraction = 1.0 if control_period_s is None else float(control_period_s) / self.dt
        self.profile = profile
        self.manifest = manifest
        self.runtime = Runtime(policy_dir, manifest)
        self.kinematics = HandKinematics()
        scales = outputs.get("scales")
        self.commander = PalmCommander(self.kinematics, DEFAULT_SCALES if scales is None else scales)
        self.builder = ObservationBuilder(manifest["inputs"], self.kinematics, profile.joint_names)
        self.raw_inputs = self._raw_inputs()
        self.pose_sources: tuple[str, ...] = (contract.GRASP_TARGET_POSE,) if self.builder.needs_grasp else ()
        self.grasp: GraspPose | None = None
        self.grasp_error: str | None = None
        self.episode_start_ns: int | None = None
        self.last_action: np.ndarray | None = None
        # The node publishes what `act` returns as a joint chunk: one point, dt ahead.
        self.node_manifest = dict(manifest, outputs={
            "kind": "joint_position_chunk", "joint_names": list(profile.joint_names), "chunk_length": 1,
            "dt": self.dt, "action": outputs})

    def _raw_inputs(self) -> list[dict[str, Any]]:
        """The node's assembler specs: the whole joint state first (the primary input), each pad's
        normal force, then each camera input at the camera's size."""
        raw = [{"name": JOINT_STATES_INPUT, "kind": "joint_positions", "source": contract.JOINT_STATES,
                "names": list(self.profile.joint_names), "shape": [self.profile.n_joints], "dtype": "float64"}]
        # The assembler knows joint_positions / rgb / depth. Pads are published with the joint
        # states (same stamp, same rate), so they take the joint states' staleness limit and
        # lockstep matching; `message` tells the node to read WrenchStamped.wrench.force.z.
        for pad in self.builder.pads:
            raw.append({"name": f"tactile/{pad}", "kind": "joint_positions", "source": contract.tactile_topic(pad),
                        "message": contract.TACTILE_MSG_TYPE, "shape": [1], "dtype": "float64"})
        for spec in self.manifest["inputs"]:
            if spec["kind"] == "rgb":
                camera = next((c for c in self.profile.cameras
                               if contract.camera_color_topic(c.name) == spec["source"]), None)
                if camera is None:
                    raise ValueError(f"input {spec['name']!r}: {spec['source']} is not a camera of {self.profile.name}")
                raw.append({"name": f"camera/{spec['name']}", "kind": "rgb", "source": spec["source"],
                            "shape": [camera.height, camera.width, 3], "dtype": "uint8"})
        return raw

    # --- latched context ------------------------------------------------------------------
    def set_pose(self, source: str, stamp_ns: int, position: Any, quaternion: Any) -> None:
        """A grasp target pose message's data (world frame). A pose stamped before the current
        episode began is ignored (the previous scene's plan); a non-finite one is remembered as
        an error, so acting on it holds with the reason."""
        if source not in self.pose_sources:
            raise KeyError(f"no pose input {source!r}; pose inputs: {list(self.pose_sources)}")
        if self.episode_start_ns is not None and stamp_ns < self.episode_start_ns:
            return
        position, quaternion = np.asarray(position, dtype=float), np.asarray(quaternion, dtype=float)
        if position.shape != (3,) or quaternion.shape != (4,) or not (
                np.isfinite(position).all() and np.isfinite(quaternion).all() and np.linalg.norm(quaternion) > 1e-6):
            self.grasp, self.grasp_error = None, f"grasp pose on {source} is not finite or not a rotation"
            return
        self.grasp = GraspPose(int(stamp_ns), position, quaternion / np.linalg.norm(quaternion))
        self.grasp_error = None

    def episode_started(self, stamp_ns: int) -> None:
        """A new scene from `stamp_ns` on: a grasp pose planned before it no longer applies."""
        self.episode_start_ns = int(stamp_ns)
        if self.grasp is not None and self.grasp.stamp_ns < stamp_ns:
            self.grasp = None

    def carry_over_from(self, other: Any) -> None:
        """Hot swap: keep the grasp pose (published once per episode) of the policy being replaced."""
        if isinstance(other, ServingPolicy) and self.pose_sources:
            self.grasp, self.grasp_error, self.episode_start_ns = other.grasp, other.grasp_error, other.episode_start_ns

    # --- PolicyRuntime --------------------------------------------------------------------
    def reset(self) -> None:
        """New episode or re-enabled: the next command starts from the measured state."""
        self.commander.reset()
        self.runtime.reset()

    def observation(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The actor's observation from the node's raw inputs."""
        if self.grasp_error is not None:
            raise ObservationError(self.grasp_error)
        q = np.asarray(raw[JOINT_STATES_INPUT], dtype=float)
        forces = {pad: float(np.asarray(raw[f"tactile/{pad}"]).reshape(-1)[0]) for pad in self.builder.pads}
        images = {spec["name"][len("camera/"):]: raw[spec["name"]] for spec in self.raw_inputs
                  if spec["kind"] == "rgb"}
        return self.builder.build(q, forces, self.grasp if self.pose_sources else None, images)

    def act(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """Raw inputs {raw input name: value} -> joint targets (1, n_joints) for `node_manifest`'s
        joints, due dt after the observation. Raises ObservationError (AwaitingInput without a
        grasp pose) or IKFailed; both leave the commanded state as it was."""
        obs = self.observation(raw)
        action = self.runtime.act(obs)
        targets = self.commander.command(action, raw[JOINT_STATES_INPUT], self.step_fraction)
        self.last_action = action
        return targets[None]
