"""Robot profiles: joint names, limits, controller and camera names (one per robot).

The sim builds its robot from a profile and the real robot's driver is described by the
same profile, so a policy manifest checked against a profile is valid for both. A profile also
names its robot model (`RobotModel`: the MJCF builder in `hardware/models.py`, the base pose and
the IK settings), from which `hardware/kinematics.py` computes FK/IK and the sim composes scenes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from dexstack import contract


@dataclass(frozen=True)
class CameraSpec:
    name: str
    width: int
    height: int
    hz: float = contract.CAMERA_HZ


# How a profile's gripper joint reaches the robot (GripperSpec.interface; docs/HARDWARE.md, "Gripper").
GRIPPER_INTERFACES = ("arm_controller", "trajectory", "parallel_gripper_command", "gripper_command")


@dataclass(frozen=True)
class GripperSpec:
    """The gripper of a profile: one of its joints (`joint`), and how commands reach it.

    `interface` (a deployment may override it and `controller` with the safety filter's
    `gripper_interface` / `gripper_controller` parameters):
    - "arm_controller": the gripper joint is one more joint of the arm's JointTrajectoryController
      (the sim, mock hardware);
    - "trajectory": a JointTrajectoryController of its own, `/<controller>/joint_trajectory`, gets
      the gripper joint's part of every command and the arm controller the rest;
    - "parallel_gripper_command": ros2_controllers' parallel_gripper_action_controller, action
      `/<controller>/gripper_cmd` (control_msgs/action/ParallelGripperCommand);
    - "gripper_command": control_msgs/action/GripperCommand on `/<controller>/gripper_cmd`
      (ros2_controllers' gripper_action_controller, removed after Jazzy).
    Action goals carry `action_position_scale` x the joint position and `max_effort` (N; 0: the
    controller's own limit); a new goal (which preempts the running one) is sent only when the
    target moves by more than `deadband` (joint units)."""

    joint: str
    interface: str = "arm_controller"
    controller: str = "gripper_controller"
    action_position_scale: float = 1.0
    max_effort: float = 0.0
    deadband: float = 1e-3


@dataclass(frozen=True)
class IKSettings:
    """Damped least-squares IK of a robot (`hardware/kinematics.py`): at most `max_iterations`
    Jacobian steps of damping `damping` (m, rad), each clipped to the joint limits, stopping
    within 0.1 mm / 1 mrad. rotation_error: "quaternion" (MuJoCo's quaternion difference) or
    "axes" (half the sum of the cross products of the frames' axes, a small-angle form);
    result: the "best" iterate (least position + 0.1 x rotation error) or the "last" one;
    clip_start: clip the start into the limits first; jacobian_order: memory order ("C" or "F")
    of the stacked Jacobian. BLAS sums in another order for each, and an IK that runs into the
    limits amplifies that last-bit difference into another solution, so each robot keeps the
    order its expert and policies were made with. A solution further than the tolerances (m, rad)
    from the target is a failure."""

    max_iterations: int
    damping: float
    rotation_error: str = "quaternion"
    result: str = "best"
    clip_start: bool = True
    jacobian_order: str = "F"
    position_tolerance: float = 0.005
    rotation_tolerance: float = 0.05


@dataclass(frozen=True)
class RobotModel:
    """Where a robot's kinematic model comes from: `builder` ("module:callable", called with the
    profile) returns the robot's MJCF alone (`hardware/models.py`); its base sits at `base_pos`
    (m) / `base_quat` (wxyz) in the world frame. IK places the site `ik_site` by moving the first
    `ik_joints` joints of the profile."""

    builder: str
    ik_site: str
    ik_joints: int
    ik: IKSettings
    base_pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    base_quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class RobotProfile:
    """What a robot exposes. Positions in radians (revolute) or metres (prismatic)."""

    name: str
    joint_names: tuple[str, ...]
    position_lower: tuple[float, ...]
    position_upper: tuple[float, ...]
    velocity_limit: tuple[float, ...]  # rad/s or m/s
    home: tuple[float, ...]  # a safe start configuration
    controller: str  # the default JointTrajectoryController name (launch argument `controller:=` overrides)
    cameras: tuple[CameraSpec, ...] = field(default_factory=tuple)
    # Tactile pads, each published on contract.tactile_topic(pad) as a WrenchStamped in the
    # frame of the link carrying it (`tactile_frames`, same order).
    tactile_pads: tuple[str, ...] = ()
    tactile_frames: tuple[str, ...] = ()
    # How far (rad or m) a command may lead the measured position beyond what the velocity limit
    # allows in one step: position-servoed fingers squeeze an object by commanding closure past
    # the contact the object stops them at. () = 0 for every joint.
    tracking_lead: tuple[float, ...] = ()
    model: RobotModel | None = None  # the robot's model file and IK (None: no kinematics)
    # The robot's JointTrajectoryController setting `interpolate_from_desired_state` (humble:
    # `open_loop_control`): True starts each new chunk from the last command, which JTC's docs ask
    # for when one reference is streamed as many messages (our chunks); JTC's default, False,
    # starts from the measured position. The sim and mock hardware execute what this says.
    jtc_interpolate_from_desired_state: bool = True
    gripper: GripperSpec | None = None  # a gripper joint that may have its own controller
    # The farthest (rad or m) a chunk's first point may be from the current command before the
    # safety filter calls the chunk implausible (ERROR hold instead of a clamp that drives every
    # joint to its limit). () = the joint's whole position range (no plausibility check).
    max_first_step: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for attr in (
            ("position_lower", "position_upper", "velocity_limit", "home")
            + (("tracking_lead",) if self.tracking_lead else ())
            + (("max_first_step",) if self.max_first_step else ())
        ):
            if len(getattr(self, attr)) != n:
                raise ValueError(f"profile {self.name}: {attr} has {len(getattr(self, attr))} entries, expected {n}")
        if self.gripper is not None:
            self.gripper_interface(self.gripper.interface)
            if self.gripper.joint not in self.joint_names:
                raise ValueError(f"profile {self.name}: gripper joint {self.gripper.joint!r} is not one of its joints")
        if len(self.tactile_frames) != len(self.tactile_pads):
            raise ValueError(
                f"profile {self.name}: {len(self.tactile_pads)} tactile pads but "
                f"{len(self.tactile_frames)} tactile frames"
            )

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
    def lead(self) -> np.ndarray:
        return np.asarray(self.tracking_lead or (0.0,) * self.n_joints, dtype=np.float64)

    @property
    def first_step_bound(self) -> np.ndarray:
        return np.asarray(self.max_first_step or (self.upper - self.lower), dtype=np.float64)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    @property
    def trajectory_topic(self) -> str:
        return contract.trajectory_topic(self.controller)

    @property
    def policy_output_topic(self) -> str:
        return contract.policy_output_topic(self.controller)

    def with_controller(self, controller: str) -> RobotProfile:
        """This robot driven through the JointTrajectoryController `controller` (the launch argument
        `controller:=`; empty: this profile's own). Every topic derived from the controller follows."""
        if not controller or controller == self.controller:
            return self
        return dataclasses.replace(self, controller=contract.check_controller_name(controller))

    def gripper_interface(self, interface: str) -> str:
        """`interface` if this profile's gripper can use it, else ValueError naming the choices."""
        if self.gripper is None and interface != "arm_controller":
            raise ValueError(f"profile {self.name} has no separate gripper: gripper_interface must be arm_controller")
        if interface not in GRIPPER_INTERFACES:
            raise ValueError(f"gripper_interface {interface!r} is not one of {', '.join(GRIPPER_INTERFACES)}")
        return interface

    def topics(self) -> list[contract.TopicSpec]:
        return contract.robot_topics(self.controller, self.camera_names) + contract.tactile_topics(self.tactile_pads)

    def recorded_topics(self) -> dict[str, str]:
        """Topic -> ROS type a recording of this robot holds by default: its topics, the policy's
        output, the operator's instruction and e-stop, and (in sim) the object pose and episodes."""
        specs = [
            *self.topics(),
            contract.TopicSpec(
                self.policy_output_topic, "trajectory_msgs/msg/JointTrajectory", contract.QoSKind.COMMAND
            ),
        ]
        specs += [s for s in contract.OPERATOR_TOPICS if s.name in (contract.TASK_INSTRUCTION, contract.ESTOP)]
        specs += [s for s in contract.SIM_ONLY_TOPICS if s.name in (contract.SIM_OBJECT_POSE, contract.SIM_EPISODE)]
        return {s.name: s.msg_type for s in specs}

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
        "panda_joint1",
        "panda_joint2",
        "panda_joint3",
        "panda_joint4",
        "panda_joint5",
        "panda_joint6",
        "panda_joint7",
        "panda_finger_joint1",
    ),
    position_lower=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973, 0.0),
    position_upper=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973, 0.04),
    velocity_limit=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61, 0.1),
    home=(0.0, -0.5, 0.0, -2.4, 0.0, 1.9, 0.785, 0.04),
    controller="arm_controller",
    # The sim and mock drive the fingers with the arm; franka_ros2 has a gripper of its own (a
    # deployment sets the safety filter's gripper_interface, e.g. config/panda_real.yaml).
    gripper=GripperSpec("panda_finger_joint1"),
    cameras=(CameraSpec("wrist", 96, 96), CameraSpec("scene", 96, 96)),
    # ~0.5 s at the velocity limit for the arm; any finger command in (or near) its range is plausible.
    max_first_step=(1.0,) * 7 + (0.1,),
    # IK of the TCP (between the finger pads) over the 7 arm joints, as the scripted expert plans.
    model=RobotModel(
        "dexstack.hardware.models:panda_model",
        ik_site="tcp",
        ik_joints=7,
        ik=IKSettings(
            max_iterations=60, damping=0.03, rotation_error="axes", result="last", clip_start=False, jacobian_order="C"
        ),
    ),
)


# The Adroit arm + 24-DoF hand of the G-PAYN scene (`sim/hand_scene.py` builds it from this
# profile; tests/test_hand_scene.py checks the limits against the compiled model). The "arm" is
# Adroit's forearm on six joints about its mount: ARTx/y/z slides (m), ARRx/y/z hinges (rad).
_ADROIT_ARM = ("ARTx", "ARTy", "ARTz", "ARRx", "ARRy", "ARRz")
_ADROIT_HAND = (
    "WRJ1",
    "WRJ0",
    "FFJ3",
    "FFJ2",
    "FFJ1",
    "FFJ0",
    "MFJ3",
    "MFJ2",
    "MFJ1",
    "MFJ0",
    "RFJ3",
    "RFJ2",
    "RFJ1",
    "RFJ0",
    "LFJ4",
    "LFJ3",
    "LFJ2",
    "LFJ1",
    "LFJ0",
    "THJ4",
    "THJ3",
    "THJ2",
    "THJ1",
    "THJ0",
)
# Joint limits as in the Adroit model, except ARTy (the lift), whose model range is [0, 0.2] m:
# at 0 the palm's skin is still 9.4 cm above the table, above the 8.2 cm potted meat can it must
# touch, and at 0.2 the hand cannot lift the tallest objects (the 25 cm bleach cleanser is
# grasped at ARTy ~ 0.16 m) by the 10-15 cm a grasp episode needs. The table's collision keeps
# the hand out of it.
_ADROIT_ARM_LOWER = (-0.25, -0.10, -0.3, -0.75, -0.75, -0.75)
_ADROIT_ARM_UPPER = (0.25, 0.40, 0.5, 0.75, 0.75, 0.75)
_FINGER_LOWER = (-0.436, 0.0, 0.0, 0.0)
_FINGER_UPPER = (0.436, 1.571, 1.571, 1.571)
_ADROIT_HAND_LOWER = (
    (-0.524, -0.785) + _FINGER_LOWER * 3 + (0.0,) + _FINGER_LOWER + (-1.047, 0.0, -0.262, -0.524, -1.571)
)
_ADROIT_HAND_UPPER = (0.175, 0.611) + _FINGER_UPPER * 3 + (0.698,) + _FINGER_UPPER + (1.047, 1.309, 0.262, 0.524, 0.0)

# 6 arm joints (m, rad) then 24 hand joints (rad). Velocity limits are ours (the model has
# none): a slow arm, fingers that close in ~0.5 s. One tactile pad per distal phalanx, in this
# fixed order everywhere (observations, /tactile/<pad>, rewards).
ADROIT = RobotProfile(
    name="adroit",
    joint_names=_ADROIT_ARM + _ADROIT_HAND,
    position_lower=_ADROIT_ARM_LOWER + _ADROIT_HAND_LOWER,
    position_upper=_ADROIT_ARM_UPPER + _ADROIT_HAND_UPPER,
    velocity_limit=(0.5,) * 3 + (1.5,) * 3 + (3.0,) * 24,
    # The arm may not lead at all; a finger may be commanded up to its whole range past where the
    # object stops it (the grip force GraspEnv, and so the trained policies, close with).
    tracking_lead=(0.0,) * 6 + (1.6,) * 24,
    # ~0.6 s at the arm's velocity limit; a finger may be commanded anywhere in its range + lead.
    max_first_step=(0.3,) * 3 + (1.0,) * 3 + (3.2,) * 24,
    home=(0.0,) * 30,
    controller="hand_controller",
    cameras=(CameraSpec("scene", 160, 120),),
    tactile_pads=("thumb", "index", "middle", "ring", "little"),
    tactile_frames=("thdistal", "ffdistal", "mfdistal", "rfdistal", "lfdistal"),
    # IK of the palm (grasp) frame over the 6 arm joints. The forearm's base: at zero arm pose the
    # hand's grasp point (the Adroit "S_grasp" site, 5 cm under the palm) is above the grasp
    # scene's default object spot and the thumb clears an 8 cm tall object; its z along world +x
    # (fingers point away from the mount), palm normal down.
    model=RobotModel(
        "dexstack.hardware.models:adroit_model",
        ik_site="palm_grasp",
        ik_joints=6,
        ik=IKSettings(max_iterations=100, damping=0.02),
        base_pos=(-0.50, 0.0, 0.10),
        base_quat=(0.5, 0.5, 0.5, 0.5),
    ),
)

PROFILES: dict[str, RobotProfile] = {PANDA.name: PANDA, ADROIT.name: ADROIT}


def get_profile(name: str) -> RobotProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown robot profile {name!r}; known: {sorted(PROFILES)}") from None
