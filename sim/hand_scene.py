"""Tabletop scene for multi-fingered grasping: the Adroit arm + 24-DoF hand, a table, one object.

Composed with `dm_control.mjcf` from the robot model of `hardware/models.py` (the Adroit model
that ships in the gymnasium-robotics package; the same model `hardware/kinematics.py` solves IK
on) and an object from the YCB-like catalogue in `sim/objects.py`.

Frames: as in `sim/scene.py`, the world frame has z up and the table top is the plane z = 0
(the floor lies `TABLE_HEIGHT` below it). The Adroit "arm" is its forearm on six joints: three
slides (ARTx/y/z, metres) and three hinges (ARRx/y/z, radians) about the forearm's mount frame.
At zero arm pose the hand hangs above the table with its palm facing down (-z) and its fingers
pointing along +x; `ARM_MOUNT_POS` is where the forearm's base sits. Lengths in metres, angles
in radians, forces in newtons.

Touch: the hand's five distal phalanges (thumb, index, middle, ring, little) carry one pad each;
`sim/hand_core.py` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from dm_control import mjcf

from dexstack.hardware.models import PALM_SITE, attach_robot
from dexstack.hardware.profiles import ADROIT
from dexstack.sim import objects as objects_lib
from dexstack.sim.scene import TABLE_HEIGHT, configure_grasping_scene, look_at_xyaxes

TIMESTEP = 0.002  # s (contract.PHYSICS_HZ = 500); stable with the hand's 1 cm capsules, see docs/GPAYN.md
ROBOT_PREFIX = "adroit/"
TABLE_HALF_SIZE = (0.45, 0.45, 0.025)  # m, half extents of the table top slab
TABLE_CENTER = (0.0, 0.0)  # m, the table top's centre in x, y
# Default object placement: under the palm at the arm's zero pose (slightly to the thumb's side,
# +y, so the four fingers all land on it), turned so its long side runs across the fingers.
OBJECT_XY = (0.0, 0.02)  # m
OBJECT_YAW = 1.5708  # rad about z
PARK_POSITION = np.array([2.0, 0.0, 0.5])  # m, off the table and out of the camera's view
SCENE_CAMERA = ADROIT.cameras[0].name
# Where the forearm's base sits (the profile's robot model base; ARTy lifts the hand from there).
ARM_MOUNT_POS = ADROIT.model.base_pos

# Tallest object top (m) that clears the hand's lowest geom (the thumb) at zero arm pose by 5 mm.
CLEAR_HEIGHT_AT_ZERO = 0.077


def start_lift(object_height: float) -> float:
    """ARTy (m, world +z at this mount) at which the open hand clears an object `object_height`
    metres tall standing at the default spot (5 mm for the potted meat can)."""
    if not 0.0 < object_height <= CLEAR_HEIGHT_AT_ZERO + 0.2:
        raise ValueError(
            f"object height {object_height} m is outside what the arm clears (0, {CLEAR_HEIGHT_AT_ZERO + 0.2}] m"
        )
    return max(0.0, object_height - CLEAR_HEIGHT_AT_ZERO)


# Joint names, limits and pads come from the robot profile (`hardware/profiles.py`, ADROIT).
ARM_JOINTS: tuple[str, ...] = ADROIT.joint_names[:6]  # ARTx/y/z (m), ARRx/y/z (rad)
HAND_JOINTS: tuple[str, ...] = ADROIT.joint_names[6:]  # the 24 hand joints (rad)

# Fixed pad order used everywhere (observations, topics /tactile/<pad>, rewards).
TOUCH_PADS: tuple[str, ...] = ADROIT.tactile_pads
# Collision geom of each pad's distal phalanx in the Adroit model.
PAD_GEOMS: dict[str, str] = {
    "thumb": "C_thdistal",
    "index": "C_ffdistal",
    "middle": "C_mfdistal",
    "ring": "C_rfdistal",
    "little": "C_lfdistal",
}


@dataclass(frozen=True)
class HandSceneNames:
    """Names of things in the compiled hand scene model (with their namespace prefixes)."""

    arm_joints: tuple[str, ...]  # 6, profile order
    hand_joints: tuple[str, ...]  # 24, profile order
    actuators: tuple[str, ...]  # 30, one per profile joint, same order
    pad_geoms: tuple[str, ...]  # 5, TOUCH_PADS order
    palm_body: str
    palm_site: str  # the grasp frame on the palm (PALM_SITE)
    object_name: str
    object_body: str
    camera: str
    table_geom: str


def build_hand_scene(
    object_name: str = "potted_meat_can", camera_size: tuple[int, int] | None = None
) -> tuple[mjcf.RootElement, HandSceneNames]:
    """Compose the Adroit arm + hand, table, floor, light, a scene camera and one catalogue object.

    object_name: a key of `sim.objects.CATALOG`. camera_size (width, height) only sizes the
    offscreen buffer (at least 640x480).
    """
    if object_name not in objects_lib.CATALOG:
        raise ValueError(f"unknown object {object_name!r}; known: {sorted(objects_lib.CATALOG)}")
    scene = mjcf.RootElement(model="hand_tabletop")
    configure_grasping_scene(scene, [tuple(camera_size)] if camera_size is not None else [], TIMESTEP)
    scene.visual.headlight.ambient = [0.4, 0.4, 0.4]
    scene.visual.headlight.diffuse = [0.5, 0.5, 0.5]

    scene.worldbody.add(
        "geom", name="floor", type="plane", size=[3, 3, 0.1], pos=[0, 0, -TABLE_HEIGHT], rgba=[0.22, 0.24, 0.28, 1]
    )
    scene.worldbody.add(
        "light",
        name="top",
        pos=[0, 0, 1.5],
        dir=[0, 0, -1],
        directional=True,
        castshadow=False,
        diffuse=[0.6, 0.6, 0.6],
    )
    table = scene.worldbody.add("body", name="table", pos=[TABLE_CENTER[0], TABLE_CENTER[1], -TABLE_HALF_SIZE[2]])
    table.add(
        "geom",
        name="table_top",
        type="box",
        size=TABLE_HALF_SIZE,
        rgba=[0.62, 0.5, 0.38, 1],
        friction=[1.0, 0.005, 0.0001],
    )
    cam_pos = [0.3, -0.35, 0.4]
    scene.worldbody.add(
        "camera",
        name=SCENE_CAMERA,
        pos=cam_pos,
        xyaxes=look_at_xyaxes(cam_pos, [OBJECT_XY[0], OBJECT_XY[1], 0.05]),
        fovy=45.0,
    )

    attach_robot(scene, ADROIT)  # the robot model of hardware/models.py at the profile's mount

    spec = objects_lib.CATALOG[object_name]
    object_frame = scene.worldbody.attach(objects_lib.object_model(spec))
    object_frame.pos = [OBJECT_XY[0], OBJECT_XY[1], spec.grasp_height]
    object_frame.add("freejoint", name=f"{object_name}_joint")

    p = ROBOT_PREFIX
    names = HandSceneNames(
        arm_joints=tuple(p + j for j in ARM_JOINTS),
        hand_joints=tuple(p + j for j in HAND_JOINTS),
        actuators=tuple(f"{p}A_{j}" for j in ADROIT.joint_names),
        pad_geoms=tuple(p + PAD_GEOMS[pad] for pad in TOUCH_PADS),
        palm_body=p + "palm",
        palm_site=p + PALM_SITE,
        object_name=object_name,
        object_body=f"{object_name}/",
        camera=SCENE_CAMERA,
        table_geom="table_top",
    )
    return scene, names


def compile_model(root: mjcf.RootElement) -> mujoco.MjModel:
    """Compile an mjcf model with the native MuJoCo bindings (meshes and textures as assets)."""
    return mujoco.MjModel.from_xml_string(root.to_xml_string(), assets=root.get_assets())
