"""From a masked depth image to a checked grasp pose: the one grasp pipeline.

Used by the grasp task's reset (`sim/tasks/grasp.py`, in-process and behind the sim node) and
by the grasp planner node (`ros_nodes/grasp_planner_node.py`), so a pose planned through ROS
and one planned in-process come from the same code. Back-project the masked depth
(`camera.points_from_depth`), fit a superquadric with the table prior, refuse a fit that does
not explain the cloud (`check_fit`), plan the grasp (`grasp_pose.grasp_pose`) and, for an arm
with a limited wrist, turn it to the equivalent the arm reaches (`grasp_pose.arm_friendly_grasp`).
"""

from __future__ import annotations

import numpy as np

from dexstack.perception.camera import points_from_depth
from dexstack.perception.grasp_pose import HAND_APERTURE, arm_friendly_grasp, grasp_pose
from dexstack.perception.superquadric import Superquadric, fit_superquadric

MIN_POINTS = 50  # fewer object points than this are too few to trust a fit
# A fit whose centre lies further than this outside the cloud's bounding box, or whose
# half-extent exceeds the cloud's span by this much, explains the points with a shape that
# is mostly unseen: refused as degenerate.
FIT_SLACK_M = 0.05
BOX_EXPONENTS = (0.1, 0.1)  # a superquadric this square is a box


def check_fit(fit: Superquadric, points: np.ndarray) -> None:
    """ValueError unless the fit is finite and stays close to the cloud it explains."""
    values = np.concatenate([fit.size, fit.exponents, fit.position, fit.rotation.ravel()])
    if not np.isfinite(values).all():
        raise ValueError("superquadric fit is not finite")
    lo, hi = points.min(axis=0) - FIT_SLACK_M, points.max(axis=0) + FIT_SLACK_M
    if np.any(fit.position < lo) or np.any(fit.position > hi):
        raise ValueError(
            f"degenerate fit: centre {np.round(fit.position, 3).tolist()} m lies outside the "
            f"cloud's bounds by more than {FIT_SLACK_M} m"
        )
    span = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))
    if float(fit.size.max()) > span + FIT_SLACK_M:
        raise ValueError(f"degenerate fit: half-extent {fit.size.max():.3f} m for a cloud spanning {span:.3f} m")


def fit_object(
    depth: np.ndarray,
    mask: np.ndarray,
    intrinsics: tuple[float, float, float, float],
    camera_pose: np.ndarray,
    support_z: float | None,
) -> tuple[Superquadric, int]:
    """Checked superquadric of the masked object and the number of points it was fitted to, or
    ValueError saying why this frame gives no trustworthy fit."""
    if depth.shape != mask.shape:
        raise ValueError(
            f"depth {depth.shape[1]}x{depth.shape[0]} and mask {mask.shape[1]}x{mask.shape[0]} differ in size"
        )
    if not mask.any():
        raise ValueError("object mask is empty: no object in view")
    points = points_from_depth(depth, mask, *intrinsics, camera_pose)
    if len(points) < MIN_POINTS:
        raise ValueError(f"only {len(points)} object points with depth (need {MIN_POINTS})")
    fit = fit_superquadric(points, support_z=support_z)
    check_fit(fit, points)
    return fit, len(points)


def grasp_from_fit(
    fit: Superquadric,
    approach: str = "auto",
    max_aperture: float = HAND_APERTURE,
    standoff: float = 0.0,
    reference: np.ndarray | None = None,
    arm_friendly: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Grasp pose (position, quaternion wxyz) for `fit` (`grasp_pose.grasp_pose`), turned with
    `arm_friendly` towards `reference` (`arm_friendly_grasp`); ValueError if none is usable."""
    grasp = grasp_pose(fit, approach, max_aperture=max_aperture, standoff=standoff, reference=reference)
    if arm_friendly:
        grasp = arm_friendly_grasp(grasp, fit, np.zeros(3) if reference is None else reference)
    if not (np.isfinite(grasp[0]).all() and np.isfinite(grasp[1]).all()):
        raise ValueError("grasp pose is not finite")
    return grasp


def plan_grasp(
    depth: np.ndarray,
    mask: np.ndarray,
    intrinsics: tuple[float, float, float, float],
    camera_pose: np.ndarray,
    support_z: float | None,
    approach: str,
    max_aperture: float,
    standoff: float,
    reference: np.ndarray,
    arm_friendly: bool,
) -> tuple[tuple[np.ndarray, np.ndarray], Superquadric, int]:
    """Grasp pose (position, quaternion wxyz), the fit and the number of points, or ValueError
    saying why this frame gives no trustworthy pose."""
    fit, n_points = fit_object(depth, mask, intrinsics, camera_pose, support_z)
    grasp = grasp_from_fit(fit, approach, max_aperture, standoff, reference, arm_friendly)
    return grasp, fit, n_points


def box_superquadric(
    body_position: np.ndarray,
    body_rotation: np.ndarray,
    geom_positions: np.ndarray,
    geom_rotations: np.ndarray,
    geom_half_extents: np.ndarray,
) -> Superquadric:
    """The box superquadric of a rigid body's bounding box, from its collision primitives.

    body_position (3,) m and body_rotation (3, 3): the body's frame in the world;
    geom_positions (n, 3), geom_rotations (n, 3, 3) and geom_half_extents (n, 3): each
    primitive's frame in the world and its own axis-aligned half-extents (MuJoCo's
    `geom_aabb[:, 3:]`). The box is aligned with the body's axes; its centre (`position`) is
    the body's true centre, what a fit to its cloud should find (the oracle perception of
    state-only runs, and the lift measured by the grasp task).
    """
    rot = body_rotation
    corners = []
    for pos, geom_rot, half in zip(geom_positions, geom_rotations, geom_half_extents, strict=True):
        # Each primitive's own axis-aligned extent in the body frame, via its bounding box.
        centre = rot.T @ (pos - body_position)
        extent = np.abs(rot.T @ geom_rot) @ half
        corners += [centre - extent, centre + extent]
    lo, hi = np.min(corners, axis=0), np.max(corners, axis=0)
    return Superquadric(
        size=(hi - lo) / 2,
        exponents=np.array(BOX_EXPONENTS),
        position=body_position + rot @ ((lo + hi) / 2),
        rotation=rot.copy(),
    )
