"""The interface contract: topic names, message types, QoS and rates (BRIEF §2).

This module is the single source of truth for every name and rate the nodes, tests, launch
files and recorder use. It is plain Python so that code without rclpy (trainers, the
dataset converter) can read it; `dexstack.ros_nodes.common.QOS` maps the QoS kinds to rclpy.
Robot-specific names (controller, cameras, joints) live in `dexstack.hardware.profiles`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class QoSKind(enum.StrEnum):
    """Named QoS policies; publishers are reliable so every pairing is compatible."""

    DEFAULT = "default"  # reliable, volatile, keep-last 10
    STATE_PUB = "state_pub"  # reliable, keep-last 10 (joint states publisher)
    STATE_SUB = "state_sub"  # best-effort, keep-last 1 (latest state is all that matters)
    COMMAND = "command"  # reliable, keep-last 1 (a newer chunk supersedes an older one)
    SENSOR_DATA = "sensor_data"  # best-effort, keep-last 5 (rclpy's qos_profile_sensor_data)
    LATCHED = "latched"  # reliable, transient-local, keep-last 1


# --- rates (Hz) -------------------------------------------------------------------------
PHYSICS_HZ = 500.0  # MuJoCo timestep 2 ms
JOINT_STATE_HZ = 100.0
CAMERA_HZ = 15.0
POLICY_HZ = 10.0
DIAGNOSTICS_HZ = 1.0
TACTILE_HZ = JOINT_STATE_HZ  # tactile pads go out with the joint states they belong to

# Observations older than this (seconds, on the node's clock) make the policy hold.
JOINT_STATE_MAX_AGE_S = 0.1
CAMERA_MAX_AGE_S = 0.25

# The longest chunk anything may send: a manifest's chunk_length x dt must fit, and the safety
# filter refuses (ERROR hold) a longer one, so no message can keep it busy or run the arm blind
# for long (a 20,000-point chunk used to delay the e-stop by 0.7 s).
MAX_CHUNK_POINTS = 200
MAX_CHUNK_HORIZON_S = 5.0


# --- fixed topics -------------------------------------------------------------------------
CLOCK = "/clock"
JOINT_STATES = "/joint_states"
GRASP_TARGET_POSE = "/grasp/target_pose"
TASK_INSTRUCTION = "/task/instruction"
ESTOP = "/safety/estop"
# The safety filter reads the e-stop on a node of its own (own executor thread), named after it.
ESTOP_NODE_SUFFIX = "_estop"
DIAGNOSTICS = "/diagnostics"
# std_msgs/String JSON naming the policy being served (serving.policy_identity), latched; the
# policy node republishes it after every hot-swap and the safety filter ramps in again on a change.
POLICY_ACTIVE = "/policy/active"
# Ground truth that only the simulator can know (like Gazebo's model states); used by
# scripted experts and evaluation, never by learned policies.
SIM_OBJECT_POSE = "/sim/object_pose"
SIM_EPISODE = "/sim/episode"  # std_msgs/String JSON: episode, seed, task, status, stamp; when done also success, sim_time and the task's metrics


# A controller name as ros2_control's controller_manager takes it, optionally namespaced
# ("fr3/arm_controller"): ROS name tokens joined by '/'.
CONTROLLER_NAME_RE = r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*"


def check_controller_name(name: str) -> str:
    """`name` if it can name a controller (and so a topic), else ValueError saying why."""
    if not re.fullmatch(CONTROLLER_NAME_RE, name):
        raise ValueError(
            f"controller name {name!r} is not a ROS name (letters, digits and '_', starting with a "
            "letter; '/' between namespace parts)"
        )
    return name


def trajectory_topic(controller: str) -> str:
    """Command topic of a JointTrajectoryController-like consumer."""
    return f"/{controller}/joint_trajectory"


def policy_output_topic(controller: str) -> str:
    """Where the policy node publishes; the safety filter relays it to `trajectory_topic`."""
    return f"/policy/{controller}/joint_trajectory"


def camera_color_topic(camera: str) -> str:
    return f"/camera/{camera}/color/image_raw"


def camera_info_topic(camera: str) -> str:
    return f"/camera/{camera}/color/camera_info"


def camera_depth_topic(camera: str) -> str:
    return f"/camera/{camera}/aligned_depth_to_color/image_raw"


def tactile_topic(pad: str) -> str:
    return f"/tactile/{pad}"


# --- tactile pads -------------------------------------------------------------------------
# One topic per pad (the pad names come from the robot profile, `RobotProfile.tactile_pads`),
# each a geometry_msgs/WrenchStamped: `wrench.force.z` is the pad's normal force in newtons
# (>= 0, pressing into the pad), the other components are 0 for a normal-force-only sensor;
# `header.frame_id` is the link carrying the pad (`RobotProfile.tactile_frames`), the stamp the
# time the force was measured. A pad is "in contact" when its normal force exceeds
# TACTILE_CONTACT_N; consumers derive the flag, it is not sent.
TACTILE_MSG_TYPE = "geometry_msgs/msg/WrenchStamped"
TACTILE_CONTACT_N = 0.05  # N


def tactile_topics(pads: tuple[str, ...]) -> list[TopicSpec]:
    """The tactile topics of a robot with these pads (sensor-data QoS, like cameras)."""
    return [TopicSpec(tactile_topic(pad), TACTILE_MSG_TYPE, QoSKind.SENSOR_DATA) for pad in pads]


# --- sim-only camera extras ---------------------------------------------------------------
# The simulator's segmentation of the task object, aligned with the colour image: mono8, 255 on
# the object's pixels, 0 elsewhere (a real robot would run a segmentation node here).
def camera_mask_topic(camera: str) -> str:
    return f"/camera/{camera}/object_mask"


# The camera's optical frame (REP 103: x right, y down, z forward; the camera_info frame_id) as
# a pose in "world", latched. It stands in for the static TF of an extrinsic calibration:
# tf2_msgs is not among the pip ROS 2 wheels this project uses.
def camera_pose_topic(camera: str) -> str:
    return f"/camera/{camera}/optical_pose"


@dataclass(frozen=True)
class TopicSpec:
    """A topic of the contract: name, ROS type (`pkg/msg/Type`) and the publisher's QoS."""

    name: str
    msg_type: str
    qos: QoSKind


def robot_topics(controller: str, cameras: tuple[str, ...]) -> list[TopicSpec]:
    """Every topic a robot (or the sim standing in for it) exposes, for tests and the recorder."""
    topics = [
        TopicSpec(JOINT_STATES, "sensor_msgs/msg/JointState", QoSKind.STATE_PUB),
        TopicSpec(trajectory_topic(controller), "trajectory_msgs/msg/JointTrajectory", QoSKind.COMMAND),
    ]
    for cam in cameras:
        topics += [
            TopicSpec(camera_color_topic(cam), "sensor_msgs/msg/Image", QoSKind.SENSOR_DATA),
            TopicSpec(camera_info_topic(cam), "sensor_msgs/msg/CameraInfo", QoSKind.SENSOR_DATA),
            TopicSpec(camera_depth_topic(cam), "sensor_msgs/msg/Image", QoSKind.SENSOR_DATA),
        ]
    return topics


SIM_ONLY_TOPICS = [
    TopicSpec(CLOCK, "rosgraph_msgs/msg/Clock", QoSKind.DEFAULT),
    TopicSpec(SIM_OBJECT_POSE, "geometry_msgs/msg/PoseStamped", QoSKind.DEFAULT),
    TopicSpec(SIM_EPISODE, "std_msgs/msg/String", QoSKind.LATCHED),
]

# The grasp planner's output: the palm (grasp) frame's target pose in "world" (z = approach into
# the object, x = closing direction; see perception/grasp_pose.py), stamped with the depth
# image it was planned from; latched so that a node starting later still gets the current plan.
GRASP_TOPICS = [TopicSpec(GRASP_TARGET_POSE, "geometry_msgs/msg/PoseStamped", QoSKind.LATCHED)]

OPERATOR_TOPICS = [
    TopicSpec(TASK_INSTRUCTION, "std_msgs/msg/String", QoSKind.LATCHED),
    TopicSpec(ESTOP, "std_msgs/msg/Bool", QoSKind.LATCHED),
    TopicSpec(DIAGNOSTICS, "diagnostic_msgs/msg/DiagnosticArray", QoSKind.DEFAULT),
]


# Domains a tool that runs a graph of its own may pick (`ros_nodes/domains.py` checks one is empty
# first); robots and users usually sit on small ids. Fast DDS's port mapping allows 0..232.
PRIVATE_DOMAIN_IDS = range(20, 100)
MAX_DOMAIN_ID = 232


def ros_environment(domain_id: int | None = None) -> dict[str, str]:
    """Environment every process that starts ROS must carry: discovery stays on this host."""
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


# --- observation keys -------------------------------------------------------------------
# A policy runtime receives a dict keyed by these names; the policy node fills it from the
# topics the manifest names, the in-process env fills it directly. Images: rgb (H, W, 3)
# uint8; depth (H, W) float32 metres. Joint positions in the manifest's joint order.
JOINT_POSITIONS = "joint_positions"


def rgb_key(camera: str) -> str:
    return f"{camera}_rgb"


def depth_key(camera: str) -> str:
    return f"{camera}_depth"
