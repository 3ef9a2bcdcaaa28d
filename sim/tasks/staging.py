"""Staging for tasks with props: place, park, recolour, reshape and "ghost" catalogue bodies.

The tabletop scene holds exactly one body per catalogue object and no task-specific geometry
(SimCore builds one scene for every task), so tasks that need props (covers, cue markers)
make them at run time from catalogue bodies that are not in play: a box object can be
reshaped into a cover, a sphere recoloured into a cue. All changes are to this SimCore's own
model, made in the task's `__init__` or `reset`.

Time-dependent props (a cover that comes down, a cue that disappears) are driven by physics
alone, because SimCore has no per-step task hook: a prop released at reset with part of its
weight compensated (`body_gravcomp`) falls at a chosen, reproducible rate.

A "ghost" prop collides only with the table (collision bit `GHOST_BIT`, which no other geom
carries): the robot and the objects pass through it, so a cover can hide an object that the
gripper still reaches. Positions in metres, world (= robot base) frame; yaw in radians about z.
"""

from __future__ import annotations

import mujoco
import numpy as np

from dexstack.sim import objects as objects_lib
from dexstack.sim.scene import PARK_POSITION, SceneNames
from dexstack.sim.tasks.pick_lift import PickLiftTask

GHOST_BIT = 2  # collision bit that only the table answers to (every scene geom uses bit 1)
SETTLE_S = 0.1  # SimCore steps physics this long at reset before the clock starts at t = 0


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion wxyz of a rotation by `yaw` radians about world z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def gravcomp_for_fall(drop_m: float, duration_s: float, gravity: float = 9.81) -> float:
    """Gravity compensation (0..1) that makes a body released at rest fall `drop_m` metres in
    `duration_s` seconds (uniform acceleration, no contacts on the way)."""
    if drop_m <= 0.0 or duration_s <= 0.0:
        raise ValueError(f"drop ({drop_m} m) and duration ({duration_s} s) must be positive")
    g_eff = 2.0 * drop_m / duration_s**2
    if g_eff >= gravity:
        raise ValueError(f"falling {drop_m} m in {duration_s} s needs more than free fall")
    return 1.0 - g_eff / gravity


class StagedTask(PickLiftTask):
    """PickLiftTask (target object, TCP, finger contacts, reach/grasp/lift terms) plus helpers
    to stage several bodies at once. `object_name` is the body the robot must lift."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, names: SceneNames, objects: tuple[str, ...]) -> None:
        super().__init__(model, data, names, objects=objects)
        self._table = model.geom(names.table_geom).id
        # The table also stops ghost props; every other pairing is unchanged (they use bit 1).
        model.geom_conaffinity[self._table] |= GHOST_BIT

    # --- body state -----------------------------------------------------------------------
    def _set_pose(self, name: str, position: np.ndarray, yaw: float) -> None:
        """Body origin at `position` (m), turned `yaw` (rad) about z, at rest."""
        qa, da = self._qpos_adr[name], self._dof_adr[name]
        self.data.qpos[qa : qa + 3] = position
        self.data.qpos[qa + 3 : qa + 7] = yaw_quat(yaw)
        self.data.qvel[da : da + 6] = 0.0

    def _set_physics(
        self,
        name: str,
        *,
        visible: bool = True,
        collides: str = "all",
        gravcomp: float = 0.0,
        rgba: tuple[float, float, float, float] | None = None,
    ) -> None:
        """collides: "all" (its scene defaults), "table" (a ghost prop) or "none"."""
        body, geoms = self._body[name], self._geoms[name]
        self.model.body_gravcomp[body] = gravcomp
        if collides == "all":
            contype, conaffinity = self._contype[geoms], self._conaffinity[geoms]
        elif collides == "table":
            contype, conaffinity = GHOST_BIT, 0
        elif collides == "none":
            contype, conaffinity = 0, 0
        else:
            raise ValueError(f"collides must be 'all', 'table' or 'none', got {collides!r}")
        self.model.geom_contype[geoms] = contype
        self.model.geom_conaffinity[geoms] = conaffinity
        colour = self._rgba[geoms] if rgba is None else np.tile(np.asarray(rgba, dtype=np.float64), (len(geoms), 1))
        self.model.geom_rgba[geoms] = colour
        if not visible:
            self.model.geom_rgba[geoms, 3] = 0.0

    def _stage(self, placements: dict[str, tuple[np.ndarray, float]]) -> None:
        """Put each named object on stage at (grasp-point position m, yaw rad) with its normal
        physics; park every other body off-stage (invisible, no contacts, weightless)."""
        for k, name in enumerate(self._body):
            if name in placements:
                position, yaw = placements[name]
                self._set_physics(name)
                self._set_pose(name, np.asarray(position, dtype=np.float64), yaw)
            else:
                self._set_physics(name, visible=False, collides="none", gravcomp=1.0)
                self._set_pose(name, PARK_POSITION + np.array([0.0, 0.3 * k, 0.0]), 0.0)

    def original_rgba(self, name: str) -> np.ndarray:
        """The object's catalogue colour (rgba 0..1) as built into the scene."""
        return self._rgba[self._geoms[name][0]].copy()

    # --- props made from catalogue bodies ---------------------------------------------------
    def _reshape_box(
        self, name: str, half_size: tuple[float, float, float], rgba: tuple[float, float, float, float]
    ) -> None:
        """Turn a one-box catalogue object into a box of `half_size` (m) centred on its body
        origin, coloured `rgba`. Collision size, bounds, centre of mass and inertia follow."""
        geoms = self._geoms[name]
        if len(geoms) != 1 or self.model.geom_type[geoms[0]] != mujoco.mjtGeom.mjGEOM_BOX:
            raise ValueError(f"{name} is not a one-box object; cannot reshape it into a box prop")
        g, body = int(geoms[0]), self._body[name]
        half = np.asarray(half_size, dtype=np.float64)
        self.model.geom_size[g] = half
        self.model.geom_pos[g] = 0.0
        self.model.geom_rbound[g] = float(np.linalg.norm(half))
        self.model.geom_aabb[g] = np.concatenate([np.zeros(3), half])
        mass = float(self.model.body_mass[body])
        self.model.body_ipos[body] = 0.0
        self.model.body_inertia[body] = (
            mass
            / 3.0
            * np.array([half[1] ** 2 + half[2] ** 2, half[0] ** 2 + half[2] ** 2, half[0] ** 2 + half[1] ** 2])
        )
        self._rgba[g] = rgba

    def _reshape_sphere(self, name: str, radius: float) -> None:
        """Turn a one-sphere catalogue object into a sphere of `radius` (m) centred on its body origin."""
        geoms = self._geoms[name]
        if len(geoms) != 1 or self.model.geom_type[geoms[0]] != mujoco.mjtGeom.mjGEOM_SPHERE:
            raise ValueError(f"{name} is not a one-sphere object; cannot reshape it into a sphere prop")
        g, body = int(geoms[0]), self._body[name]
        self.model.geom_size[g, 0] = radius
        self.model.geom_pos[g] = 0.0
        self.model.geom_rbound[g] = radius
        self.model.geom_aabb[g] = [0.0, 0.0, 0.0, radius, radius, radius]
        self.model.body_ipos[body] = 0.0
        self.model.body_inertia[body] = 0.4 * float(self.model.body_mass[body]) * radius**2

    def lift_height_of(self, name: str) -> float:
        """How far (m) object `name`'s grasp point is above its catalogue rest height."""
        qa = self._qpos_adr[name]
        return float(self.data.qpos[qa + 2] - objects_lib.CATALOG[name].grasp_height)
