"""Superquadric fit, grasp pose and depth back-projection (numpy + scipy + MuJoCo; no ROS)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexstack.perception.camera import optical_pose_from_mujoco, points_from_depth
from dexstack.perception.grasp_pose import approach_direction, grasp_pose, pregrasp
from dexstack.perception.superquadric import Superquadric, fit_superquadric

CAMERA = np.array([0.0, 0.0, 0.6])  # a robot-side camera above the base, looking at objects 0.3-0.6 m away


# --- surface samplers: points (n, 3) and outward normals in the shape's own frame ----------------
def _box(rng, half, n):
    areas = 2.0 * np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
    face = rng.choice(3, n, p=areas / areas.sum())
    sign = rng.choice([-1.0, 1.0], n)
    points = rng.uniform(-1.0, 1.0, (n, 3)) * half
    points[np.arange(n), face] = sign * half[face]
    normals = np.zeros((n, 3))
    normals[np.arange(n), face] = sign
    return points, normals


def _cylinder(rng, radius, half_height, n):
    side, cap = 4.0 * np.pi * radius * half_height, np.pi * radius**2
    kind = rng.choice(3, n, p=np.array([side, cap, cap]) / (side + 2.0 * cap))
    theta = rng.uniform(0.0, 2.0 * np.pi, n)
    rad = np.where(kind == 0, radius, radius * np.sqrt(rng.uniform(0.0, 1.0, n)))
    z = np.select([kind == 0, kind == 1], [rng.uniform(-half_height, half_height, n), half_height], -half_height)
    points = np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=1)
    normals = np.stack([np.cos(theta), np.sin(theta), np.zeros(n)], axis=1)
    normals[kind > 0] = [0.0, 0.0, 1.0]
    normals[kind == 2, 2] = -1.0
    return points, normals


def _ellipsoid(rng, half, n):
    d = rng.normal(size=(n, 3))
    points = half * d / np.linalg.norm(d, axis=1, keepdims=True)
    normals = points / half**2
    return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def make_cloud(kind: str, seed: int, partial: bool, n: int = 1500, noise: float = 0.001):
    """A shape with random half-extents 1.5-7.5 cm (sizes 3-15 cm), random yaw, tilt up to
    ~8 deg, resting on the table z = 0; partial keeps what CAMERA sees."""
    rng = np.random.default_rng(seed)
    if kind == "cylinder":
        radius, half_height = rng.uniform(0.015, 0.075, 2)
        half = np.array([radius, radius, half_height])
        local, normals = _cylinder(rng, radius, half_height, 3 * n)
    else:
        half = rng.uniform(0.015, 0.075, 3)
        local, normals = (_box if kind == "box" else _ellipsoid)(rng, half, 3 * n)
    rot = Rotation.from_euler("zyx", [rng.uniform(-np.pi, np.pi), *rng.uniform(-0.15, 0.15, 2)]).as_matrix()
    points, normals = local @ rot.T, normals @ rot.T
    centre = np.array([rng.uniform(0.3, 0.6), rng.uniform(-0.2, 0.2), -points[:, 2].min()])
    points = points + centre
    if partial:  # a convex shape hides exactly the surface facing away from the camera
        points = points[np.einsum("ij,ij->i", normals, CAMERA - points) > 0]
    points = points[:n]
    return points + rng.normal(0.0, noise, points.shape), centre, half, rot


EXPONENTS = {"box": ((0.1, 0.3), (0.1, 0.3)), "cylinder": ((0.1, 0.3), (0.7, 1.3)), "ellipsoid": ((0.7, 1.3),) * 2}
CASES = [(kind, seed) for kind in ("box", "cylinder", "ellipsoid") for seed in (1, 2, 3)]


def _check_fit(sq: Superquadric, kind, centre, half, rot, centre_tol, size_tol):
    assert np.linalg.norm(sq.position - centre) < centre_tol
    # The fitted extent along each true axis checks size and orientation together, and is
    # blind to the symmetries (a box's axes may come out in any order, a cylinder's x/y spin).
    extents = np.array([sq.support(rot[:, j]) for j in range(3)])
    np.testing.assert_array_less(np.abs(extents - half), size_tol(half))
    for e, (lo, hi) in zip(sq.exponents, EXPONENTS[kind], strict=True):
        assert lo - 1e-9 <= e <= hi
    if kind == "cylinder":  # only representable with its axis on the superquadric's z
        assert abs(sq.rotation[:, 2] @ rot[:, 2]) > np.cos(np.deg2rad(8.0))
    np.testing.assert_allclose(sq.rotation.T @ sq.rotation, np.eye(3), atol=1e-9)
    assert np.linalg.det(sq.rotation) == pytest.approx(1.0)


@pytest.mark.parametrize("kind,seed", CASES)
def test_fit_recovers_known_shape_from_full_cloud(kind, seed):
    points, centre, half, rot = make_cloud(kind, seed, partial=False)
    sq = fit_superquadric(points)
    _check_fit(sq, kind, centre, half, rot, centre_tol=0.005, size_tol=lambda h: 0.10 * h)


@pytest.mark.parametrize("kind,seed", CASES)
def test_fit_recovers_known_shape_from_partial_view_on_table(kind, seed):
    points, centre, half, rot = make_cloud(kind, seed, partial=True)
    sq = fit_superquadric(points, support_z=0.0)
    # 15% of each half-extent, but at least 15% of the largest: a thin side facing away can be off
    # by more in relative terms; the centre is what grasping needs most.
    _check_fit(sq, kind, centre, half, rot, centre_tol=0.015, size_tol=lambda h: 0.15 * np.maximum(h, h.max()))
    assert sq.position[2] - sq.support(np.array([0.0, 0.0, -1.0])) == pytest.approx(0.0, abs=0.004)


def test_inside_outside_and_surface_points_agree():
    sq = Superquadric(
        size=np.array([0.03, 0.05, 0.08]),
        exponents=np.array([0.3, 0.8]),
        position=np.array([0.4, 0.1, 0.08]),
        rotation=Rotation.from_euler("z", 0.7).as_matrix(),
    )
    surface = sq.surface_points(500)
    np.testing.assert_allclose(sq.inside_outside(surface), 1.0, rtol=1e-9)
    assert sq.inside_outside(sq.position[None] + 1e-4)[0] < 1.0
    assert sq.inside_outside(sq.position[None] + [0.0, 0.0, 0.1])[0] > 1.0
    up = np.array([0.0, 0.0, 1.0])
    assert sq.support(up) >= ((surface - sq.position) @ up).max() - 1e-12
    assert sq.support(up) == pytest.approx(0.08, rel=1e-6)  # z is an object axis: support = a3


@pytest.mark.parametrize(
    "points,message",
    [
        (np.zeros((0, 3)), "empty"),
        (np.random.default_rng(0).normal(size=(10, 3)), "at least 20"),
        (np.vstack([np.random.default_rng(0).normal(size=(50, 3)), [[np.nan, 0.0, 0.0]]]), "non-finite"),
        (np.linspace(0.0, 1.0, 50)[:, None] * [0.1, 0.2, 0.05] + [0.5, 0.0, 0.0], "collinear"),
        (np.c_[np.random.default_rng(0).uniform(0, 0.1, (200, 2)), np.full(200, 0.05)], "coplanar"),
        (np.ones((50, 3)), "coincide"),
        (np.zeros((50, 2)), "shape"),
    ],
)
def test_bad_clouds_are_rejected_with_a_clear_message(points, message):
    with pytest.raises(ValueError, match=message):
        fit_superquadric(points)


# --- grasp pose -------------------------------------------------------------------------------
def _upright_box(yaw=0.4):
    return Superquadric(
        size=np.array([0.02, 0.035, 0.06]),
        exponents=np.array([0.1, 0.1]),
        position=np.array([0.5, 0.1, 0.06]),
        rotation=Rotation.from_euler("z", yaw).as_matrix(),
    )


def test_top_grasp_comes_down_onto_the_top_face_and_closes_across_the_narrow_side():
    box = _upright_box()
    position, quat = grasp_pose(box, "top")
    assert np.linalg.norm(quat) == pytest.approx(1.0)
    frame = Rotation.from_quat(quat, scalar_first=True).as_matrix()
    np.testing.assert_allclose(frame[:, 2], [0.0, 0.0, -1.0], atol=1e-9)  # approach straight down
    assert abs(frame[:, 0] @ box.rotation[:, 0]) == pytest.approx(1.0)  # closes across the 4 cm width
    np.testing.assert_allclose(position, box.position + [0.0, 0.0, 0.06], atol=1e-6)  # palm on the top face
    assert frame[:, 0] @ (box.position - [0.0, 0.0, 0.0]) > 0  # fingers on the far side from the robot


def test_side_grasp_approaches_horizontally_from_the_robot():
    box = _upright_box(yaw=0.2)
    position, quat = grasp_pose(box, "side", standoff=0.01)
    z = approach_direction(quat)
    assert abs(z[2]) < 1e-9 and z @ box.position > 0  # horizontal, moving away from the base
    # Along the object's x axis (closest to the reach direction); closes across its 7 cm y width.
    assert abs(z @ box.rotation[:, 0]) == pytest.approx(1.0)
    np.testing.assert_allclose(position, box.position - z * (0.02 + 0.01), atol=1e-6)
    frame = Rotation.from_quat(quat, scalar_first=True).as_matrix()
    assert frame[2, 1] > 0.99  # y up


def test_pregrasp_is_five_cm_back_along_the_approach():
    pose = grasp_pose(_upright_box(), "top")
    back, quat = pregrasp(pose)
    np.testing.assert_allclose(back - pose[0], -0.05 * approach_direction(pose[1]), atol=1e-12)
    np.testing.assert_allclose(back, pose[0] + [0.0, 0.0, 0.05], atol=1e-9)
    np.testing.assert_array_equal(quat, pose[1])


def test_too_wide_object_is_refused_and_auto_falls_back_to_side():
    wide_top = Superquadric(
        size=np.array([0.07, 0.09, 0.03]),
        exponents=np.array([0.1, 0.1]),
        position=np.array([0.5, 0.0, 0.03]),
        rotation=np.eye(3),
    )
    with pytest.raises(ValueError, match="aperture 10.0 cm"):
        grasp_pose(wide_top, "top")
    with pytest.raises(ValueError, match="aperture"):
        grasp_pose(wide_top, "auto")  # no horizontal width fits from the side either
    tall_slab = Superquadric(
        size=np.array([0.02, 0.06, 0.08]),
        exponents=np.array([0.1, 0.1]),
        position=np.array([0.5, 0.0, 0.08]),
        rotation=Rotation.from_euler("z", 1.4).as_matrix(),
    )
    _, quat = grasp_pose(tall_slab, "auto", max_aperture=0.05)  # 4 cm across from the top fits
    assert approach_direction(quat)[2] < -0.99
    _, quat = grasp_pose(tall_slab, "side", max_aperture=0.05)  # side: must close across the 4 cm side
    assert abs(Rotation.from_quat(quat, scalar_first=True).as_matrix()[:, 0] @ tall_slab.rotation[:, 0]) > 0.999
    with pytest.raises(ValueError, match="approach must be one of"):
        grasp_pose(tall_slab, "under")


def test_grasp_from_fitted_cylinder_closes_across_its_diameter():
    points, centre, half, rot = make_cloud("cylinder", 8, partial=True)
    assert half[0] < 0.04 < half[2]  # a tall can, 7 cm across: graspable from the top and the side
    sq = fit_superquadric(points, support_z=0.0)
    position, quat = grasp_pose(sq, "top")
    assert approach_direction(quat) @ rot[:, 2] == pytest.approx(-1.0, abs=0.01)  # down the can's axis
    np.testing.assert_allclose(position, centre + rot[:, 2] * half[2], atol=0.015)  # palm on the lid
    position, quat = grasp_pose(sq, "side")
    assert abs(approach_direction(quat) @ rot[:, 2]) < 0.15
    assert np.linalg.norm(position - centre) == pytest.approx(half[0], abs=0.01)  # palm on the curved side


# --- depth back-projection --------------------------------------------------------------------
def _look_at(eye, target):
    """Optical-frame-to-world (4, 4): z towards target, y down-ish (x right)."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    pose[:3, 3] = eye
    return pose


def test_points_from_depth_round_trip_on_the_table_plane():
    height, width, f = 48, 64, 50.0
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    pose = _look_at(np.array([0.0, 0.0, 0.6]), np.array([0.5, 0.1, 0.0]))
    v, u = np.mgrid[0:height, 0:width]
    rays = np.stack([(u - cx) / f, (v - cy) / f, np.ones_like(u, dtype=float)], axis=-1) @ pose[:3, :3].T
    depth = -pose[2, 3] / rays[..., 2]  # z-depth where each pixel's ray meets z = 0 (ray has optical z = 1)
    expected = pose[:3, 3] + depth[..., None] * rays
    mask = np.zeros((height, width), bool)
    mask[10:30, 20:50] = True
    depth[12, 25] = 0.0  # no return: dropped
    points = points_from_depth(depth, mask, f, f, cx, cy, pose)
    assert points.shape == (20 * 30 - 1, 3)
    np.testing.assert_allclose(points[:, 2], 0.0, atol=1e-12)
    keep = mask.copy()
    keep[12, 25] = False
    np.testing.assert_allclose(points, expected[keep], atol=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        points_from_depth(depth, mask[:, :10], f, f, cx, cy, pose)


def test_fit_on_a_mujoco_depth_render_of_a_box():
    """Real MuJoCo depth through the sim's renderer and camera conventions, end to end."""
    mujoco = pytest.importorskip("mujoco")
    from dexstack.sim.render import RgbdRenderer

    half, centre, yaw = np.array([0.025, 0.04, 0.06]), np.array([0.5, 0.05, 0.06]), 0.5
    quat = Rotation.from_euler("z", yaw).as_quat(scalar_first=True)
    xml = f"""<mujoco><visual><global offwidth="160" offheight="120"/></visual><worldbody>
      <geom type="plane" size="0.3 0.3 0.01" pos="0.5 0 0"/>
      <geom type="box" size="{half[0]} {half[1]} {half[2]}" pos="{centre[0]} {centre[1]} {centre[2]}"
            quat="{" ".join(map(str, quat))}"/>
      <camera name="scene" pos="0.05 0 0.55" xyaxes="{" ".join(map(str, _xyaxes()))}" fovy="50"/>
    </worldbody></mujoco>"""
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    try:
        renderer = RgbdRenderer(model, 160, 120)
    except RuntimeError as exc:
        pytest.skip(f"no offscreen GL: {exc}")
    _, depth = renderer.render(data, 0)
    renderer.close()
    f = 0.5 * 120 / np.tan(np.deg2rad(25.0))
    pose = optical_pose_from_mujoco(data.cam_xpos[0], data.cam_xmat[0])
    world = points_from_depth(depth, depth > 0, f, f, 79.5, 59.5, pose)
    # The floor comes back flat at z = 0, within the depth buffer's quantisation (~1-4 mm here).
    table = world[:, 2] < 0.005
    assert table.mean() > 0.9 and np.abs(world[table, 2]).max() < 0.005
    sq = fit_superquadric(world[~table], support_z=0.0)
    assert np.linalg.norm(sq.position - centre) < 0.015
    assert sq.exponents.max() < 0.35
    extents = np.array([sq.support(axis) for axis in Rotation.from_euler("z", yaw).as_matrix().T])
    np.testing.assert_allclose(extents, half, atol=0.15 * half.max())


def _xyaxes():
    """MuJoCo camera x and y axes for a camera at (0.05, 0, 0.55) looking at (0.5, 0.05, 0.05)."""
    forward = np.array([0.45, 0.05, -0.5])
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    return np.concatenate([x, np.cross(x, forward)])
