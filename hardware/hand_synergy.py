"""Finger synergy of the ADROIT hand: one closing fraction per finger <-> the 24 hand joint targets.

Each of the five fingers (thumb, index, middle, ring, little: the profile's tactile pad order)
closes along its own straight line in joint space from open (0) to `HAND_CLOSED` (1). The sim's
scripted closing and G-PAYN's finger actions (`policies/gpayn/action.py`) both command the hand
this way. Joint values in radians, `ADROIT.joint_names[6:]` order.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from dexstack.hardware.profiles import ADROIT

HAND_JOINTS: tuple[str, ...] = ADROIT.joint_names[6:]
FINGERS: tuple[str, ...] = ADROIT.tactile_pads

# The hand's step command (palm translation, palm rotation, one closing change per finger), each
# element in [-1, 1] times its step size per command period. G-PAYN's actions
# (`policies/gpayn/action.py`) and the grasp task's scripted expert (`sim/experts/grasp.py`) both
# speak it; it lives with the robot so the sim needs nothing from policies/.
ARM_DIM, FINGER_DIM = 6, len(FINGERS)
ACTION_DIM = ARM_DIM + FINGER_DIM
MAX_TRANSLATION = 0.01  # m per step
MAX_ROTATION = 0.05  # rad per step
MAX_FINGER_DELTA = 0.125  # closing fraction per step: open to closed in 0.8 s

# The scripted closing: hand joint targets (rad) of the fully closed hand, HAND_JOINTS order.
# Fingers flex at all three joints (near their 1.571 rad limits, so the blocked servos squeeze);
# the thumb swings under the palm (THJ3), turns its pad towards the fingers (THJ2 at its limit,
# THJ1 at its limit) and curls its tip (THJ0), so that from a top grasp in the palm frame
# (`hardware.models.PALM_SITE`) its distal pad, not its proximal phalanx, meets the object across from
# the fingers. Found by a random search over the thumb's five targets scored on thumb-pad
# contact and a 10 cm lift of the potted meat can, sugar box, mustard bottle and bleach cleanser.
# The wrist and the spread joints stay at zero.
_CLOSED = {
    "FFJ2": 1.4,
    "FFJ1": 1.5,
    "FFJ0": 1.3,
    "MFJ2": 1.4,
    "MFJ1": 1.5,
    "MFJ0": 1.3,
    "RFJ2": 1.4,
    "RFJ1": 1.5,
    "RFJ0": 1.3,
    "LFJ4": 0.2,
    "LFJ2": 1.4,
    "LFJ1": 1.5,
    "LFJ0": 1.3,
    "THJ4": 0.09,
    "THJ3": 1.15,
    "THJ2": 0.26,
    "THJ1": -0.52,
    "THJ0": -1.57,
}
HAND_CLOSED = np.array([_CLOSED.get(j, 0.0) for j in HAND_JOINTS])
HAND_OPEN = np.zeros(len(HAND_JOINTS))


# Finger synergy: each of the five fingers (FINGERS order) closes along its own line from
# open to HAND_CLOSED; `FINGER_OF_JOINT[j]` is the finger of hand joint j (-1: the two wrist
# joints, which stay at their open value).
_FINGER_PREFIX = {"TH": 0, "FF": 1, "MF": 2, "RF": 3, "LF": 4}
FINGER_OF_JOINT = np.array([_FINGER_PREFIX.get(j[:2], -1) for j in HAND_JOINTS])


def finger_targets(fractions: ArrayLike) -> np.ndarray:
    """Hand joint targets (24,) in radians from one closing fraction per finger (5,), thumb,
    index, middle, ring, little: 0 = open, 1 = `HAND_CLOSED`; values are clipped to [0, 1]."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (len(FINGERS),) or not np.isfinite(f).all():
        raise ValueError(f"finger fractions must be {len(FINGERS)} finite numbers, got {fractions}")
    f = np.clip(f, 0.0, 1.0)
    per_joint = np.where(FINGER_OF_JOINT >= 0, f[np.maximum(FINGER_OF_JOINT, 0)], 0.0)
    return HAND_OPEN + per_joint * (HAND_CLOSED - HAND_OPEN)


def finger_fractions(hand_q: np.ndarray) -> np.ndarray:
    """Closing fraction (5,) of each finger (thumb ... little) that best explains the hand joints
    (24,): the least-squares inverse of `finger_targets` along each finger's open ->
    closed line, clipped to [0, 1]."""
    q = np.asarray(hand_q, dtype=float)
    if q.shape != (len(HAND_JOINTS),) or not np.isfinite(q).all():
        raise ValueError(f"hand joints must be {len(HAND_JOINTS)} finite numbers, got shape {q.shape}")
    span = HAND_CLOSED - HAND_OPEN
    fractions = np.zeros(len(FINGERS))
    for finger in range(len(FINGERS)):
        joints = FINGER_OF_JOINT == finger
        fractions[finger] = (q[joints] - HAND_OPEN[joints]) @ span[joints] / (span[joints] @ span[joints])
    return np.clip(fractions, 0.0, 1.0)
