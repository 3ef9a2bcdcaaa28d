"""Large sim datasets without ROS: scripted-expert rollouts in-process, written in the same
dataset format `dexstack dataset build` makes from MCAP recordings (BRIEF §6).

The action label matches the converter's: the joint target commanded for t_k + 1/fps. A chunk
submitted at t_k reaches its first point exactly then (trajectory semantics), so that is
`chunk.positions[0]`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from dexstack import contract
from dexstack.dataset import ACTION, Dataset, DatasetWriter, staged_dataset
from dexstack.sim.env import ManipulationEnv, rollout_expert


def collect_dataset(
    out: str | Path,
    episodes: int,
    seed: int = 0,
    task: str = "pick_lift",
    keep_failures: bool = False,
    progress: Callable[[int, bool], None] | None = None,
) -> Dataset:
    """Roll out the expert for seeds seed..seed+episodes-1 and write every (kept) episode.
    The dataset is written in a temporary directory and appears at `out` only when complete
    (`staged_dataset`); `out` must not exist yet, or be empty."""
    with staged_dataset(out) as stage:
        env = ManipulationEnv(task, cameras=True)
        try:
            _write_rollouts(env, stage, episodes, seed, task, keep_failures, progress)
        finally:
            env.close()
    return Dataset(out)


def _write_rollouts(
    env: ManipulationEnv,
    root: Path,
    episodes: int,
    seed: int,
    task: str,
    keep_failures: bool,
    progress: Callable[[int, bool], None] | None,
) -> None:
    profile, cams = env.profile, env.profile.camera_names
    features = {
        contract.JOINT_POSITIONS: {"shape": [profile.n_joints], "dtype": "float32"},
        ACTION: {"shape": [profile.n_joints], "dtype": "float32"},
    }
    for cam in cams:
        spec = profile.camera(cam)
        features[contract.rgb_key(cam)] = {"shape": [spec.height, spec.width, 3], "dtype": "uint8"}
    with DatasetWriter(root, env.policy_hz, profile.joint_names, features, robot_profile=profile.name) as writer:
        for i in range(episodes):
            ep = rollout_expert(env, seed + i, record=True)
            if ep["success"] or keep_failures:
                obs = ep["observations"]
                frames = {
                    contract.JOINT_POSITIONS: np.array([o[contract.JOINT_POSITIONS] for o in obs], np.float32),
                    ACTION: np.array([a[0] for a in ep["actions"]], np.float32),
                    "timestamp": np.array([o["time"] for o in obs], np.float64),
                }
                for cam in cams:
                    frames[contract.rgb_key(cam)] = np.stack([o[contract.rgb_key(cam)] for o in obs])
                writer.add_episode(
                    frames, task=ep["instruction"], success=bool(ep["success"]), source=f"sim:{task}:seed={seed + i}"
                )
            if progress:
                progress(i + 1, bool(ep["success"]))
