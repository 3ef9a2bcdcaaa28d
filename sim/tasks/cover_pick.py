"""Cover-and-pick: an object is shown at one of three places, then three identical covers come
down over all three places; the robot must pick the object from where it was shown.

Before `COVERED_AT_S` the cameras show the object at its place; from then on three identical
grey covers stand on the three places and every frame is the same whichever place hides the
object, so only memory of the first second tells where to reach. The covers are ghost props
(`staging`): they stand on the table but the gripper and the object pass through them, so the
object lifts only when grasped at its true place. One task, one file (pick_lift's structure):
`reset`, named `_reward_*` terms, `success`. Metres and radians, world (= robot base) frame.
"""

from __future__ import annotations

import mujoco
import numpy as np

from dexstack.sim import objects as objects_lib
from dexstack.sim.scene import SceneNames
from dexstack.sim.tasks.staging import SETTLE_S, StagedTask, gravcomp_for_fall

OBJECTS = ("foam_brick", "tomato_soup_can", "lemon")  # fit under a cover at any yaw
COVER_BODIES = ("cracker_box", "wood_block", "pudding_box")  # one-box objects reshaped into covers
COVER_HALF_SIZE = (0.055, 0.055, 0.065)  # m: 11 x 11 x 13 cm, taller and wider than every object
COVER_RGBA = (0.36, 0.40, 0.46, 1.0)
N_PLACES = 3
PLACE_SPACING_M = 0.16  # along world y, between neighbouring places
ROW_X_RANGE = (0.46, 0.56)  # m, x of the row of places
ROW_Y_RANGE = (-0.03, 0.03)  # m, y of the middle place
JITTER_M = 0.008  # object offset from its place centre; stays inside the cover's footprint
YAW_RANGE = (-np.pi / 2, np.pi / 2)
COVER_DROP_M = 0.60  # covers start this far above the table (out of the scene camera's view)
COVERED_AT_S = 1.0  # episode time (s) at which the covers reach the table
REWARD_WEIGHTS = {"reach": 1.0, "grasp": 1.0, "lift": 2.0}


class CoverPickTask(StagedTask):
    """Pick the object from the place where it was shown before it was covered."""

    name = "cover_pick"
    max_time_s = 14.0
    success_hold_s = 0.5
    cue_end_s = COVERED_AT_S  # from this episode time on, the current frame does not tell the place

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, names: SceneNames) -> None:
        super().__init__(model, data, names, objects=OBJECTS)
        for body in COVER_BODIES:
            self._reshape_box(body, COVER_HALF_SIZE, COVER_RGBA)
        self._cover_gravcomp = gravcomp_for_fall(COVER_DROP_M, COVERED_AT_S + SETTLE_S, -float(model.opt.gravity[2]))
        self.place_index = 0
        self.places = np.zeros((N_PLACES, 2))
        self.forced_place: int | None = None  # tests: same scene, object at another place

    def reset(self, rng: np.random.Generator) -> None:
        """Draw the object, its yaw, the row of places and the object's place; covers start
        above the three places. `forced_place` (if set) overrides only the place draw."""
        if self.forced_place is not None and not 0 <= self.forced_place < N_PLACES:
            raise ValueError(f"forced_place must be in 0..{N_PLACES - 1}, got {self.forced_place}")
        self.object_name = OBJECTS[int(rng.integers(len(OBJECTS)))]
        row_x = rng.uniform(*ROW_X_RANGE)
        row_y = rng.uniform(*ROW_Y_RANGE)
        yaw = rng.uniform(*YAW_RANGE)
        jitter = rng.uniform(-JITTER_M, JITTER_M, size=2)
        self.place_index = int(rng.integers(N_PLACES))
        if self.forced_place is not None:
            self.place_index = int(self.forced_place)
        offsets = (np.arange(N_PLACES) - (N_PLACES - 1) / 2) * PLACE_SPACING_M
        self.places = np.column_stack([np.full(N_PLACES, row_x), row_y + offsets])

        spec = objects_lib.CATALOG[self.object_name]
        xy = self.places[self.place_index] + jitter
        self._stage({self.object_name: (np.array([xy[0], xy[1], spec.grasp_height]), yaw)})
        for body, (x, y) in zip(COVER_BODIES, self.places, strict=True):
            self._set_physics(body, collides="table", gravcomp=self._cover_gravcomp)
            self._set_pose(body, np.array([x, y, COVER_DROP_M + COVER_HALF_SIZE[2]]), 0.0)
        self.rest_height = float(spec.grasp_height)

    @property
    def instruction(self) -> str:
        return (
            f"pick up the {objects_lib.CATALOG[self.object_name].display_name} from where it was before it was covered"
        )

    def cover_heights(self) -> np.ndarray:
        """Height (m) of each cover's bottom above the table, in place order."""
        return np.array([self.data.xpos[self._body[b]][2] - COVER_HALF_SIZE[2] for b in COVER_BODIES])

    # --- reward terms (each in [0, 1]) ---------------------------------------------------------
    # reach / grasp / lift: PickLiftTask's terms on the hidden object.
    def reward_terms(self) -> dict[str, float]:
        return {"reach": self._reward_reach(), "grasp": self._reward_grasp(), "lift": self._reward_lift()}

    def reward(self) -> float:
        return float(sum(REWARD_WEIGHTS[k] * v for k, v in self.reward_terms().items()))
