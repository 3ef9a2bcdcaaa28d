"""Grasp: pick up one object with the Adroit arm + hand and lift it 10 cm (G-PAYN, Ceola et al. 2023).

One task, one file: `GraspTask.reset` places the object upright at a random spot and yaw near
`hand_scene.OBJECT_XY`, and with the arm out of the way the scene camera renders depth and the
object's mask; `perception.planning` fits a superquadric (table prior at z = 0), checks the fit
and plans the 6-D grasp pose (`approach="auto"`, turned to the equivalent the arm reaches), and
inverse kinematics puts the open hand at the pre-grasp pose, `PREGRASP_DISTANCE` back along the
approach. Without rendering the grasp is planned on the object's true bounding box (oracle).
The policy takes over from there; it has to reach the grasp pose, close the fingers and lift the
object `SUCCESS_LIFT` above its resting height within `MAX_EPISODE_STEPS` control steps of
1 / `CONTROL_HZ` s. Used by the RL env (`policies/gpayn/env.py`) and behind the sim node
(`sim/cores.py`'s `HandCore`), so both end episodes by the same predicates.

Reward terms (`_reward_*`, summed by `compute_reward`), following the G-PAYN paper:

- `contacts`: + `CONTACT_WEIGHT` per fingertip that came into contact since the last step
  (minus the same per fingertip that lost contact): rewards closing the hand on the object.
- `lift`: `LIFT_WEIGHT` x the object's height gain since the last step (metres), only while at
  least `MIN_LIFT_CONTACTS` fingertips touch it, so pushing the object up with the palm or
  knocking it does not pay.
- `centring`: `CENTRING_WEIGHT` x the decrease of the palm-to-grasp-pose distance since the
  last step, only until the first fingertip contact of the episode. We reward the change
  rather than penalise the distance itself: a per-step distance penalty would make ending the
  episode early (the -1 failures) look attractive, and a difference of a potential leaves the
  optimal policy unchanged.
- `success`: +1 once the object is `SUCCESS_LIFT` above its resting height (terminates).
- `failure`: -1 when the object is knocked over (tilted more than `TILT_LIMIT` from upright, or
  off the table), when inverse kinematics cannot follow the commanded palm pose, or when the
  episode's time limit is reached. At most one -1 per step.

The weights make a full successful episode worth about 1 (lift) + 1 (success) + 0.8
(4 fingertips) + 0.25 (centring over 5 cm), so the ±1 terminal terms stay significant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dexstack.perception.grasp_pose import PREGRASP_DISTANCE, pregrasp
from dexstack.perception.planning import fit_object, grasp_from_fit
from dexstack.perception.superquadric import Superquadric
from dexstack.sim import hand_scene
from dexstack.sim.hand_core import TOUCH_THRESHOLD, HandSim

CONTROL_HZ = 10  # control steps per second of sim time; rewards are per step
MAX_EPISODE_STEPS = 50  # 5 s of sim time

CONTACT_WEIGHT = 0.2  # per fingertip gained (or lost)
LIFT_WEIGHT = 10.0  # per metre of height gained: 1.0 for the 10 cm success lift
CENTRING_WEIGHT = 5.0  # per metre the palm comes closer to the grasp pose: 0.25 for the 5 cm approach
MIN_LIFT_CONTACTS = 2  # fingertips that must touch the object for lifting to count
SUCCESS_LIFT = 0.10  # m above the object's resting height
SUCCESS_REWARD = 1.0
FAILURE_REWARD = -1.0
TILT_LIMIT = 0.8  # rad (~46 deg) from upright: knocked over
OFF_TABLE_DROP = 0.05  # m below the resting height: the object fell off the table

TERMS = ("contacts", "lift", "centring", "success", "failure")

GRASP_STANDOFF = 0.0  # m; the palm frame lies on the palm's skin
# Object placement: uniform within this square (m) around OBJECT_XY and this yaw range (rad)
# around OBJECT_YAW; wider yaws need arm rotations beyond ARRy's reach once the arm also has to
# shift sideways (measured: IK holds within +-0.5 rad at the default spot).
PLACEMENT_XY = 0.03
PLACEMENT_YAW = 0.35
MAX_RESET_TRIES = 5
FIT_CAMERA_SIZE = (160, 120)  # (width, height) for the depth + mask the fit uses
# Arm pose while the camera looks at the object: hand pulled back towards the mount, behind
# the object as seen from the camera, so it occludes nothing.
CAMERA_CLEAR_ARM = np.array([0.0, 0.15, -0.3, 0.0, 0.0, 0.0])
SETTLE_STEPS = 50  # physics steps after putting the arm at the pre-grasp pose

# G-PAYN's training objects (YCB) and shapes never used in training.
TRAIN_OBJECTS: tuple[str, ...] = ("sugar_box", "mustard_bottle", "bleach_cleanser", "power_drill", "potted_meat_can")
HELD_OUT_OBJECTS: tuple[str, ...] = ("chips_can", "rubiks_cube", "pear", "tomato_soup_can")
# Objects for choosing training settings: neither trained on nor held out, so the held-out numbers
# stay untouched by tuning.
VALIDATION_OBJECTS: tuple[str, ...] = ("pudding_box", "apple", "wood_block", "tuna_fish_can")
OBJECT_SETS: dict[str, tuple[str, ...]] = {
    "train": TRAIN_OBJECTS,
    "held_out": HELD_OUT_OBJECTS,
    "validation": VALIDATION_OBJECTS,
}
DEFAULT_EVAL_SEED = 2_000_000_000  # first evaluation seed: far from the trainer's training and demo seeds


def resolve_objects(text: str | None, default: tuple[str, ...] = TRAIN_OBJECTS) -> tuple[str, ...]:
    """'train', 'held_out', 'validation' or comma-separated object names -> names (None:
    `default`). ValueError for an empty list or a name that is not in the sim's object catalogue."""
    from dexstack.sim.objects import CATALOG

    if text is None:
        return default
    if not isinstance(text, str):
        raise TypeError(f"objects must be a string ({', '.join(OBJECT_SETS)} or a,b,...), got {type(text).__name__}")
    if text in OBJECT_SETS:
        return OBJECT_SETS[text]
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError(f"no object named in {text!r}; give {', '.join(OBJECT_SETS)} or comma-separated names")
    unknown = [name for name in names if name not in CATALOG]
    if unknown:
        raise ValueError(f"unknown object(s) {unknown}; known: {', '.join(OBJECT_SETS)}, {sorted(CATALOG)}")
    return names


@dataclass(frozen=True)
class RewardState:
    """What the reward looks at after one control step (metres, radians).

    contacts / prev_contacts: fingertips in contact with the object now / after the last step.
    object_height / prev_object_height: object centre height now / after the last step.
    rest_height: the object's centre height at rest, at the start of the episode.
    palm_distance / prev_palm_distance: palm frame to grasp-pose position distance.
    touched_before: a fingertip touched the object at some earlier step of this episode.
    object_tilt: angle between the object's up axis and world z.
    ik_failed: inverse kinematics could not follow the commanded palm pose this step.
    timed_out: this step reached the episode's time limit.
    """

    contacts: int
    prev_contacts: int
    object_height: float
    prev_object_height: float
    rest_height: float
    palm_distance: float
    prev_palm_distance: float
    touched_before: bool = False
    object_tilt: float = 0.0
    ik_failed: bool = False
    timed_out: bool = False

    def __post_init__(self) -> None:
        for name in ("contacts", "prev_contacts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
                raise ValueError(f"{name} must be an int in [0, 5] (fingertips), got {value!r}")
        for name in (
            "object_height",
            "prev_object_height",
            "rest_height",
            "palm_distance",
            "prev_palm_distance",
            "object_tilt",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.palm_distance < 0 or self.prev_palm_distance < 0:
            raise ValueError("palm distances must be >= 0")


def _reward_contacts(state: RewardState) -> float:
    """CONTACT_WEIGHT x (fingertips in contact now - fingertips in contact before)."""
    return CONTACT_WEIGHT * (state.contacts - state.prev_contacts)


def _reward_lift(state: RewardState) -> float:
    """LIFT_WEIGHT x height gained this step, while >= MIN_LIFT_CONTACTS fingertips touch."""
    if state.contacts < MIN_LIFT_CONTACTS:
        return 0.0
    return LIFT_WEIGHT * (state.object_height - state.prev_object_height)


def _reward_centring(state: RewardState) -> float:
    """CENTRING_WEIGHT x how much closer the palm came to the grasp pose, before the first contact."""
    if state.touched_before or state.contacts > 0:
        return 0.0
    return CENTRING_WEIGHT * (state.prev_palm_distance - state.palm_distance)


def _lifted(object_height: float, rest_height: float) -> bool:
    return object_height - rest_height >= SUCCESS_LIFT


def _knocked_over(object_height: float, rest_height: float, object_tilt: float) -> bool:
    return object_tilt > TILT_LIMIT or object_height < rest_height - OFF_TABLE_DROP


def is_success(state: RewardState) -> bool:
    """The object is SUCCESS_LIFT above its resting height."""
    return _lifted(state.object_height, state.rest_height)


def is_knocked_over(state: RewardState) -> bool:
    """Tilted beyond TILT_LIMIT, or fell OFF_TABLE_DROP below its resting height."""
    return _knocked_over(state.object_height, state.rest_height, state.object_tilt)


def compute_reward(state: RewardState) -> tuple[dict[str, float], float, bool]:
    """Reward terms by name (`TERMS`), their sum, and whether the episode ends in a terminal
    state (success, knocked over or IK failure; a timeout is a truncation the env reports)."""
    success = is_success(state) and not is_knocked_over(state)
    failed = is_knocked_over(state) or state.ik_failed or (state.timed_out and not success)
    terms = {
        "contacts": _reward_contacts(state),
        "lift": _reward_lift(state),
        "centring": _reward_centring(state),
        "success": SUCCESS_REWARD if success else 0.0,
        "failure": FAILURE_REWARD if failed else 0.0,
    }
    terminal = success or is_knocked_over(state) or state.ik_failed
    return terms, float(sum(terms.values())), terminal


class GraspTask:
    """The grasp task bound to one hand sim (`HandSim`, its object chosen when it was built)."""

    name = "grasp"
    # Plans from the camera: the sim node publishes object masks, the camera pose and, in
    # lockstep, the planning view (`clear_view`) before the clock starts.
    perception = True
    max_time_s = MAX_EPISODE_STEPS / CONTROL_HZ  # episode time limit, seconds of sim time
    success_hold_s = 0.0  # the lift itself ends the episode (G-PAYN's reward terminates on it)
    # Evaluation (`dexstack eval --option object=...`, sim/evaluate.py): one group of episodes per
    # object; through ROS the option is the sim's `object:=` launch argument (one graph per object).
    options = {
        "object": f"an object of the sim's catalogue, a comma list of them, or a set: "
        f"{', '.join(OBJECT_SETS)} (default train)"
    }
    default_seed = DEFAULT_EVAL_SEED
    # In-process the grasp task's episodes are GraspEnv's (the G-PAYN training env, which the
    # scripted controller sim/experts/grasp.py acts in): "module:callable" giving env and controller.
    expert = "dexstack.policies.gpayn.evaluate:scripted_in_process"

    @classmethod
    def episode_groups(cls, options: dict[str, str]) -> list[tuple[str | None, dict[str, str]]]:
        """(object, {"object": object}) per object the `object` option names."""
        return [(name, {"object": name}) for name in resolve_objects(options.get("object"))]

    @staticmethod
    def episode_metrics(success: bool, sim_s: float) -> dict[str, float | None]:
        """`time_to_lift_s`: sim time from the policy taking over (open hand at the pre-grasp) to
        the lift that ends a successful episode; None without a lift."""
        return {"time_to_lift_s": sim_s if success else None}

    def __init__(self, sim: HandSim) -> None:
        self.sim = sim
        self.object_name = sim.object_name
        self.grasp: tuple[np.ndarray, np.ndarray] | None = None
        self.rest_height = 0.0
        self._prev: dict[str, Any] = {}

    @property
    def instruction(self) -> str:
        return f"grasp the {self.object_name.replace('_', ' ')} and lift it"

    # --- episode --------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator) -> dict[str, Any]:
        """Place the object from `rng`, plan the grasp from the camera, put the open hand at the
        pre-grasp. Returns `grasp_pose`, `pregrasp_pose` ((position, quaternion wxyz), world),
        `fit` (the Superquadric), `ik` (the pre-grasp IKResult), `object`, `object_xy`,
        `object_yaw`, `reset_attempts` and `failed_attempts` (why each earlier placement was
        resampled). RuntimeError when MAX_RESET_TRIES placements all fail."""
        sim = self.sim
        mount = np.asarray(hand_scene.ARM_MOUNT_POS, dtype=float)
        failures: list[str] = []
        for attempt in range(1, MAX_RESET_TRIES + 1):
            xy = np.asarray(hand_scene.OBJECT_XY) + rng.uniform(-PLACEMENT_XY, PLACEMENT_XY, 2)
            yaw = hand_scene.OBJECT_YAW + rng.uniform(-PLACEMENT_YAW, PLACEMENT_YAW)
            sim.reset(object_xy=tuple(xy), object_yaw=float(yaw))
            sim.set_arm_pose(CAMERA_CLEAR_ARM)
            try:
                fit = self.perceive()
                grasp = grasp_from_fit(fit, "auto", standoff=GRASP_STANDOFF, reference=mount)
            except ValueError as exc:  # too few object pixels, a degenerate fit, or no width fits the hand
                failures.append(f"attempt {attempt}: {exc}")
                continue
            pre = pregrasp(grasp, PREGRASP_DISTANCE)
            ik = sim.solve_palm_ik(*pre, arm_q0=sim.start_pose()[:6])
            if ik.success:
                break
            failures.append(f"attempt {attempt}: pre-grasp IK failed: {ik.message}")
        else:
            raise RuntimeError(
                f"{self.object_name}: no reachable grasp after {MAX_RESET_TRIES} placements: " + "; ".join(failures)
            )
        sim.set_arm_pose(ik.arm_q, settle_steps=SETTLE_STEPS)
        self.grasp = (np.asarray(grasp[0], dtype=float), np.asarray(grasp[1], dtype=float))
        self.begin()
        return {
            "grasp_pose": self.grasp,
            "pregrasp_pose": (np.asarray(pre[0], dtype=float), np.asarray(pre[1], dtype=float)),
            "fit": fit,
            "ik": ik,
            "object": self.object_name,
            "object_xy": xy,
            "object_yaw": float(yaw),
            "reset_attempts": attempt,
            "failed_attempts": failures,
        }

    def begin(self) -> None:
        """Start the episode's bookkeeping from the current state (the object at rest)."""
        self.rest_height = float(self.sim.object_center()[2])
        contacts = self.object_contacts()
        self._prev = {
            "height": self.rest_height,
            "contacts": contacts,
            "distance": self.palm_distance(),
            "touched": contacts > 0,
        }

    def perceive(self) -> Superquadric:
        """Superquadric of the object: fitted to the camera's masked depth, or (no rendering) the
        object's true bounding box."""
        sim = self.sim
        if not sim.render_enabled:
            return sim.object_box()
        _, depth = sim.render()
        fit, _ = fit_object(depth, sim.object_mask(), sim.camera_intrinsics(), sim.camera_pose(), support_z=0.0)
        return fit

    def object_mask(self) -> np.ndarray:
        """(H, W) bool: scene camera pixels where the object is the nearest surface."""
        return self.sim.object_mask()

    def clear_view(self) -> tuple[np.ndarray, np.ndarray]:
        """Depth (H, W) m and object mask (H, W) bool of the current scene with the arm at
        CAMERA_CLEAR_ARM, the view `reset` planned from, rendered from a scratch copy of the
        physics state (the simulation itself is not touched)."""
        view = self.sim.scratch_state(CAMERA_CLEAR_ARM)
        return self.sim.render(view)[1], self.sim.object_mask(view)

    # --- state ----------------------------------------------------------------------------
    def object_contacts(self) -> int:
        """Fingertips in contact with the object (a pad on the table is not a grasp)."""
        return int((self.sim.pad_forces(object_only=True) > TOUCH_THRESHOLD).sum())

    def palm_distance(self) -> float:
        """Palm frame to grasp-pose position (m); 0 before a grasp was planned."""
        if self.grasp is None:
            return 0.0
        return float(np.linalg.norm(self.sim.palm_pose()[0] - self.grasp[0]))

    def lift(self) -> float:
        """Height of the object's centre above its resting height (m)."""
        return float(self.sim.object_center()[2]) - self.rest_height

    def knocked_over(self) -> bool:
        return _knocked_over(float(self.sim.object_center()[2]), self.rest_height, self.sim.object_tilt())

    def success(self) -> bool:
        """Lifted SUCCESS_LIFT above the resting height and not knocked over."""
        height = float(self.sim.object_center()[2])
        return _lifted(height, self.rest_height) and not _knocked_over(height, self.rest_height, self.sim.object_tilt())

    def step_reward(self, ik_failed: bool, timed_out: bool) -> tuple[dict[str, float], float, bool, dict[str, Any]]:
        """After one control step: reward terms, their sum, terminal (success, knocked over or
        IK failure), and `contacts` (fingertips on the object) and `lift` (m above rest)."""
        contacts, height, distance = self.object_contacts(), float(self.sim.object_center()[2]), self.palm_distance()
        prev = self._prev
        state = RewardState(
            contacts=contacts,
            prev_contacts=prev["contacts"],
            object_height=height,
            prev_object_height=prev["height"],
            rest_height=self.rest_height,
            palm_distance=distance,
            prev_palm_distance=prev["distance"],
            touched_before=prev["touched"],
            object_tilt=self.sim.object_tilt(),
            ik_failed=ik_failed,
            timed_out=timed_out,
        )
        terms, reward, terminal = compute_reward(state)
        self._prev = {
            "height": height,
            "contacts": contacts,
            "distance": distance,
            "touched": prev["touched"] or contacts > 0,
        }
        return terms, reward, terminal, {"contacts": contacts, "lift": height - self.rest_height}
