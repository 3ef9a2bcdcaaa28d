"""Tabletop scene composed with `dm_control.mjcf`: Panda arm + gripper, table, objects, cameras.

Frames: the world frame is the robot base frame (x forward, z up); the table top is the plane
z = 0 and the floor lies `TABLE_HEIGHT` below it. Lengths in metres, angles in radians.

The arm is our own MJCF built here with the standard Franka kinematics (as in Franka's
published description) and the link meshes that ship with gymnasium-robotics' kitchen
Franka. Joint names are the profile's (`panda_joint1..7`); the gripper's two finger joints
are `panda_finger_joint1/2`, driven from the profile's one finger joint. Gravity is
compensated on the robot's bodies (as the real Panda controller does), so position
actuators track their targets without a steady-state sag.

Every catalogue object is in the model (so tasks switch objects without recompiling); objects
not in play are parked off-stage by `park_object`.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
from dm_control import mjcf

from dexstack.hardware.profiles import PANDA, RobotProfile
from dexstack.sim import objects as objects_lib

TABLE_HEIGHT = 0.75  # m, table top above the floor
TABLE_HALF_SIZE = (0.55, 0.6, 0.025)  # m, half extents of the table top slab
TABLE_CENTER_X = 0.35  # m, the robot sits near the table's back edge
ROBOT_PREFIX = "panda/"
TIMESTEP = 0.002  # s (contract.PHYSICS_HZ = 500)
PARK_POSITION = np.array([3.0, 0.0, 1.0])  # m, behind the scene camera, out of every view

# Pads of the fingers: their centre is the tool centre point (TCP), in the hand frame.
HAND_OFFSET = 0.107  # m, flange (link7) to hand frame along link7's z
FINGER_OFFSET = 0.0584  # m, hand frame to the finger bodies
TCP_OFFSET = 0.1234  # m, hand frame to the middle of the finger pads
TCP_SITE = ROBOT_PREFIX + "tcp"

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


def franka_mesh_dir() -> Path:
    """Folder of the Panda meshes shipped in the gymnasium-robotics package."""
    # find_spec locates the package without importing it (its import prints a banner).
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("gymnasium-robotics is not installed; the Panda meshes ship with it")
    package = Path(list(spec.submodule_search_locations)[0])
    path = package / "envs" / "assets" / "kitchen_franka" / "franka_assets" / "meshes"
    if not path.is_dir():
        raise FileNotFoundError(f"Panda meshes not found at {path}; is gymnasium-robotics installed?")
    return path


def look_at_xyaxes(pos, target, up=(0.0, 0.0, 1.0)) -> list[float]:
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


def robot_model(profile: RobotProfile = PANDA, with_cameras: bool = True, mesh_detail: str = "low") -> mjcf.RootElement:
    """The Panda arm + gripper as an mjcf model named "panda" (base at its origin).

    mesh_detail "low" draws the links with their collision hulls (~250 triangles each),
    "high" with the detailed visual meshes (~136k triangles in all, ~3x slower to render on a
    software GL). Physics is identical: visual geoms have no mass and no contacts.
    """
    if mesh_detail not in MESH_DETAIL:
        raise ValueError(f"mesh_detail must be one of {MESH_DETAIL}, got {mesh_detail!r}")
    if profile.joint_names[:7] != tuple(f"panda_joint{i}" for i in range(1, 8)) or profile.n_joints != 8:
        raise ValueError(f"robot_model builds a Panda; profile {profile.name} has joints {profile.joint_names}")
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
    pad.geom.set_attributes(contype=1, conaffinity=0, group=3, condim=6, friction=[1.5, 0.05, 0.001],
                            solref=[0.005, 1.0], rgba=[0.3, 0.3, 0.3, 1.0])

    viz_suffix = "_viz" if mesh_detail == "high" else "_col"
    lower, upper = profile.lower, profile.upper
    parent = root.worldbody.add("body", name="panda_link0", gravcomp=1)
    parent.add("geom", dclass="viz", mesh="link0" + viz_suffix)
    parent.add("geom", dclass="col", mesh="link0_col", mass=_LINK_MASS[0])
    for i, (pos, quat) in enumerate(_LINK_FRAMES, start=1):
        body = parent.add("body", name=f"panda_link{i}", pos=pos, quat=quat, gravcomp=1)
        body.add("joint", name=f"panda_joint{i}", type="hinge", axis=[0, 0, 1], range=[lower[i - 1], upper[i - 1]],
                 armature=0.1, damping=1.0)
        body.add("geom", dclass="viz", mesh=f"link{i}{viz_suffix}")
        body.add("geom", dclass="col", mesh=f"link{i}_col", mass=_LINK_MASS[i])
        parent = body
    hand = parent.add("body", name="panda_hand", pos=[0, 0, HAND_OFFSET], quat=_HAND_QUAT, gravcomp=1)
    hand.add("geom", dclass="viz", mesh="hand" + viz_suffix)
    hand.add("geom", dclass="col", mesh="hand_col", mass=_HAND_MASS)
    hand.add("site", name="tcp", pos=[0, 0, TCP_OFFSET], size=[0.005], rgba=[1, 0, 0, 0], group=4)
    for side, sign in (("1", 1.0), ("2", -1.0)):
        finger = hand.add("body", name=f"panda_finger{side}", pos=[0, 0, FINGER_OFFSET], gravcomp=1)
        finger.add("inertial", pos=[0, sign * 0.0119, 0.0434], mass=0.0927,
                   diaginertia=[6.6e-05, 6.1e-05, 1.1e-05])
        finger.add("joint", name=f"panda_finger_joint{side}", type="slide", axis=[0, sign, 0],
                   range=[lower[7], upper[7]], armature=0.05, damping=2.0)
        finger.add("geom", dclass="viz", mesh="finger", quat=[1, 0, 0, 0] if sign > 0 else [0, 0, 0, 1])
        # Pads: pairs of crossed capsules down the inner face, as in the kitchen model.
        for z, r, y0 in ((0.0875, 0.0070, 0.006), (0.0775, 0.0075, 0.007), (0.0675, 0.0082, 0.008),
                         (0.0575, 0.0090, 0.009), (0.0475, 0.0100, 0.0105), (0.035, 0.0110, 0.012)):
            y1 = y0 + 0.003
            finger.add("geom", dclass="pad", type="capsule", size=[r],
                       fromto=[0.009, sign * y0, z, -0.009, sign * y1, z])
            finger.add("geom", dclass="pad", type="capsule", size=[r],
                       fromto=[0.009, sign * y1, z, -0.009, sign * y0, z])
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
        root.actuator.add("position", name=joint, joint=joint, kp=ARM_KP[i], kv=ARM_KV[i],
                          ctrlrange=[lower[i], upper[i]], forcerange=[-ARM_FORCE[i], ARM_FORCE[i]])
    for side in ("1", "2"):
        root.actuator.add("position", name=f"panda_finger{side}", joint=f"panda_finger_joint{side}", kp=FINGER_KP,
                          kv=FINGER_KV, ctrlrange=[lower[7], upper[7]], forcerange=[-FINGER_FORCE, FINGER_FORCE])
    return root


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


def configure_grasping_scene(scene: mjcf.RootElement, camera_sizes: list[tuple[int, int]],
                             timestep: float = TIMESTEP) -> None:
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


def build_scene(profile: RobotProfile = PANDA, object_names: tuple[str, ...] | None = None,
                camera_size: tuple[int, int] | None = None,
                mesh_detail: str = "low") -> tuple[mjcf.RootElement, SceneNames]:
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

    scene.asset.add("texture", name="floor_tex", type="2d", builtin="checker", rgb1=[0.25, 0.28, 0.32],
                    rgb2=[0.18, 0.2, 0.24], width=256, height=256)
    scene.asset.add("material", name="floor_mat", texture="floor_tex", texrepeat=[4, 4], reflectance=0.0)
    scene.worldbody.add("geom", name="floor", type="plane", size=[3, 3, 0.1], pos=[0, 0, -TABLE_HEIGHT],
                        material="floor_mat")
    scene.worldbody.add("light", name="top", pos=[0.4, 0, 1.5], dir=[0, 0, -1], directional=True,
                        castshadow=False, diffuse=[0.6, 0.6, 0.6])
    table = scene.worldbody.add("body", name="table", pos=[TABLE_CENTER_X, 0, -TABLE_HALF_SIZE[2]])
    table.add("geom", name="table_top", type="box", size=TABLE_HALF_SIZE, rgba=[0.62, 0.5, 0.38, 1],
              friction=[1.0, 0.005, 0.0001])
    leg_h = (TABLE_HEIGHT - 2 * TABLE_HALF_SIZE[2]) / 2
    for k, (sx, sy) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
        table.add("geom", name=f"table_leg{k}", type="box", size=[0.025, 0.025, leg_h], contype=0, conaffinity=0,
                  pos=[sx * (TABLE_HALF_SIZE[0] - 0.05), sy * (TABLE_HALF_SIZE[1] - 0.05), -leg_h - TABLE_HALF_SIZE[2]],
                  rgba=[0.45, 0.35, 0.25, 1])

    scene_cam = profile.camera("scene") if "scene" in profile.camera_names else None
    if scene_cam is not None:
        cam_pos = [1.25, 0.5, 0.6]
        scene.worldbody.add("camera", name=scene_cam.name, pos=cam_pos,
                            xyaxes=look_at_xyaxes(cam_pos, [0.4, 0.0, 0.1]), fovy=50.0)

    robot = robot_model(profile, mesh_detail=mesh_detail)
    scene.worldbody.attach(robot)

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
