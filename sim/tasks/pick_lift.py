"""Pick-and-lift: pick up the object on the table and lift it at least 10 cm.

One task, one file (MuJoCo Playground style): `reset` places one graspable object at a random
reachable position and yaw; the reward is a sum of named terms that can be tested one by one;
`success` is the episode's goal. Positions in metres in the world (= robot base) frame.
"""

from __future__ import annotations

import mujoco
import numpy as np

from dexstack.sim import objects as objects_lib
from dexstack.sim.scene import PARK_POSITION, SceneNames

# Where objects appear: a region in front of the robot that a top-down grasp reaches.
X_RANGE = (0.42, 0.62)  # m
Y_RANGE = (-0.18, 0.18)  # m
YAW_RANGE = (-np.pi / 2, np.pi / 2)  # rad, about world z
LIFT_SUCCESS_M = 0.10  # lifted this far above the rest height (and held) = success
REWARD_WEIGHTS = {"reach": 1.0, "grasp": 1.0, "lift": 2.0}


class PickLiftTask:
    """The pick-and-lift task bound to one scene's model and data."""

    name = "pick_lift"
    perception = False  # no planning view: the sim publishes no object masks for it
    max_time_s = 12.0  # episode time limit, seconds of sim time
    success_hold_s = 0.5  # success must last this long to end an episode
    # Evaluation (`dexstack eval`, sim/evaluate.py): the Panda tasks take no `--option`, so their
    # episodes form one group; the first seed is far from the demonstration seeds (0, 1, ...).
    options: dict[str, str] = {}
    default_seed = 1000
    # "module:callable" giving the scripted expert's in-process env and controller.
    expert = "dexstack.sim.evaluate:panda_expert"

    @classmethod
    def episode_groups(cls, options: dict[str, str]) -> list[tuple[str | None, dict[str, str]]]:
        """(group name, the group's options) per group of episodes: one unnamed group."""
        return [(None, {})]

    @staticmethod
    def episode_metrics(success: bool, sim_s: float) -> dict[str, float | None]:
        """Per-episode metrics at an episode's end (in-process env and sim node alike): none
        beyond the success and the episode's sim time every task reports."""
        return {}

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        names: SceneNames,
        objects: tuple[str, ...] = objects_lib.GRASPABLE,
    ) -> None:
        self.model, self.data, self.names = model, data, names
        self.candidates = tuple(objects)
        self._body = {n.rstrip("/"): model.body(n).id for n in names.objects}
        missing = [o for o in self.candidates if o not in self._body]
        if missing:
            raise ValueError(f"pick_lift objects {missing} are not in the scene")
        self._qpos_adr = {o: int(model.jnt_qposadr[model.body_jntadr[b]]) for o, b in self._body.items()}
        self._dof_adr = {o: int(model.jnt_dofadr[model.body_jntadr[b]]) for o, b in self._body.items()}
        self._geoms = {o: np.flatnonzero(model.geom_bodyid == b) for o, b in self._body.items()}
        self._rgba = model.geom_rgba.copy()
        self._contype = model.geom_contype.copy()
        self._conaffinity = model.geom_conaffinity.copy()
        self._tcp = model.site(names.tcp_site).id
        finger_bodies = [model.joint(j).bodyid[0] for j in names.finger_joints]
        self._finger_geoms = [set(np.flatnonzero(model.geom_bodyid == b).tolist()) for b in finger_bodies]
        self.object_name = self.candidates[0]
        self.rest_height = 0.0

    # --- episode setup --------------------------------------------------------------------
    def reset(self, rng: np.random.Generator) -> None:
        """Choose the object and its pose; park every other object off-stage (no contacts,
        invisible, floating on gravity compensation). Caller runs mj_forward afterwards."""
        self.object_name = self.candidates[int(rng.integers(len(self.candidates)))]
        x = rng.uniform(*X_RANGE)
        y = rng.uniform(*Y_RANGE)
        yaw = rng.uniform(*YAW_RANGE)
        for k, name in enumerate(self._body):
            active = name == self.object_name
            body, geoms = self._body[name], self._geoms[name]
            self.model.body_gravcomp[body] = 0.0 if active else 1.0
            self.model.geom_contype[geoms] = self._contype[geoms] if active else 0
            self.model.geom_conaffinity[geoms] = self._conaffinity[geoms] if active else 0
            self.model.geom_rgba[geoms, 3] = self._rgba[geoms, 3] if active else 0.0
            qa, da = self._qpos_adr[name], self._dof_adr[name]
            if active:
                spec = objects_lib.CATALOG[name]
                pos = np.array([x, y, spec.grasp_height])
                quat = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
            else:
                pos, quat = PARK_POSITION + np.array([0.0, 0.3 * k, 0.0]), np.array([1.0, 0.0, 0.0, 0.0])
            self.data.qpos[qa : qa + 3] = pos
            self.data.qpos[qa + 3 : qa + 7] = quat
            self.data.qvel[da : da + 6] = 0.0
        self.rest_height = float(objects_lib.CATALOG[self.object_name].grasp_height)

    @property
    def instruction(self) -> str:
        return f"pick up the {objects_lib.CATALOG[self.object_name].display_name} and lift it"

    # --- state ----------------------------------------------------------------------------
    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Object grasp-frame position (3,) m and quaternion wxyz (4,), world frame."""
        qa = self._qpos_adr[self.object_name]
        return self.data.qpos[qa : qa + 3].copy(), self.data.qpos[qa + 3 : qa + 7].copy()

    def tcp_position(self) -> np.ndarray:
        """Tool centre point (middle of the finger pads), world frame, metres."""
        return self.data.site_xpos[self._tcp].copy()

    def finger_contacts(self) -> tuple[bool, bool]:
        """Whether each finger touches the active object."""
        obj = set(self._geoms[self.object_name].tolist())
        touching = [False, False]
        n = self.data.ncon
        g1, g2 = self.data.contact.geom1[:n], self.data.contact.geom2[:n]
        for a, b in zip(g1.tolist(), g2.tolist(), strict=True):
            other = b if a in obj else a if b in obj else None
            if other is None:
                continue
            for i in (0, 1):
                if other in self._finger_geoms[i]:
                    touching[i] = True
        return touching[0], touching[1]

    def lift_height(self) -> float:
        """How far (m) the object's grasp point is above its rest height."""
        return float(self.object_pose()[0][2] - self.rest_height)

    # --- reward terms (each in [0, 1]) ---------------------------------------------------------
    def _reward_reach(self) -> float:
        """1 when the TCP is at the object's grasp point, falling off over ~10 cm."""
        return float(1.0 - np.tanh(10.0 * np.linalg.norm(self.tcp_position() - self.object_pose()[0])))

    def _reward_grasp(self) -> float:
        """1 when both fingers touch the object."""
        return float(all(self.finger_contacts()))

    def _reward_lift(self) -> float:
        """Fraction of the 10 cm lift achieved while grasped."""
        return float(np.clip(self.lift_height() / LIFT_SUCCESS_M, 0.0, 1.0)) * self._reward_grasp()

    def reward_terms(self) -> dict[str, float]:
        return {"reach": self._reward_reach(), "grasp": self._reward_grasp(), "lift": self._reward_lift()}

    def reward(self) -> float:
        terms = self.reward_terms()
        return float(sum(REWARD_WEIGHTS[k] * v for k, v in terms.items()))

    def success(self) -> bool:
        """Object lifted at least 10 cm above its rest height and held by both fingers."""
        return self.lift_height() >= LIFT_SUCCESS_M and all(self.finger_contacts())
