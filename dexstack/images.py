"""Image preprocessing shared by the policy node's observation assembly and training code.

numpy + OpenCV only (no ROS, no torch, no simulator).
"""

from __future__ import annotations

import numpy as np

from dexstack.runtime import ObservationError


def center_crop_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3): the centred crop with the output's aspect ratio,
    area-resized. For a camera whose field of view is set vertically (MuJoCo's fovy), this is
    what a render of the same camera at height x width shows. Raises ObservationError on an
    image that is not (H, W, 3) uint8 or is smaller than the output."""
    import cv2  # a robot requirement (requirements-robot.txt); imported where it is needed

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ObservationError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if height > h or width > w:
        raise ObservationError(f"image {w}x{h} is smaller than the policy's {width}x{height}")
    if w * height > h * width:  # wider than the output: crop columns
        crop_w = int(round(h * width / height))
        x0 = (w - crop_w) // 2
        image = image[:, x0 : x0 + crop_w]
    else:
        crop_h = int(round(w * height / width))
        y0 = (h - crop_h) // 2
        image = image[y0 : y0 + crop_h]
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)
