"""Scripted grasp expert for the grasp task (`sim/tasks/grasp.py`), in the G-PAYN env's action space.

It starts where every episode starts (open hand at the pre-grasp pose) and, open loop on a step
counter:
1. approach: moves the palm `PREGRASP_DISTANCE` (5 cm) along the grasp pose's approach axis in
   `MAX_TRANSLATION` steps, onto the grasp pose;
2. close: closes all five fingers together (`MAX_FINGER_DELTA` per step) and holds 2 steps;
3. lift: raises the palm `DEMO_LIFT` (15 cm) straight up; the task ends the episode at the
   10 cm success lift (or at its time limit, a knocked-over object or an IK failure).
Its actions are the hand's step commands (`hardware/hand_synergy.py`), G-PAYN's action space, so every transition it produces is
valid training data (`policies/gpayn/demos.py` pre-fills SAC's replay buffer with them).

Open loop rather than servoing on the observed palm pose: the env integrates the commanded
palm pose, so commanding the planned increments reaches the plan exactly, while feeding back
the lagging measured pose would overshoot the commanded target.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from dexstack.hardware.hand_synergy import ACTION_DIM, ARM_DIM, MAX_FINGER_DELTA, MAX_TRANSLATION
from dexstack.perception.grasp_pose import PREGRASP_DISTANCE

DEMO_LIFT = 0.15  # m
HOLD_STEPS = 2  # steps with the hand closed before lifting


class ScriptedGraspDemo:
    """Approach, close, lift (see the module docstring). `reset(info)` with the env's reset
    info, then `act()` once per step."""

    def __init__(self) -> None:
        self._plan: list[np.ndarray] = []
        self._k = 0

    def reset(self, info: dict[str, Any]) -> None:
        """Plan the episode from the env's reset info (its `grasp_pose`)."""
        if "grasp_pose" not in info:
            raise ValueError("reset info has no 'grasp_pose'; pass the info GraspEnv.reset returned")
        quat = np.asarray(info["grasp_pose"][1], dtype=float)
        approach = Rotation.from_quat(quat, scalar_first=True).as_matrix()[:, 2]
        plan = []
        plan += _translation_steps(approach * PREGRASP_DISTANCE)
        close = int(np.ceil(1.0 / MAX_FINGER_DELTA))
        plan += [_finger_action(1.0)] * close + [np.zeros(ACTION_DIM)] * HOLD_STEPS
        plan += _translation_steps(np.array([0.0, 0.0, DEMO_LIFT]), fingers=1.0)
        self._plan, self._k = plan, 0

    def act(self) -> np.ndarray:
        """The next action (ACTION_DIM,) float32; once the plan is done, the arm holds and the
        fingers keep closing (squeezing at their closed targets)."""
        if self._k < len(self._plan):
            action = self._plan[self._k]
        else:
            action = _finger_action(1.0)  # keep squeezing
        self._k += 1
        return action.astype(np.float32)


def _finger_action(value: float) -> np.ndarray:
    action = np.zeros(ACTION_DIM)
    action[ARM_DIM:] = value
    return action


def _translation_steps(displacement: np.ndarray, fingers: float = 0.0) -> list[np.ndarray]:
    """Actions moving the palm by `displacement` (m, world) in steps of at most MAX_TRANSLATION."""
    n = max(1, int(np.ceil(np.linalg.norm(displacement) / MAX_TRANSLATION - 1e-9)))
    step = displacement / n / MAX_TRANSLATION  # in action units, |.| <= 1
    actions = []
    for _ in range(n):
        action = _finger_action(fingers)
        action[:3] = step
        actions.append(action)
    return actions
