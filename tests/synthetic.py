"""A synthetic dataset for trainer tests: the arm converges to a goal set by where a square is in
the (96x96) images, so the images are the only way to know the goal and learning them lowers the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dexstack import contract
from dexstack.hardware.profiles import PANDA

CAMERAS = ("wrist", "scene")


def square_image(center_uv: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    img = np.full((96, 96, 3), 40, np.uint8)
    u, v = (center_uv * 80 + 8).astype(int)
    img[max(v - 6, 0) : v + 6, max(u - 6, 0) : u + 6] = color
    return img


def write_goal_dataset(root: Path, n_episodes: int, n_frames: int) -> None:
    from dexstack.dataset import DatasetWriter

    rng = np.random.default_rng(0)
    features = {
        contract.JOINT_POSITIONS: {"shape": [8], "dtype": "float32"},
        "action": {"shape": [8], "dtype": "float32"},
    }
    features.update({contract.rgb_key(c): {"shape": [96, 96, 3], "dtype": "uint8"} for c in CAMERAS})
    home = np.asarray(PANDA.home)
    mixing = rng.normal(0.0, 0.4, (8, 2))
    mixing[7] = [0.01, -0.01]  # the gripper (metres) moves little
    with DatasetWriter(root, fps=10.0, joint_names=PANDA.joint_names, features=features) as writer:
        for _ in range(n_episodes):
            uv = rng.uniform(0.0, 1.0, 2)
            goal = home + mixing @ (uv - 0.5)
            q = np.empty((n_frames + 1, 8))
            q[0] = home + rng.normal(0, 0.02, 8)
            for k in range(n_frames):
                q[k + 1] = q[k] + 0.25 * (goal - q[k])
            frames = {
                contract.JOINT_POSITIONS: q[:-1],
                "action": q[1:],
                contract.rgb_key("scene"): np.stack([square_image(uv, (250, 30, 30))] * n_frames),
                contract.rgb_key("wrist"): np.stack([square_image(1 - uv, (30, 250, 30))] * n_frames),
            }
            writer.add_episode(frames, task="pick_lift", success=True, source="synthetic")
