"""MuJoCo simulation: scene, physics core, tasks, scripted experts and a gymnasium-style env.

Rendering is offscreen; without a display, EGL is the only backend that works, so it is the
default unless the caller chose another one before importing mujoco.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
