"""Cue-and-choose: a coloured cue at the start says which of two objects to lift.

Two objects of different colours stand on the table, one on each side. A ball in the colour
of the target hovers above the middle of the table and sinks into it; from `CUE_GONE_AT_S` on
it is out of every camera's view, and the scene looks the same whichever object is the
target, so only memory of the cue tells which one to lift. The ball is a prop that collides
with nothing (`staging`). Lifting the other object is penalised and is not a success.
One task, one file (pick_lift's structure). Metres and radians, world (= robot base) frame.
"""

from __future__ import annotations

import mujoco
import numpy as np

from dexstack.sim import objects as objects_lib
from dexstack.sim.scene import SceneNames
from dexstack.sim.tasks.staging import SETTLE_S, StagedTask, gravcomp_for_fall

OBJECTS = ("tomato_soup_can", "potted_meat_can", "lemon")  # red, blue, yellow: two per episode
CUE_BODY = "tennis_ball"  # recoloured to the target's colour
X_RANGE = (0.45, 0.60)  # m, object x
SIDE_Y_RANGE = (0.10, 0.19)  # m, |y| of each object; one at -y, one at +y keeps the hand clear
YAW_RANGE = (-np.pi / 2, np.pi / 2)
CUE_RADIUS_M = 0.05  # big enough to cover several pixels of a 96 x 96 scene image
CUE_START = (0.55, 0.0, 0.30)  # m, cue ball centre at reset
CUE_GONE_AT_S = 1.2  # episode time (s) at which the ball is fully below the table top
WRONG_LIFT_M = 0.02  # the distractor raised this far counts as lifted
REWARD_WEIGHTS = {"reach": 1.0, "grasp": 1.0, "lift": 2.0, "wrong_lift": -2.0}


class CueChoiceTask(StagedTask):
    """Lift the object whose colour the cue showed; leave the other one."""

    name = "cue_choice"
    max_time_s = 14.0
    success_hold_s = 0.5
    cue_end_s = CUE_GONE_AT_S  # from this episode time on, the current frame does not tell the target

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, names: SceneNames) -> None:
        super().__init__(model, data, names, objects=OBJECTS + (CUE_BODY,))
        self._reshape_sphere(CUE_BODY, CUE_RADIUS_M)
        # The ball is out of view once its top passes below the table top (z = 0); 1 cm more
        # so it is gone by CUE_GONE_AT_S whatever the integrator's rounding.
        self._cue_gravcomp = gravcomp_for_fall(
            CUE_START[2] + CUE_RADIUS_M + 0.01, CUE_GONE_AT_S + SETTLE_S, -float(model.opt.gravity[2])
        )
        self.distractor_name = OBJECTS[1]
        self.forced_target: int | None = None  # tests: same scene, the other object is the target

    def reset(self, rng: np.random.Generator) -> None:
        """Draw the two objects, their poses (one each side) and which is the target; the cue
        ball starts above the table in the target's colour. `forced_target` (0: the object at
        -y, 1: at +y), if set, overrides only the target draw."""
        if self.forced_target not in (None, 0, 1):
            raise ValueError(f"forced_target must be 0 or 1, got {self.forced_target}")
        pair = rng.choice(len(OBJECTS), size=2, replace=False)
        xs = rng.uniform(*X_RANGE, size=2)
        ys = rng.uniform(*SIDE_Y_RANGE, size=2) * np.array([-1.0, 1.0])
        yaws = rng.uniform(*YAW_RANGE, size=2)
        target = int(rng.integers(2))
        if self.forced_target is not None:
            target = int(self.forced_target)
        names = [OBJECTS[int(i)] for i in pair]
        self.object_name, self.distractor_name = names[target], names[1 - target]
        self._stage(
            {n: (np.array([xs[i], ys[i], objects_lib.CATALOG[n].grasp_height]), yaws[i]) for i, n in enumerate(names)}
        )
        cue_colour = tuple(self.original_rgba(self.object_name))
        self._set_physics(CUE_BODY, collides="none", gravcomp=self._cue_gravcomp, rgba=cue_colour)
        self._set_pose(CUE_BODY, np.array(CUE_START), 0.0)
        self.rest_height = float(objects_lib.CATALOG[self.object_name].grasp_height)

    @property
    def instruction(self) -> str:
        return "lift the object that has the colour of the cue"

    def cue_position(self) -> np.ndarray:
        """Centre of the cue ball (m), world frame."""
        return self.data.xpos[self._body[CUE_BODY]].copy()

    def distractor_lift_height(self) -> float:
        """How far (m) the object that is not the target is above its rest height."""
        return self.lift_height_of(self.distractor_name)

    # --- reward terms (each in [0, 1]) ---------------------------------------------------------
    # reach / grasp / lift: PickLiftTask's terms on the target object.
    def _reward_wrong_lift(self) -> float:
        """1 when the distractor is raised off the table (weighted negatively)."""
        return float(self.distractor_lift_height() >= WRONG_LIFT_M)

    def reward_terms(self) -> dict[str, float]:
        return {
            "reach": self._reward_reach(),
            "grasp": self._reward_grasp(),
            "lift": self._reward_lift(),
            "wrong_lift": self._reward_wrong_lift(),
        }

    def reward(self) -> float:
        return float(sum(REWARD_WEIGHTS[k] * v for k, v in self.reward_terms().items()))

    def success(self) -> bool:
        """Target lifted 10 cm and held by both fingers, distractor still on the table."""
        return super().success() and self.distractor_lift_height() < WRONG_LIFT_M
