"""Tabletop scene for multi-fingered grasping: the Adroit arm + 24-DoF hand, a table, one object.

Composed with `dm_control.mjcf` from the Adroit model that ships in the gymnasium-robotics
package (located through the package, never by an absolute path) and an object from the
YCB-like catalogue in `sim/objects.py`.

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

import importlib.util
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
from dm_control import mjcf

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

# Forearm base: at zero arm pose the hand's grasp point (the Adroit "S_grasp" site, 5 cm under
# the palm) is above the object's default spot and the thumb clears an 8 cm tall object.
# ARTy lifts the hand by up to 0.4 m from there (ARTY_RANGE).
ARM_MOUNT_POS = (-0.50, 0.0, 0.10)
# Forearm z along world +x (fingers point away from the mount), palm normal down.
ARM_MOUNT_QUAT = (0.5, 0.5, 0.5, 0.5)

# Our position servos on the six arm joints (the Adroit ones are tuned for a mocap-led arm).
ARM_SLIDE_KP, ARM_SLIDE_KV = 2000.0, 200.0  # N/m, N s/m
ARM_HINGE_KP, ARM_HINGE_KV = 300.0, 30.0  # N m/rad, N m s/rad

# Tallest object top (m) that clears the hand's lowest geom (the thumb) at zero arm pose by 5 mm.
CLEAR_HEIGHT_AT_ZERO = 0.077


def start_lift(object_height: float) -> float:
    """ARTy (m, world +z at this mount) at which the open hand clears an object `object_height`
    metres tall standing at the default spot (5 mm for the potted meat can)."""
    if not 0.0 < object_height <= CLEAR_HEIGHT_AT_ZERO + 0.2:
        raise ValueError(f"object height {object_height} m is outside what the arm clears "
                         f"(0, {CLEAR_HEIGHT_AT_ZERO + 0.2}] m")
    return max(0.0, object_height - CLEAR_HEIGHT_AT_ZERO)


# Joint names, limits and pads come from the robot profile (`hardware/profiles.py`, ADROIT).
ARM_JOINTS: tuple[str, ...] = ADROIT.joint_names[:6]  # ARTx/y/z (m), ARRx/y/z (rad)
HAND_JOINTS: tuple[str, ...] = ADROIT.joint_names[6:]  # the 24 hand joints (rad)

# The palm (grasp) frame, a site on Adroit's palm body: the frame `perception/grasp_pose.py`
# plans for (z = approach, the palm normal pointing out of the palm into the object; x = closing
# direction, thumb towards fingers; y = z cross x), its origin on the palm's skin. Adroit's palm
# body has x towards the thumb, y out of the back of the hand and z along the fingers, so the
# fixed palm-to-grasp rotation maps grasp x -> body z, grasp y -> body -x, grasp z -> body -y.
PALM_SITE = "palm_grasp"
# Origin in the palm body frame (m): on the palm's skin (the collision box C_palm0 is 11.1 mm
# thick from the body origin), 9.5 cm along the fingers from the wrist (under the knuckles) and
# 2 cm towards the thumb. With the object's centre line there, the curled fingers wrap its far
# side and the thumb reaches its near side; 2.5 cm closer to the wrist the thumb lands on top
# of the object and the grasp slips (measured with the scripted closing, see hand_core).
PALM_SITE_POS = (0.02, -0.0111, 0.095)
PALM_SITE_QUAT = (0.5, 0.5, -0.5, 0.5)  # wxyz, rotation with columns (0,0,1), (-1,0,0), (0,-1,0)

# Fixed pad order used everywhere (observations, topics /tactile/<pad>, rewards).
TOUCH_PADS: tuple[str, ...] = ADROIT.tactile_pads
# Collision geom of each pad's distal phalanx in the Adroit model.
PAD_GEOMS: dict[str, str] = {"thumb": "C_thdistal", "index": "C_ffdistal", "middle": "C_mfdistal",
                             "ring": "C_rfdistal", "little": "C_lfdistal"}

# The lift's range (ARTy); why it differs from the model's [0, 0.2] m: see ADROIT.
ARTY_RANGE = (ADROIT.position_lower[1], ADROIT.position_upper[1])  # m


def adroit_asset_dir() -> Path:
    """Folder of the Adroit hand model in the installed gymnasium-robotics package."""
    # find_spec locates the package without importing it (its import prints a banner).
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("gymnasium-robotics is not installed; the Adroit hand model ships with it")
    path = Path(list(spec.submodule_search_locations)[0]) / "envs" / "assets" / "adroit_hand"
    if not (path / "adroit_model.xml").is_file():
        raise FileNotFoundError(f"Adroit model not found in {path}; is gymnasium-robotics installed?")
    return path


def _inline_includes(element: ET.Element, folder: Path) -> None:
    """Replace every <include file=.../> under `element` by the included file's children
    (dm_control's parser does not follow includes nested inside bodies)."""
    for child in list(element):
        if child.tag == "include":
            position = list(element).index(child)
            element.remove(child)
            included = ET.parse(folder / child.get("file")).getroot()
            for k, sub in enumerate(list(included)):
                element.insert(position + k, sub)
        else:
            _inline_includes(child, folder)


def adroit_model() -> mjcf.RootElement:
    """The Adroit arm (forearm on 6 joints) + 24-DoF hand as an mjcf model named "adroit".

    Taken from the package's relocate scene with everything but the forearm removed. Gravity is
    compensated on the robot's bodies (as a real arm controller does), so the servos track their
    targets without sag; the arm's actuators are replaced by position servos.
    """
    folder = adroit_asset_dir()
    tree = ET.parse(folder / "adroit_relocate.xml").getroot()
    _inline_includes(tree, folder)
    worldbody = tree.find("worldbody")
    for child in list(worldbody):
        if not (child.tag == "body" and child.get("name") == "forearm"):
            worldbody.remove(child)  # the package's table, ground, lights, cameras, mocap and ball
    forearm = worldbody.find("body")
    forearm.attrib.pop("pos")
    forearm.attrib.pop("euler")
    for default in tree.iter("default"):
        if default.get("class") == "main":
            del default.attrib["class"]  # mjcf names the root default class "main" itself
    actuators = tree.find("actuator")
    for act in list(actuators):
        if act.get("joint") in ARM_JOINTS:
            actuators.remove(act)
    for tag in ("option", "size", "visual"):  # the scene sets solver, sizes and rendering
        for el in tree.findall(tag):
            tree.remove(el)
    tree.set("model", "adroit")
    root = mjcf.from_xml_string(ET.tostring(tree, encoding="unicode"), model_dir=str(folder))
    # The model's materials are reflective; reflections cost 5-30x on a software GL.
    for material in root.asset.find_all("material"):
        material.reflectance = 0.0
    for body in root.worldbody.find_all("body"):
        body.gravcomp = 1
    root.find("body", "palm").add("site", name=PALM_SITE, pos=PALM_SITE_POS, quat=PALM_SITE_QUAT,
                                  size=[0.005], rgba=[0, 0, 0, 0], group=4)
    root.find("joint", "ARTy").range = list(ARTY_RANGE)
    for joint in ARM_JOINTS:
        # The model's joint default margin (1 cm) would make the limit push the arm off a
        # start pose at its limit (ARTy = 0).
        root.find("joint", joint).margin = 0.0
        slide = joint.startswith("ART")
        kp, kv = (ARM_SLIDE_KP, ARM_SLIDE_KV) if slide else (ARM_HINGE_KP, ARM_HINGE_KV)
        j = root.find("joint", joint)
        root.actuator.add("position", name=f"A_{joint}", joint=joint, kp=kp, kv=kv, ctrlrange=j.range)
    return root


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


def build_hand_scene(object_name: str = "potted_meat_can",
                     camera_size: tuple[int, int] | None = None) -> tuple[mjcf.RootElement, HandSceneNames]:
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

    scene.worldbody.add("geom", name="floor", type="plane", size=[3, 3, 0.1], pos=[0, 0, -TABLE_HEIGHT],
                        rgba=[0.22, 0.24, 0.28, 1])
    scene.worldbody.add("light", name="top", pos=[0, 0, 1.5], dir=[0, 0, -1], directional=True,
                        castshadow=False, diffuse=[0.6, 0.6, 0.6])
    table = scene.worldbody.add("body", name="table", pos=[TABLE_CENTER[0], TABLE_CENTER[1], -TABLE_HALF_SIZE[2]])
    table.add("geom", name="table_top", type="box", size=TABLE_HALF_SIZE, rgba=[0.62, 0.5, 0.38, 1],
              friction=[1.0, 0.005, 0.0001])
    cam_pos = [0.3, -0.35, 0.4]
    scene.worldbody.add("camera", name=SCENE_CAMERA, pos=cam_pos,
                        xyaxes=look_at_xyaxes(cam_pos, [OBJECT_XY[0], OBJECT_XY[1], 0.05]), fovy=45.0)

    robot_frame = scene.worldbody.attach(adroit_model())
    robot_frame.pos = ARM_MOUNT_POS
    robot_frame.quat = ARM_MOUNT_QUAT

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
