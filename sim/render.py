"""Offscreen RGB-D rendering: colour and metric depth from ONE render pass.

`mujoco.Renderer` renders the scene twice to get colour and depth; on a software GL (Mesa
llvmpipe) the render pass is the whole cost, so reading both buffers from one pass halves
camera time. Built on MuJoCo's public GL API with the same reversed-Z depth conversion as
`mujoco.Renderer`. Shadows, reflections and the skybox are off (5-30x cost on llvmpipe).
"""

from __future__ import annotations

import os
import threading

import mujoco
import numpy as np


class RgbdRenderer:
    """Renders model cameras at a fixed size: rgb (H, W, 3) uint8, depth (H, W) float32 metres.

    Depth is the distance along the camera's optical axis (z-depth), like an aligned depth
    image; pixels with no surface within the far clipping plane are 0 ("no return"), as the
    ROS depth encoding and RealSense drivers use.
    """

    def __init__(self, model: mujoco.MjModel, width: int, height: int, max_geom: int = 2000) -> None:
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise ValueError(
                f"camera size {width}x{height} exceeds the model's offscreen buffer "
                f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}"
            )
        self.model, self.width, self.height = model, width, height
        # An EGL context can be made current only in the thread that owns it (EGL_BAD_ACCESS
        # elsewhere): render and close on the creating thread, as the sim node's physics thread does.
        self._owner = threading.get_ident()
        from mujoco import gl_context

        try:
            self._gl = gl_context.GLContext(width, height)
            self._gl.make_current()
            self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        except (mujoco.FatalError, AttributeError, RuntimeError) as exc:
            raise RuntimeError(
                f"cannot create an offscreen GL context ({exc}); MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}. "
                "Set MUJOCO_GL=egl before mujoco is first imported, or disable rendering"
            ) from exc
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._con.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=max_geom)
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            self._scene.flags[flag] = False
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)
        self._depth = np.empty((height, width), dtype=np.float32)
        # Reversed-Z depth buffer -> metres (glFrustum with MuJoCo's near/far planes).
        extent = model.stat.extent
        near, far = np.float32(model.vis.map.znear * extent), np.float32(model.vis.map.zfar * extent)
        c = -(far + near) / (far - near)
        d = -(np.float32(2) * far * near) / (far - near)
        self._c, self._d = np.float32(-0.5) * c - np.float32(0.5), np.float32(-0.5) * d
        self._far = float(far)

    def render(self, data: mujoco.MjData, camera_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Colour and depth of model camera `camera_id` for the state in `data` (new arrays)."""
        if self._con is None:
            raise RuntimeError("renderer is closed")
        self._check_thread("render")
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(
            self.model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        mujoco.mjr_render(self._rect, self._scene, self._con)
        mujoco.mjr_readPixels(self._rgb, self._depth, self._rect, self._con)
        depth = (self._d / (self._depth.astype(np.float64) + self._c)).astype(np.float32)
        depth[depth >= 0.999 * self._far] = 0.0
        # OpenGL's first row is the bottom of the image.
        return np.flipud(self._rgb).copy(), np.flipud(depth).copy()

    def close(self) -> None:
        if self._con is not None:
            self._check_thread("close")
            self._gl.make_current()
            self._con.free()
            self._con = None
            self._gl.free()
            self._gl = None

    def _check_thread(self, what: str) -> None:
        if threading.get_ident() != self._owner:
            raise RuntimeError(
                f"RgbdRenderer: {what} called from thread {threading.current_thread().name!r}; its GL context "
                "belongs to the thread that created it"
            )
