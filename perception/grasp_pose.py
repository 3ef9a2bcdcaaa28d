"""A 6-D grasp pose for a multi-fingered hand from a fitted superquadric (numpy + scipy).

Grasp frame (world frame, z up), the pose a hand's palm frame should reach:
- z: the approach direction, from the palm into the object (the palm normal);
- x: the closing direction, thumb towards fingers; the object's width along it must fit
  within the hand's aperture;
- y = z cross x.
The position is the palm centre: on the superquadric's surface where the approach line
through the object's centre enters it, backed off by `standoff`. A hand whose palm frame
differs (Adroit's wrist frame, for example) applies its own fixed palm-to-wrist transform
before inverse kinematics. Quaternions are (w, x, y, z), Hamilton, frame-to-world.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from dexstack.perception.superquadric import Superquadric

HAND_APERTURE = 0.10  # metres: widest object a multi-fingered hand closes around (Adroit ~ 10 cm)
PREGRASP_DISTANCE = 0.05  # metres back along the approach direction
APPROACHES = ("top", "side", "auto")
ROUND_RATIO = 1.1  # widest / narrowest width across the approach below which a section is round

Pose = tuple[np.ndarray, np.ndarray]  # position (3,) metres, quaternion (w, x, y, z)


def grasp_pose(
    sq: Superquadric,
    approach: str = "top",
    max_aperture: float = HAND_APERTURE,
    standoff: float = 0.0,
    reference: np.ndarray | None = None,
) -> Pose:
    """Grasp pose (position (3,) metres, quaternion wxyz (4,)) in the world frame.

    approach: "top" approaches down the object's most vertical axis and closes across the
      narrower horizontal axis that fits; "side" approaches horizontally along one of the
      object's horizontal axes, from the side of `reference`, and closes across the other;
      "auto" tries "top" and falls back to "side".
    max_aperture: widest object width (metres) the hand can close around.
    standoff: extra distance (metres) between the palm and the superquadric's surface.
    reference: a world point the hand comes from (the robot base; default the world origin):
      side grasps approach from it, and in top grasps the fingers close away from it.
    Raises ValueError when no width of the object fits within max_aperture.
    """
    if approach not in APPROACHES:
        raise ValueError(f"approach must be one of {APPROACHES}, got {approach!r}")
    if approach == "auto":
        try:
            return grasp_pose(sq, "top", max_aperture, standoff, reference)
        except ValueError:
            return grasp_pose(sq, "side", max_aperture, standoff, reference)
    ref = np.zeros(3) if reference is None else np.asarray(reference, dtype=float)
    away = sq.position - ref
    away[2] = 0.0  # only the horizontal direction from the robot matters
    if np.linalg.norm(away) < 1e-9:
        away = np.array([1.0, 0.0, 0.0])
    axes = sq.rotation  # columns: object x, y, z in the world
    vertical = int(np.argmax(np.abs(axes[2, :])))
    horizontal = [i for i in range(3) if i != vertical]
    widths = {i: 2.0 * sq.support(axes[:, i]) for i in range(3)}

    if approach == "top":
        fitting = [i for i in horizontal if widths[i] <= max_aperture]
        if not fitting:
            raise ValueError(_too_wide("top", [widths[i] for i in horizontal], max_aperture))
        z_axis = -np.sign(axes[2, vertical]) * axes[:, vertical]  # pointing down
        closing = min(fitting, key=lambda i: widths[i])
        x_axis = axes[:, closing] * (1.0 if axes[:, closing] @ away >= 0 else -1.0)
    else:
        # Approach along horizontal axis j, close across the other one; among those that fit,
        # reach along the axis closest to the direction from the robot to the object.
        options = [(j, i) for j, i in (horizontal, horizontal[::-1]) if widths[i] <= max_aperture]
        if not options:
            raise ValueError(_too_wide("side", [widths[i] for i in horizontal], max_aperture))
        along, closing = max(options, key=lambda ji: abs(axes[:, ji[0]] @ away))
        z_axis = axes[:, along] * (1.0 if axes[:, along] @ away >= 0 else -1.0)
        x_axis = axes[:, closing]
        if np.cross(z_axis, x_axis)[2] < 0:  # y (= z cross x) points up: thumb below, for a fixed convention
            x_axis = -x_axis
    y_axis = np.cross(z_axis, x_axis)
    rotation = np.stack([x_axis, y_axis, z_axis], axis=1)
    position = sq.position - z_axis * (sq.support(-z_axis) + standoff)
    return position, Rotation.from_matrix(rotation).as_quat(scalar_first=True)


def approach_direction(quaternion: np.ndarray) -> np.ndarray:
    """Unit approach direction (3,), world frame: the grasp frame's z axis."""
    return Rotation.from_quat(np.asarray(quaternion, dtype=float), scalar_first=True).as_matrix()[:, 2]


def pregrasp(pose: Pose, distance: float = PREGRASP_DISTANCE) -> Pose:
    """The pose `distance` metres back along the approach direction, same orientation: where
    inverse kinematics puts the hand before the policy takes over."""
    position, quaternion = pose
    back = np.asarray(position, dtype=float) - distance * approach_direction(quaternion)
    return back, np.asarray(quaternion, dtype=float).copy()


def _too_wide(approach: str, widths: list[float], max_aperture: float) -> str:
    shown = ", ".join(f"{w * 100:.1f}" for w in widths)
    return (
        f"no {approach} grasp: the object's widths across the approach ({shown} cm) all exceed the hand "
        f"aperture {max_aperture * 100:.1f} cm"
    )


def arm_friendly_grasp(
    grasp: tuple[np.ndarray, np.ndarray], fit: Superquadric, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The grasp turned about its approach axis to the equivalent grasp the arm reaches best.

    `grasp_pose` closes across the narrower width; on a round section (a can: all widths within
    ROUND_RATIO) every closing direction is as good and the one it returns is arbitrary, and on
    any box the grasp turned by pi (thumb and fingers swapped) or, for a square section, by
    pi/2 is the same grasp. The Adroit arm's wrist turns only about +-0.5 rad from closing along
    the direction away from its mount, so pick, among these equivalents, the one whose closing
    direction is closest to it: exactly that direction on a round section, the best multiple
    of pi/2 (closing no wider than the original) otherwise.
    """
    rot = Rotation.from_quat(grasp[1], scalar_first=True).as_matrix()
    z, x = rot[:, 2], rot[:, 0]
    away = fit.position - reference
    away = away - (away @ z) * z
    if np.linalg.norm(away) < 1e-9:
        return grasp

    def turned(angle: float) -> np.ndarray:
        return Rotation.from_rotvec(angle * z).as_matrix() @ x

    widths = [2.0 * fit.support(turned(a)) for a in np.linspace(0.0, np.pi, 8, endpoint=False)]
    if max(widths) <= ROUND_RATIO * min(widths):
        new_x = away / np.linalg.norm(away)
    else:
        width = 2.0 * fit.support(x)
        options = [turned(k * np.pi / 2) for k in range(4)]
        options = [o for o in options if 2.0 * fit.support(o) <= ROUND_RATIO * width]
        new_x = max(options, key=lambda o: float(o @ away))
    new_rot = np.stack([new_x, np.cross(z, new_x), z], axis=1)
    return np.asarray(grasp[0], dtype=float), Rotation.from_matrix(new_rot).as_quat(scalar_first=True)
