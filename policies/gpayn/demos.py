"""Scripted grasp demonstrations in the env's own action space, and replay-buffer prefill.

G-PAYN pre-fills SAC's replay buffer with demonstrations so the first updates already see
grasps that succeed. The scripted controller starts where every episode starts (open hand at
the pre-grasp pose) and, open loop on a step counter:
1. approach: moves the palm `PREGRASP_DISTANCE` (5 cm) along the grasp pose's approach axis in
   `MAX_TRANSLATION` steps, onto the grasp pose;
2. close: closes all five fingers together (`MAX_FINGER_DELTA` per step) and holds 2 steps;
3. lift: raises the palm `DEMO_LIFT` (15 cm) straight up; the env ends the episode at the
   10 cm success lift (or at its time limit, a knocked-over object or an IK failure).
Its actions are plain env actions, so every transition it produces is valid training data,
failures included (`prefill` stores them all: SAC learns from failed grasps too).

Open loop rather than servoing on the observed palm pose: the env integrates the commanded
palm pose, so commanding the planned increments reaches the plan exactly, while feeding back
the lagging measured pose would overshoot the commanded target.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from .action import ACTION_DIM, ARM_DIM, MAX_FINGER_DELTA, MAX_TRANSLATION
from .env import PREGRASP_DISTANCE, GraspEnv

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


def collect_demos(env: GraspEnv, n_episodes: int, seed: int) -> list[dict[str, Any]]:
    """Run the scripted controller for `n_episodes` episodes (env reset with seeds seed, seed+1, ...).

    Returns every transition in order: dicts with `obs`, `action`, `reward`, `next_obs`,
    `terminated`, `truncated`, `episode` (index), `success` (this step succeeded) and
    `reward_terms`.
    """
    if not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive int, got {n_episodes!r}")
    controller = ScriptedGraspDemo()
    transitions: list[dict[str, Any]] = []
    for episode in range(n_episodes):
        obs, info = env.reset(seed=seed + episode)
        controller.reset(info)
        done = False
        while not done:
            action = controller.act()
            next_obs, reward, terminated, truncated, step_info = env.step(action)
            transitions.append({"obs": obs, "action": action, "reward": float(reward), "next_obs": next_obs,
                                "terminated": bool(terminated), "truncated": bool(truncated), "episode": episode,
                                "success": bool(step_info["success"]), "reward_terms": step_info["reward_terms"]})
            obs, done = next_obs, terminated or truncated
    return transitions


def episode_outcomes(transitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per episode: `steps`, `return`, `success` (ended with the success lift)."""
    outcomes: dict[int, dict[str, Any]] = {}
    for t in transitions:
        o = outcomes.setdefault(t["episode"], {"steps": 0, "return": 0.0, "success": False})
        o["steps"] += 1
        o["return"] += t["reward"]
        o["success"] = o["success"] or t["success"]
    return [outcomes[k] for k in sorted(outcomes)]


def prefill(buffer, env: GraspEnv, n_episodes: int, seed: int) -> dict[str, float]:
    """Store every transition of `n_episodes` scripted episodes in `buffer` (a ReplayBuffer),
    failures included. Returns {"episodes", "transitions", "successes", "success_rate"}."""
    transitions = collect_demos(env, n_episodes, seed)
    for t in transitions:
        buffer.add(t["obs"], t["action"], t["reward"], t["next_obs"], t["terminated"], t["truncated"])
    outcomes = episode_outcomes(transitions)
    successes = sum(o["success"] for o in outcomes)
    return {"episodes": len(outcomes), "transitions": len(transitions), "successes": successes,
            "success_rate": successes / len(outcomes)}
