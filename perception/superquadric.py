"""Superquadric fit to an object's point cloud (numpy + scipy; no torch, no ROS).

A superquadric in its own frame is the set of points where the inside-outside function

    F(x, y, z) = (|x/a1|^(2/e2) + |y/a2|^(2/e2))^(e2/e1) + |z/a3|^(2/e1)

equals 1 (F < 1 inside). a1, a2, a3 are half-extents (metres) along the object's x, y, z axes;
e2 shapes the cross-section perpendicular to z (1 = ellipse, -> 0 = rectangle) and e1 the
profile along z (1 = round, -> 0 = flat ends). Box: e1, e2 ~ 0.1; cylinder with its axis on z:
e1 ~ 0.1, e2 ~ 1; ellipsoid: e1 = e2 = 1.

The fit minimises Solina & Bajcsy's residual sqrt(a1 a2 a3) (F^e1 - 1) over the 11 parameters
(sizes, exponents, centre, rotation) with scipy's bounded least squares, from a PCA
initialisation tried with each principal axis as the superquadric's z axis (a cylinder is only
representable with its axis on z). Partial views: see `fit_superquadric`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

MIN_POINTS = 20
EXPONENT_BOUNDS = (0.1, 2.0)
SIZE_PRIOR = 0.01  # see fit_superquadric; tuned on partial views of 3-15 cm shapes
MIN_SIZE = 0.002  # metres; below this a half-extent is measurement noise
_LOG_EPS = 1e-12


@dataclass(frozen=True)
class Superquadric:
    """A fitted superquadric in the world frame.

    size: half-extents (a1, a2, a3) in metres along the object's x, y, z axes.
    exponents: (e1, e2), dimensionless; e1 shapes the profile along z, e2 the cross-section.
    position: centre (3,) in metres, world frame.
    rotation: (3, 3) rotation matrix whose columns are the object's x, y, z axes in the world
      frame (a world point p has object coordinates rotation.T @ (p - position)).
    cost: mean squared residual of the fit, priors included (m^3, from the sqrt(a1 a2 a3) weighting).
    """

    size: np.ndarray
    exponents: np.ndarray
    position: np.ndarray
    rotation: np.ndarray
    cost: float = 0.0

    def inside_outside(self, points: np.ndarray) -> np.ndarray:
        """F for world points (N, 3) in metres: < 1 inside, 1 on the surface, > 1 outside."""
        local = (np.asarray(points, dtype=float) - self.position) @ self.rotation
        return np.exp(_log_inside_outside(local, self.size, self.exponents))

    def support(self, direction: np.ndarray) -> float:
        """Largest extent (metres) of the surface along a world unit direction, measured from
        the centre: max over surface points p of direction . (p - position)."""
        return _support(self.rotation.T @ np.asarray(direction, dtype=float), self.size, self.exponents)

    def surface_points(self, count: int = 1000, seed: int = 0) -> np.ndarray:
        """(count, 3) world points on the surface (for plots and checks; not area-uniform)."""
        rng = np.random.default_rng(seed)
        directions = rng.normal(size=(count, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        # Scale each direction onto F = 1: F is homogeneous of degree 2/e1 along rays.
        log_f = _log_inside_outside(directions, self.size, self.exponents)
        local = directions * np.exp(-0.5 * self.exponents[0] * log_f)[:, None]
        return local @ self.rotation.T + self.position


def _log_inside_outside(local: np.ndarray, size: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """log F for object-frame points (N, 3); computed in log space so that sharp shapes
    (exponents 0.1 -> powers of 20) and far points cannot overflow."""
    e1, e2 = exponents
    log_abs = np.log(np.abs(local / size) + _LOG_EPS)
    log_xy = np.logaddexp((2.0 / e2) * log_abs[:, 0], (2.0 / e2) * log_abs[:, 1])
    return np.logaddexp((e2 / e1) * log_xy, (2.0 / e1) * log_abs[:, 2])


def _support(direction_local: np.ndarray, size: np.ndarray, exponents: np.ndarray) -> float:
    """Support function of a superquadric: the nested dual norm with exponents 2 / (2 - e)
    (the dual of an L_p ball is the L_q ball, 1/p + 1/q = 1)."""
    e1, e2 = np.minimum(exponents, 1.999)
    q1, q2 = 2.0 / (2.0 - e1), 2.0 / (2.0 - e2)
    v = np.abs(direction_local * size)
    scale = max(float(v.max()), 1e-12)  # normalise so that large q cannot underflow
    v = v / scale
    inner = (v[0] ** q2 + v[1] ** q2) ** (1.0 / q2)
    return scale * float((inner**q1 + v[2] ** q1) ** (1.0 / q1))


def _check_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate a cloud; returns (points, centroid, principal axes as columns, std per axis)."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"point cloud must have shape (N, 3), got {pts.shape}")
    if len(pts) == 0:
        raise ValueError("point cloud is empty: nothing to fit (is the object mask empty or out of range?)")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise ValueError(
            f"point cloud has {int(bad.sum())} non-finite points (NaN/inf) of {len(pts)}; "
            "drop invalid depth before fitting"
        )
    if len(pts) < MIN_POINTS:
        raise ValueError(f"point cloud has {len(pts)} points; at least {MIN_POINTS} are needed to fit a superquadric")
    centroid = pts.mean(axis=0)
    _, singular, vt = np.linalg.svd(pts - centroid, full_matrices=False)
    std = singular / np.sqrt(len(pts))
    if std[0] < 1e-6:
        raise ValueError("degenerate point cloud: all points coincide (spread < 1 um)")
    if std[1] < 1e-3 * std[0]:
        raise ValueError(
            f"degenerate point cloud: points are collinear (spread {std[0] * 1e3:.1f} mm along one "
            f"line, {std[1] * 1e3:.3f} mm across); cannot fit a 3-D shape"
        )
    if std[2] < 1e-3 * std[0]:
        raise ValueError(
            f"degenerate point cloud: points are coplanar (thickness {std[2] * 1e3:.3f} mm over a "
            f"{std[0] * 1e3:.1f} mm spread); cannot fit a 3-D shape"
        )
    return pts, centroid, vt.T, std


def fit_superquadric(
    points: np.ndarray,
    support_z: float | None = None,
    size_prior: float = SIZE_PRIOR,
    max_points: int = 600,
    seed: int = 0,
) -> Superquadric:
    """Fit a superquadric to an object's surface points.

    points: (N, 3) metres, world frame (z up), N >= 20, finite, not collinear or coplanar;
      otherwise ValueError says what is wrong.
    support_z: height (metres, world z) of the table the object rests on, or None. A single
      depth camera sees about half of an object; the hidden half leaves the far side and the
      bottom unconstrained, and the plain residual then prefers a thin shell hugging the
      visible surface. With support_z the fit adds one residual that makes the superquadric's
      lowest point touch the table (the object stands on it), which pins the height and,
      through the visible top and sides, the centre. Leave it None for a full cloud or an
      object that is not resting on a horizontal surface.
    size_prior: weight of a small penalty on the half-extents (one residual per size, scaled
      by sqrt(N)). On a partial view a face's points lie on the surface of any larger box
      that extends backwards into the unseen half, and the algebraic residual even prefers
      the larger one (its F - 1 per millimetre of noise is smaller); the prior picks the
      smallest superquadric that explains the points. It shrinks full-view fits by ~1-5%
      (ellipsoids most); 0 turns it off.
    max_points: the fit uses at most this many points (a fixed-seed random subset): the
      result changes little above a few hundred and the time grows linearly.
    """
    pts, centroid, axes, std = _check_points(points)
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(seed).choice(len(pts), max_points, replace=False)]
    local = (pts - centroid) @ axes
    half_extent = np.maximum(0.5 * (local.max(axis=0) - local.min(axis=0)), MIN_SIZE)
    # A box or cylinder's mid-range centre is better than the centroid (which leans towards denser faces).
    centre0 = centroid + axes @ (0.5 * (local.max(axis=0) + local.min(axis=0)))
    span = float(half_extent.max())

    best: Superquadric | None = None
    for z_axis in range(3):
        order = [(z_axis + 1) % 3, (z_axis + 2) % 3, z_axis]  # cyclic: keeps a right-handed frame
        rot0 = axes[:, order]
        if np.linalg.det(rot0) < 0:
            rot0 = rot0 * np.array([1.0, 1.0, -1.0])
        candidate = _fit_once(pts, centre0, rot0, half_extent[order], span, support_z, size_prior)
        if best is None or candidate.cost < best.cost:
            best = candidate
    assert best is not None
    return _canonical(best)


def _fit_once(
    pts: np.ndarray,
    centre0: np.ndarray,
    rot0: np.ndarray,
    size0: np.ndarray,
    span: float,
    support_z: float | None,
    size_prior: float,
) -> Superquadric:
    """One bounded least-squares fit from an initial pose; rotation = rot0 @ exp(w)."""
    # Parameters: a1 a2 a3 e1 e2 | centre (3) | rotation vector w (3), relative to rot0.
    x0 = np.concatenate([size0, [1.0, 1.0], centre0, np.zeros(3)])
    size_hi = 3.0 * span + 0.01
    lower = np.concatenate([[MIN_SIZE] * 3, [EXPONENT_BOUNDS[0]] * 2, centre0 - 2.0 * span, [-np.pi] * 3])
    upper = np.concatenate([[size_hi] * 3, [EXPONENT_BOUNDS[1]] * 2, centre0 + 2.0 * span, [np.pi] * 3])
    x0 = np.clip(x0, lower + 1e-9, upper - 1e-9)
    support_weight = np.sqrt(len(pts))  # the table prior counts like the whole cloud
    size_weight = size_prior * np.sqrt(len(pts))
    down = np.array([0.0, 0.0, -1.0])

    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rot = rot0 @ Rotation.from_rotvec(x[8:11]).as_matrix()
        return x[0:3], x[3:5], x[5:8], rot

    def residuals(x: np.ndarray) -> np.ndarray:
        size, exps, centre, rot = unpack(x)
        local = (pts - centre) @ rot
        f_e1 = np.exp(exps[0] * _log_inside_outside(local, size, exps))
        res = np.append(np.sqrt(np.prod(size)) * (f_e1 - 1.0), size_weight * size)
        if support_z is None:
            return res
        lowest = centre[2] - _support(rot.T @ down, size, exps)
        # Scaled to the point residuals' units (sqrt(m^3) per unit F-error ~ sqrt(volume)/size).
        table = support_weight * np.sqrt(np.prod(size)) * (lowest - support_z) / max(span, 1e-3)
        return np.append(res, table)

    result = least_squares(residuals, x0, bounds=(lower, upper), x_scale="jac", ftol=1e-8, xtol=1e-8, max_nfev=400)
    size, exps, centre, rot = unpack(result.x)
    return Superquadric(
        size=size.copy(),
        exponents=exps.copy(),
        position=centre.copy(),
        rotation=rot,
        cost=float(np.mean(result.fun**2)),
    )


def _canonical(sq: Superquadric) -> Superquadric:
    """Same shape, rotation with its z axis pointing up and x towards +world x where possible
    (a superquadric is symmetric under a half-turn about any of its axes)."""
    rot = sq.rotation.copy()
    if rot[2, 2] < 0:  # half-turn about the object's x axis flips y and z
        rot[:, 1:] *= -1.0
    if rot[0, 0] < 0:  # half-turn about z flips x and y
        rot[:, :2] *= -1.0
    return Superquadric(size=sq.size, exponents=sq.exponents, position=sq.position, rotation=rot, cost=sq.cost)
