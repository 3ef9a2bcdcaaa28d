"""Robot models: the MJCF of each robot alone (no table, no objects, no cameras of the scene),
built with `dm_control.mjcf` from the assets that ship in the gymnasium-robotics package (located
through the package, never by an absolute path).

A robot profile names its model (`RobotProfile.model.builder`) and where its base sits in the
world (`base_pos`, `base_quat`); `attach_robot` puts it there. The sim composes its scenes from
these models and `hardware/kinematics.py` solves FK/IK on the same models alone, so there is one
robot model. Nothing here imports the sim. Lengths in metres, angles in radians.

Panda: our own MJCF with the standard Franka kinematics (as in Franka's published description)
and the link meshes of gymnasium-robotics' kitchen Franka. Joint names are the profile's
(`panda_joint1..7`); the gripper's two finger joints are `panda_finger_joint1/2`, driven from the
profile's one finger joint. Adroit: the arm (forearm on 6 joints: ARTx/y/z slides in metres,
ARRx/y/z hinges in radians about the forearm's mount frame) + 24-DoF hand of the package's
relocate scene. At zero arm pose the Adroit hand hangs above the table with its palm facing down
(-z) and its fingers pointing along +x. Gravity is compensated on both robots' bodies (as a real
arm controller does), so position actuators track their targets without a steady-state sag.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from dm_control import mjcf
from numpy.typing import ArrayLike

from dexstack.hardware.profiles import ADROIT, PANDA, RobotProfile

# Pads of the fingers: their centre is the tool centre point (TCP), in the hand frame.
HAND_OFFSET = 0.107  # m, flange (link7) to hand frame along link7's z
FINGER_OFFSET = 0.0584  # m, hand frame to the finger bodies
TCP_OFFSET = 0.1234  # m, hand frame to the middle of the finger pads
TCP_SITE = PANDA.model.ik_site  # the TCP's site on the hand body

# Position actuator gains: stiffness kp (N m / rad or N / m) and velocity damping kv.
ARM_KP = (4000.0, 4000.0, 4000.0, 4000.0, 1500.0, 1500.0, 1000.0)
ARM_KV = (250.0, 250.0, 250.0, 250.0, 60.0, 60.0, 40.0)
ARM_FORCE = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
FINGER_KP, FINGER_KV, FINGER_FORCE = 1000.0, 40.0, 70.0

# Link masses (kg) of the collision meshes, from the kitchen Franka assets.
_LINK_MASS = (2.91242, 2.7063, 2.73046, 2.04104, 2.08129, 3.00049, 1.3235, 0.2)
_HAND_MASS = 0.81909
# Standard Franka kinematics: (body pos, body quat wxyz) of link1..link7 in their parent.
_S = math.sqrt(0.5)
_LINK_FRAMES = (
    ((0.0, 0.0, 0.333), (1.0, 0.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (_S, -_S, 0.0, 0.0)),
    ((0.0, -0.316, 0.0), (_S, _S, 0.0, 0.0)),
    ((0.0825, 0.0, 0.0), (_S, _S, 0.0, 0.0)),
    ((-0.0825, 0.384, 0.0), (_S, -_S, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (_S, _S, 0.0, 0.0)),
    ((0.088, 0.0, 0.0), (_S, _S, 0.0, 0.0)),
)
_HAND_QUAT = (0.92388, 0.0, 0.0, -0.382683)  # -45 deg about z


def _gymnasium_robotics_dir() -> Path:
    """Folder of the installed gymnasium-robotics package."""
    # find_spec locates the package without importing it (its import prints a banner).
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("gymnasium-robotics is not installed; the robot models ship with it")
    return Path(list(spec.submodule_search_locations)[0])


def franka_mesh_dir() -> Path:
    """Folder of the Panda meshes shipped in the gymnasium-robotics package."""
    path = _gymnasium_robotics_dir() / "envs" / "assets" / "kitchen_franka" / "franka_assets" / "meshes"
    if not path.is_dir():
        raise FileNotFoundError(f"Panda meshes not found at {path}; is gymnasium-robotics installed?")
    return path


def look_at_xyaxes(pos: ArrayLike, target: ArrayLike, up: ArrayLike = (0.0, 0.0, 1.0)) -> list[float]:
    """MuJoCo camera `xyaxes` for a camera at `pos` looking at `target` (cameras look along -z)."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, np.asarray(up, float))
    if np.linalg.norm(x) < 1e-6:  # looking straight along `up`
        x = np.cross(forward, [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return [*x, *y]


MESH_DETAIL = ("low", "high")


def panda_model(profile: RobotProfile = PANDA, with_cameras: bool = True, mesh_detail: str = "low") -> mjcf.RootElement:
    """The Panda arm + gripper as an mjcf model named "panda" (base at its origin).

    mesh_detail "low" draws the links with their collision hulls (~250 triangles each),
    "high" with the detailed visual meshes (~136k triangles in all, ~3x slower to render on a
    software GL). Physics is identical: visual geoms have no mass and no contacts.
    """
    if mesh_detail not in MESH_DETAIL:
        raise ValueError(f"mesh_detail must be one of {MESH_DETAIL}, got {mesh_detail!r}")
    if profile.joint_names[:7] != tuple(f"panda_joint{i}" for i in range(1, 8)) or profile.n_joints != 8:
        raise ValueError(f"panda_model builds a Panda; profile {profile.name} has joints {profile.joint_names}")
    mesh_dir = franka_mesh_dir()
    root = mjcf.RootElement(model="panda")
    root.compiler.angle = "radian"
    for part in ("link0", "link1", "link2", "link3", "link4", "link5", "link6", "link7", "hand"):
        root.asset.add("mesh", name=f"{part}_col", file=str(mesh_dir / "collision" / f"{part}.stl"))
        if mesh_detail == "high":
            root.asset.add("mesh", name=f"{part}_viz", file=str(mesh_dir / "visual" / f"{part}.stl"))
    root.asset.add("mesh", name="finger", file=str(mesh_dir / "collision" / "finger.stl"), scale=[1.75, 1.0, 1.75])

    viz = root.default.add("default", dclass="viz")
    viz.geom.set_attributes(contype=0, conaffinity=0, group=2, type="mesh", rgba=[0.95, 0.97, 0.92, 1.0], mass=0)
    col = root.default.add("default", dclass="col")
    col.geom.set_attributes(contype=1, conaffinity=1, group=3, type="mesh", rgba=[0.5, 0.6, 0.7, 1.0])
    pad = root.default.add("default", dclass="pad")
    # Fingers touch objects but not each other or the arm (conaffinity 0); condim 6 resists
    # the object spinning or rolling in the grasp.
    pad.geom.set_attributes(
        contype=1,
        conaffinity=0,
        group=3,
        condim=6,
        friction=[1.5, 0.05, 0.001],
        solref=[0.005, 1.0],
        rgba=[0.3, 0.3, 0.3, 1.0],
    )

    viz_suffix = "_viz" if mesh_detail == "high" else "_col"
    lower, upper = profile.lower, profile.upper
    parent = root.worldbody.add("body", name="panda_link0", gravcomp=1)
    parent.add("geom", dclass="viz", mesh="link0" + viz_suffix)
    parent.add("geom", dclass="col", mesh="link0_col", mass=_LINK_MASS[0])
    for i, (pos, quat) in enumerate(_LINK_FRAMES, start=1):
        body = parent.add("body", name=f"panda_link{i}", pos=pos, quat=quat, gravcomp=1)
        body.add(
            "joint",
            name=f"panda_joint{i}",
            type="hinge",
            axis=[0, 0, 1],
            range=[lower[i - 1], upper[i - 1]],
            armature=0.1,
            damping=1.0,
        )
        body.add("geom", dclass="viz", mesh=f"link{i}{viz_suffix}")
        body.add("geom", dclass="col", mesh=f"link{i}_col", mass=_LINK_MASS[i])
        parent = body
    hand = parent.add("body", name="panda_hand", pos=[0, 0, HAND_OFFSET], quat=_HAND_QUAT, gravcomp=1)
    hand.add("geom", dclass="viz", mesh="hand" + viz_suffix)
    hand.add("geom", dclass="col", mesh="hand_col", mass=_HAND_MASS)
    hand.add("site", name=TCP_SITE, pos=[0, 0, TCP_OFFSET], size=[0.005], rgba=[1, 0, 0, 0], group=4)
    for side, sign in (("1", 1.0), ("2", -1.0)):
        finger = hand.add("body", name=f"panda_finger{side}", pos=[0, 0, FINGER_OFFSET], gravcomp=1)
        finger.add("inertial", pos=[0, sign * 0.0119, 0.0434], mass=0.0927, diaginertia=[6.6e-05, 6.1e-05, 1.1e-05])
        finger.add(
            "joint",
            name=f"panda_finger_joint{side}",
            type="slide",
            axis=[0, sign, 0],
            range=[lower[7], upper[7]],
            armature=0.05,
            damping=2.0,
        )
        finger.add("geom", dclass="viz", mesh="finger", quat=[1, 0, 0, 0] if sign > 0 else [0, 0, 0, 1])
        # Pads: pairs of crossed capsules down the inner face, as in the kitchen model.
        for z, r, y0 in (
            (0.0875, 0.0070, 0.006),
            (0.0775, 0.0075, 0.007),
            (0.0675, 0.0082, 0.008),
            (0.0575, 0.0090, 0.009),
            (0.0475, 0.0100, 0.0105),
            (0.035, 0.0110, 0.012),
        ):
            y1 = y0 + 0.003
            finger.add(
                "geom", dclass="pad", type="capsule", size=[r], fromto=[0.009, sign * y0, z, -0.009, sign * y1, z]
            )
            finger.add(
                "geom", dclass="pad", type="capsule", size=[r], fromto=[0.009, sign * y1, z, -0.009, sign * y0, z]
            )
        finger.add("geom", dclass="pad", type="box", size=[0.0185, 0.012, 0.0175], pos=[0, sign * 0.014, 0.015])

    if with_cameras:
        wrist = profile.camera("wrist") if "wrist" in profile.camera_names else None
        if wrist is not None:
            # On the hand's side, like a wrist-mounted RGB-D camera, looking along the fingers
            # at a point between the fingertips.
            cam_pos = np.array([0.07, 0.0, 0.03])
            xyaxes = look_at_xyaxes(cam_pos, [0.0, 0.0, TCP_OFFSET + 0.04], up=[1.0, 0.0, 0.0])
            hand.add("camera", name=wrist.name, pos=cam_pos, xyaxes=xyaxes, fovy=70.0)

    arm_actuators = [f"panda_joint{i}" for i in range(1, 8)]
    for i, joint in enumerate(arm_actuators):
        root.actuator.add(
            "position",
            name=joint,
            joint=joint,
            kp=ARM_KP[i],
            kv=ARM_KV[i],
            ctrlrange=[lower[i], upper[i]],
            forcerange=[-ARM_FORCE[i], ARM_FORCE[i]],
        )
    for side in ("1", "2"):
        root.actuator.add(
            "position",
            name=f"panda_finger{side}",
            joint=f"panda_finger_joint{side}",
            kp=FINGER_KP,
            kv=FINGER_KV,
            ctrlrange=[lower[7], upper[7]],
            forcerange=[-FINGER_FORCE, FINGER_FORCE],
        )
    return root


# Our position servos on the six arm joints (the Adroit ones are tuned for a mocap-led arm).
ARM_SLIDE_KP, ARM_SLIDE_KV = 2000.0, 200.0  # N/m, N s/m
ARM_HINGE_KP, ARM_HINGE_KV = 300.0, 30.0  # N m/rad, N m s/rad

# The palm (grasp) frame, a site on Adroit's palm body: the frame `perception/grasp_pose.py`
# plans for (z = approach, the palm normal pointing out of the palm into the object; x = closing
# direction, thumb towards fingers; y = z cross x), its origin on the palm's skin. Adroit's palm
# body has x towards the thumb, y out of the back of the hand and z along the fingers, so the
# fixed palm-to-grasp rotation maps grasp x -> body z, grasp y -> body -x, grasp z -> body -y.
PALM_SITE = ADROIT.model.ik_site
# Origin in the palm body frame (m): on the palm's skin (the collision box C_palm0 is 11.1 mm
# thick from the body origin), 9.5 cm along the fingers from the wrist (under the knuckles) and
# 2 cm towards the thumb. With the object's centre line there, the curled fingers wrap its far
# side and the thumb reaches its near side; 2.5 cm closer to the wrist the thumb lands on top
# of the object and the grasp slips (measured with the scripted closing, see hand_core).
PALM_SITE_POS = (0.02, -0.0111, 0.095)
PALM_SITE_QUAT = (0.5, 0.5, -0.5, 0.5)  # wxyz, rotation with columns (0,0,1), (-1,0,0), (0,-1,0)


def adroit_asset_dir() -> Path:
    """Folder of the Adroit hand model in the installed gymnasium-robotics package."""
    path = _gymnasium_robotics_dir() / "envs" / "assets" / "adroit_hand"
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


def adroit_model(profile: RobotProfile = ADROIT) -> mjcf.RootElement:
    """The Adroit arm (forearm on 6 joints) + 24-DoF hand as an mjcf model named "adroit".

    Taken from the package's relocate scene with everything but the forearm removed. Gravity is
    compensated on the robot's bodies (as a real arm controller does), so the servos track their
    targets without sag; the arm's actuators are replaced by position servos. Joint names and the
    lift's range (ARTy; why it differs from the model's [0, 0.2] m: see ADROIT) from `profile`.
    """
    arm_joints = profile.joint_names[:6]  # ARTx/y/z (m), ARRx/y/z (rad)
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
        if act.get("joint") in arm_joints:
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
    root.find("body", "palm").add(
        "site", name=PALM_SITE, pos=PALM_SITE_POS, quat=PALM_SITE_QUAT, size=[0.005], rgba=[0, 0, 0, 0], group=4
    )
    root.find("joint", "ARTy").range = [profile.position_lower[1], profile.position_upper[1]]
    for joint in arm_joints:
        # The model's joint default margin (1 cm) would make the limit push the arm off a
        # start pose at its limit (ARTy = 0).
        root.find("joint", joint).margin = 0.0
        slide = joint.startswith("ART")
        kp, kv = (ARM_SLIDE_KP, ARM_SLIDE_KV) if slide else (ARM_HINGE_KP, ARM_HINGE_KV)
        j = root.find("joint", joint)
        root.actuator.add("position", name=f"A_{joint}", joint=joint, kp=kp, kv=kv, ctrlrange=j.range)
    return root


def build_robot(profile: RobotProfile, **options: Any) -> mjcf.RootElement:
    """The profile's robot model (`profile.model.builder`, called with the profile and `options`),
    alone, base at its own origin."""
    if profile.model is None:
        raise ValueError(f"robot profile {profile.name!r} names no robot model")
    module, _, name = profile.model.builder.partition(":")
    return getattr(importlib.import_module(module), name)(profile, **options)


def attach_robot(scene: mjcf.RootElement, profile: RobotProfile, **options: Any) -> tuple[mjcf.Element, str]:
    """Attach the profile's robot model (built with `options`) to `scene` with its base at
    `profile.model.base_pos` / `base_quat` (world frame). Returns the attachment frame and the
    namespace prefix of the robot's elements in the compiled model (e.g. "adroit/")."""
    robot = build_robot(profile, **options)
    frame = scene.worldbody.attach(robot)
    frame.pos = profile.model.base_pos
    frame.quat = profile.model.base_quat
    return frame, robot.model + "/"
