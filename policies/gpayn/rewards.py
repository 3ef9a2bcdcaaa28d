"""G-PAYN reward terms as pure functions of a small per-step state (numpy-free, testable).

The episode starts with the open hand at the pre-grasp pose (5 cm back from the grasp pose)
and succeeds when the object is lifted 10 cm. The terms follow the G-PAYN paper:

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
        for name in ("object_height", "prev_object_height", "rest_height", "palm_distance",
                     "prev_palm_distance", "object_tilt"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.palm_distance < 0 or self.prev_palm_distance < 0:
            raise ValueError("palm distances must be >= 0")


def contact_term(state: RewardState) -> float:
    """CONTACT_WEIGHT x (fingertips in contact now - fingertips in contact before)."""
    return CONTACT_WEIGHT * (state.contacts - state.prev_contacts)


def lift_term(state: RewardState) -> float:
    """LIFT_WEIGHT x height gained this step, while >= MIN_LIFT_CONTACTS fingertips touch."""
    if state.contacts < MIN_LIFT_CONTACTS:
        return 0.0
    return LIFT_WEIGHT * (state.object_height - state.prev_object_height)


def centring_term(state: RewardState) -> float:
    """CENTRING_WEIGHT x how much closer the palm came to the grasp pose, before the first contact."""
    if state.touched_before or state.contacts > 0:
        return 0.0
    return CENTRING_WEIGHT * (state.prev_palm_distance - state.palm_distance)


def is_success(state: RewardState) -> bool:
    """The object is SUCCESS_LIFT above its resting height."""
    return state.object_height - state.rest_height >= SUCCESS_LIFT


def is_knocked_over(state: RewardState) -> bool:
    """Tilted beyond TILT_LIMIT, or fell OFF_TABLE_DROP below its resting height."""
    return state.object_tilt > TILT_LIMIT or state.object_height < state.rest_height - OFF_TABLE_DROP


def compute_reward(state: RewardState) -> tuple[dict[str, float], float, bool]:
    """Reward terms by name (`TERMS`), their sum, and whether the episode ends in a terminal
    state (success, knocked over or IK failure; a timeout is a truncation the env reports)."""
    success = is_success(state) and not is_knocked_over(state)
    failed = is_knocked_over(state) or state.ik_failed or (state.timed_out and not success)
    terms = {
        "contacts": contact_term(state),
        "lift": lift_term(state),
        "centring": centring_term(state),
        "success": SUCCESS_REWARD if success else 0.0,
        "failure": FAILURE_REWARD if failed else 0.0,
    }
    terminal = success or is_knocked_over(state) or state.ik_failed
    return terms, float(sum(terms.values())), terminal
