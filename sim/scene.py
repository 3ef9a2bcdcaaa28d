"""Tabletop scene composed with `dm_control.mjcf`: Panda arm + gripper, table, objects, cameras.

Frames: the world frame is the robot base frame (x forward, z up); the table top is the plane
z = 0 and the floor lies `TABLE_HEIGHT` below it. Lengths in metres, angles in radians.

The arm is the Panda model of `hardware/models.py` (the model `hardware/kinematics.py` solves
IK on), attached at the profile's base pose.

Every catalogue object is in the model (so tasks switch objects without recompiling); objects
not in play are parked off-stage by `park_object`.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from dm_control import mjcf

from dexstack.hardware.models import TCP_SITE as TCP_SITE_NAME
from dexstack.hardware.models import attach_robot, look_at_xyaxes
from dexstack.hardware.profiles import PANDA, RobotProfile
from dexstack.sim import objects as objects_lib

TABLE_HEIGHT = 0.75  # m, table top above the floor
TABLE_HALF_SIZE = (0.55, 0.6, 0.025)  # m, half extents of the table top slab
TABLE_CENTER_X = 0.35  # m, the robot sits near the table's back edge
ROBOT_PREFIX = "panda/"
TIMESTEP = 0.002  # s (contract.PHYSICS_HZ = 500)
PARK_POSITION = np.array([3.0, 0.0, 1.0])  # m, behind the scene camera, out of every view

TCP_SITE = ROBOT_PREFIX + TCP_SITE_NAME


@dataclass(frozen=True)
class SceneNames:
    """Names of things in the compiled scene model, for lookups by name."""

    arm_joints: tuple[str, ...]  # model joint names in profile order (7 arm joints)
    finger_joints: tuple[str, str]
    arm_actuators: tuple[str, ...]
    finger_actuators: tuple[str, str]
    tcp_site: str
    objects: tuple[str, ...]  # object body names, one per catalogue entry
    cameras: tuple[str, ...]
    table_geom: str


def configure_grasping_scene(
    scene: mjcf.RootElement, camera_sizes: list[tuple[int, int]], timestep: float = TIMESTEP
) -> None:
    """Physics and rendering settings every grasping scene shares; `camera_sizes` (width, height)
    size the offscreen buffer (at least 640x480)."""
    scene.option.timestep = timestep
    # implicitfast integrates actuator damping stably; elliptic cones with a high impratio keep
    # a grasp from creeping (MuJoCo's advice for grasping).
    scene.option.integrator = "implicitfast"
    scene.option.cone = "elliptic"
    scene.option.impratio = 10
    # Shadows and multisampling cost 5-30x in software rendering.
    scene.visual.quality.shadowsize = 0
    scene.visual.quality.offsamples = 0
    getattr(scene.visual, "global").offwidth = max([640] + [int(w) for w, _ in camera_sizes])
    getattr(scene.visual, "global").offheight = max([480] + [int(h) for _, h in camera_sizes])


def build_scene(
    profile: RobotProfile = PANDA,
    object_names: tuple[str, ...] | None = None,
    camera_size: tuple[int, int] | None = None,
    mesh_detail: str = "low",
) -> tuple[mjcf.RootElement, SceneNames]:
    """Compose robot, table, floor, lights, cameras and objects; returns the model and its names.

    camera_size (width, height) only sizes the offscreen buffer (at least 640x480).
    """
    object_names = tuple(objects_lib.CATALOG) if object_names is None else tuple(object_names)
    unknown = [n for n in object_names if n not in objects_lib.CATALOG]
    if unknown:
        raise ValueError(f"unknown objects {unknown}; known: {sorted(objects_lib.CATALOG)}")

    scene = mjcf.RootElement(model="tabletop")
    sizes = [(c.width, c.height) for c in profile.cameras] + ([tuple(camera_size)] if camera_size else [])
    configure_grasping_scene(scene, sizes)
    scene.visual.headlight.ambient = [0.4, 0.4, 0.4]
    scene.visual.headlight.diffuse = [0.5, 0.5, 0.5]

    scene.asset.add(
        "texture",
        name="floor_tex",
        type="2d",
        builtin="checker",
        rgb1=[0.25, 0.28, 0.32],
        rgb2=[0.18, 0.2, 0.24],
        width=256,
        height=256,
    )
    scene.asset.add("material", name="floor_mat", texture="floor_tex", texrepeat=[4, 4], reflectance=0.0)
    scene.worldbody.add(
        "geom", name="floor", type="plane", size=[3, 3, 0.1], pos=[0, 0, -TABLE_HEIGHT], material="floor_mat"
    )
    scene.worldbody.add(
        "light",
        name="top",
        pos=[0.4, 0, 1.5],
        dir=[0, 0, -1],
        directional=True,
        castshadow=False,
        diffuse=[0.6, 0.6, 0.6],
    )
    table = scene.worldbody.add("body", name="table", pos=[TABLE_CENTER_X, 0, -TABLE_HALF_SIZE[2]])
    table.add(
        "geom",
        name="table_top",
        type="box",
        size=TABLE_HALF_SIZE,
        rgba=[0.62, 0.5, 0.38, 1],
        friction=[1.0, 0.005, 0.0001],
    )
    leg_h = (TABLE_HEIGHT - 2 * TABLE_HALF_SIZE[2]) / 2
    for k, (sx, sy) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
        table.add(
            "geom",
            name=f"table_leg{k}",
            type="box",
            size=[0.025, 0.025, leg_h],
            contype=0,
            conaffinity=0,
            pos=[sx * (TABLE_HALF_SIZE[0] - 0.05), sy * (TABLE_HALF_SIZE[1] - 0.05), -leg_h - TABLE_HALF_SIZE[2]],
            rgba=[0.45, 0.35, 0.25, 1],
        )

    scene_cam = profile.camera("scene") if "scene" in profile.camera_names else None
    if scene_cam is not None:
        cam_pos = [1.25, 0.5, 0.6]
        scene.worldbody.add(
            "camera", name=scene_cam.name, pos=cam_pos, xyaxes=look_at_xyaxes(cam_pos, [0.4, 0.0, 0.1]), fovy=50.0
        )

    attach_robot(scene, profile, mesh_detail=mesh_detail)

    body_names = []
    for k, name in enumerate(object_names):
        frame = scene.worldbody.attach(objects_lib.object_model(objects_lib.CATALOG[name]))
        frame.pos = PARK_POSITION + np.array([0.0, 0.3 * k, 0.0])
        frame.add("freejoint", name=f"{name}_joint")
        body_names.append(f"{name}/")

    p = ROBOT_PREFIX
    names = SceneNames(
        arm_joints=tuple(p + n for n in profile.joint_names[:7]),
        finger_joints=(p + "panda_finger_joint1", p + "panda_finger_joint2"),
        arm_actuators=tuple(p + n for n in profile.joint_names[:7]),
        finger_actuators=(p + "panda_finger1", p + "panda_finger2"),
        tcp_site=TCP_SITE,
        objects=tuple(body_names),
        cameras=tuple(c for c in profile.camera_names if c in ("wrist", "scene")),
        table_geom="table_top",
    )
    return scene, names


def compile_model(root: mjcf.RootElement) -> mujoco.MjModel:
    """Compile an mjcf model with the native MuJoCo bindings (meshes passed as assets)."""
    return mujoco.MjModel.from_xml_string(root.to_xml_string(), assets=root.get_assets())


def camera_model_name(camera: str) -> str:
    """Model name of a profile camera: the wrist camera lives in the robot's namespace."""
    return ROBOT_PREFIX + camera if camera == "wrist" else camera
