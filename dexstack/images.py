"""Image preprocessing shared by the policy node's observation assembly and training code.

The one rule by which any camera resolution reaches a policy (rgb, depth and segmentation alike,
every family): crop the largest centred window with the model's aspect ratio, then resize it to
the model's height x width. That is image_proc's CropDecimateNode (a centred ROI) followed by its
ResizeNode (cv::resize to a fixed size) (ros-perception/image_pipeline image_proc/src/
crop_decimate.cpp and resize.cpp), with the interpolation chosen by what the pixels mean: colour
is area-averaged (`INTER_AREA`, no aliasing when shrinking 640x480 to 96x96); depth and segment ids
take the nearest pixel, because averaging a depth edge invents points floating between object and
background and averaging ids invents ids. An image already at the model's size is returned
unchanged (bit for bit), so policies trained on the sim's cameras see exactly what they saw.
Images smaller than the model's input are refused: upscaling would invent detail.

numpy + OpenCV only (no ROS, no torch, no simulator).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dexstack.manifest import IMAGE_PREPROCESS
from dexstack.runtime import ObservationError

# How each image kind is resampled after the centre crop (see the module docstring).
RESAMPLE: dict[str, str] = {"rgb": "area", "depth": "nearest", "segmentation": "nearest"}


def center_crop_window(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """(y0, x0, crop_height, crop_width): the largest window centred in a height x width image
    whose aspect ratio is out_height : out_width (the crop spends the surplus side evenly)."""
    if width * out_height > height * out_width:  # wider than the output: crop columns
        crop_w = int(round(height * out_width / out_height))
        return 0, (width - crop_w) // 2, height, crop_w
    crop_h = int(round(width * out_height / out_width))
    return (height - crop_h) // 2, 0, crop_h, width


def center_crop_resize(image: np.ndarray, height: int, width: int, resample: str = "area") -> np.ndarray:
    """(H, W) or (H, W, C) -> (height, width[, C]) by the rule of this module. `resample`: "area"
    (colour: cv2.INTER_AREA) or "nearest" (depth, ids: the source pixel under each output pixel's
    centre, for any dtype). Raises ObservationError for an image that is not 2-D or 3-D, is
    empty, or is smaller than the output."""
    if resample not in ("area", "nearest"):
        raise ValueError(f"resample must be 'area' or 'nearest', got {resample!r}")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ObservationError(f"image must be (H, W) or (H, W, C) and not empty, got shape {image.shape}")
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return np.ascontiguousarray(image)
    if height > h or width > w:
        raise ObservationError(f"image {w}x{h} is smaller than the policy's {width}x{height} (no upscaling)")
    y0, x0, ch, cw = center_crop_window(h, w, height, width)
    crop = np.ascontiguousarray(image[y0 : y0 + ch, x0 : x0 + cw])
    if crop.shape[:2] == (height, width):
        return crop
    if resample == "nearest":
        # Pixel centres map to pixel centres (OpenCV's INTER_NEAREST_EXACT, not INTER_NEAREST, which
        # shifts by half a pixel); plain indexing also serves int32 ids, which cv2.resize does not.
        rows = np.minimum(((np.arange(height) + 0.5) * ch / height).astype(np.int64), ch - 1)
        cols = np.minimum(((np.arange(width) + 0.5) * cw / width).astype(np.int64), cw - 1)
        return np.ascontiguousarray(crop[rows[:, None], cols[None, :]])
    import cv2  # a robot requirement (requirements-robot.txt); imported where it is needed

    squeeze = crop.ndim == 3 and crop.shape[2] == 1  # cv2 drops a single channel axis
    out = cv2.resize(crop[..., 0] if squeeze else crop, (width, height), interpolation=cv2.INTER_AREA)
    return out[..., None] if squeeze else out


def fit_image(value: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """A converted camera image (rgb (H, W, 3), depth (H, W[, 1]), segmentation (H, W)) brought to
    the manifest input `spec`'s shape by its `preprocess` (default: the rule of this module).
    Raises ObservationError saying why it cannot be."""
    height, width = int(spec["shape"][0]), int(spec["shape"][1])
    preprocess = spec.get("preprocess", IMAGE_PREPROCESS[0])  # manifest `preprocess`: the rule, or "none"
    value = np.asarray(value)
    if preprocess == "none":
        if value.shape[:2] != (height, width):
            raise ObservationError(
                f"image is {value.shape[1]}x{value.shape[0]} but this policy takes only {width}x{height} "
                "(its manifest says preprocess 'none')"
            )
        return value
    return center_crop_resize(value, height, width, RESAMPLE[spec["kind"]])
