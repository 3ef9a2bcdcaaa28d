"""Scripted grasp demonstrations pre-filling G-PAYN's replay buffer.

G-PAYN pre-fills SAC's replay buffer with demonstrations so the first updates already see
grasps that succeed: episodes of the grasp task's scripted expert (`sim/experts/grasp.py`),
every transition stored, failures included (SAC learns from failed grasps too).
"""

from __future__ import annotations

from typing import Any

from dexstack.policies.gpayn.env import GraspEnv
from dexstack.sim.experts.grasp import ScriptedGraspDemo


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
            transitions.append(
                {
                    "obs": obs,
                    "action": action,
                    "reward": float(reward),
                    "next_obs": next_obs,
                    "terminated": bool(terminated),
                    "truncated": bool(truncated),
                    "episode": episode,
                    "success": bool(step_info["success"]),
                    "reward_terms": step_info["reward_terms"],
                }
            )
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
    return {
        "episodes": len(outcomes),
        "transitions": len(transitions),
        "successes": successes,
        "success_rate": successes / len(outcomes),
    }
