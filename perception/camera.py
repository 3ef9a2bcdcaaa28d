"""Pinhole cameras: intrinsics, the optical frame's pose, depth -> points, segmentation masks.

Conventions (ROS): pixel centres at integer coordinates; the optical frame looks along +z with
x right and y down (REP 103 `*_optical_frame`); depth is metres along the optical axis, 0 = no
return. numpy only: a sim, a driver or a ROS node feeds these the same arrays.
"""

from __future__ import annotations

import numpy as np

# MuJoCo's segmentation rendering labels each pixel (object id, object type); this is the type
# of a geom (`mujoco.mjtObj.mjOBJ_GEOM`), kept here so that perception does not import mujoco.
SEGMENTATION_GEOM_TYPE = 5


def camera_intrinsics(fovy_deg: float, width: int, height: int) -> tuple[float, float, float, float]:
    """Pinhole fx, fy, cx, cy in pixels of a camera with vertical field of view `fovy_deg`
    (degrees, as MuJoCo's `cam_fovy`) and square pixels, at `width` x `height` pixels."""
    f = 0.5 * height / np.tan(0.5 * np.deg2rad(fovy_deg))
    return float(f), float(f), (width - 1) / 2.0, (height - 1) / 2.0


def points_from_depth(
    depth: np.ndarray, mask: np.ndarray, fx: float, fy: float, cx: float, cy: float, camera_pose: np.ndarray
) -> np.ndarray:
    """World points (N, 3) in metres from a depth image and an object mask.

    depth: (H, W) metres along the optical axis (z-depth, as aligned depth images); 0 (or
      non-finite) means no return and the pixel is dropped.
    mask: (H, W) bool, True on the object (e.g. the sim's segmentation).
    fx, fy, cx, cy: pinhole intrinsics in pixels, pixel centres at integer coordinates (ROS).
    camera_pose: (4, 4) transform from the camera optical frame (x right, y down, z forward,
      REP 103 `*_optical_frame`) to the world frame. For a MuJoCo camera (looks along -z, y up)
      use `optical_pose_from_mujoco`.
    """
    depth = np.asarray(depth, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    pose = np.asarray(camera_pose, dtype=float)
    if depth.ndim != 2 or mask.shape != depth.shape:
        raise ValueError(f"depth must be (H, W) and mask the same shape; got {depth.shape} and {mask.shape}")
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise ValueError(f"camera_pose must be a finite (4, 4) transform, got shape {pose.shape}")
    if not (fx > 0 and fy > 0):
        raise ValueError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
    valid = mask & np.isfinite(depth) & (depth > 0)
    v, u = np.nonzero(valid)
    z = depth[v, u]
    optical = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1)
    return optical @ pose[:3, :3].T + pose[:3, 3]


def optical_pose_from_mujoco(cam_xpos: np.ndarray, cam_xmat: np.ndarray) -> np.ndarray:
    """(4, 4) optical-frame-to-world transform from MuJoCo's camera position (3,) and
    orientation (9,) or (3, 3) (`data.cam_xpos`, `data.cam_xmat`): MuJoCo cameras look along
    their -z with y up, the optical frame along +z with y down (a half-turn about x)."""
    pose = np.eye(4)
    pose[:3, :3] = np.asarray(cam_xmat, dtype=float).reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = np.asarray(cam_xpos, dtype=float)
    return pose


def segmentation_mask(segmentation: np.ndarray, geom_ids) -> np.ndarray:
    """(H, W) bool: pixels whose nearest surface is one of `geom_ids`, from MuJoCo's
    segmentation image (H, W, 2) of (object id, object type; -1 for background)."""
    seg = np.asarray(segmentation)
    return (seg[..., 1] == SEGMENTATION_GEOM_TYPE) & np.isin(seg[..., 0], np.asarray(geom_ids))
