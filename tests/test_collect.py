"""In-process expert rollouts write the same dataset format as the MCAP converter."""

import numpy as np

from dexstack import contract
from dexstack.dataset import ACTION, Dataset
from dexstack.hardware.profiles import PANDA
from dexstack.sim.collect import collect_dataset
from dexstack.sim.env import ManipulationEnv, rollout_expert


def test_collected_episodes_match_the_rollouts_they_came_from(tmp_path):
    dataset = collect_dataset(tmp_path / "ds", episodes=2, seed=21)
    assert isinstance(dataset, Dataset) and len(dataset) == 2
    assert dataset.meta["fps"] == contract.POLICY_HZ and dataset.joint_names == list(PANDA.joint_names)
    assert set(dataset.meta["features"]) == {contract.JOINT_POSITIONS, ACTION, "wrist_rgb", "scene_rgb"}
    episode = dataset.episode(0)
    again = rollout_expert(ManipulationEnv(cameras=True), 21, record=True)  # deterministic: same seed, same episode
    assert len(episode["timestamp"]) == len(again["observations"]) and dataset.meta["episodes"][0]["success"]
    np.testing.assert_allclose(episode[ACTION], np.array([a[0] for a in again["actions"]]), atol=1e-6)
    np.testing.assert_allclose(episode["timestamp"], 0.1 * np.arange(len(episode["timestamp"])), atol=1e-9)
    np.testing.assert_array_equal(episode["scene_rgb"][5], again["observations"][5]["scene_rgb"])
    # The label leads the measured position: it is nearer where the arm is one step later.
    label, q = episode[ACTION][:-1, :7], episode[contract.JOINT_POSITIONS][:, :7]
    assert np.abs(label - q[1:]).mean() < 0.5 * np.abs(label - q[:-1]).mean()
