"""ManipulationEnv: observation contract, stepping, reward terms one by one."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from dexstack import contract
from dexstack.hardware.profiles import PANDA
from dexstack.sim.env import OBJECT_POSE, TIME, ManipulationEnv, rollout_expert
from dexstack.trajectory import ActionChunk


@pytest.fixture(scope="module")
def env() -> ManipulationEnv:
    e = ManipulationEnv(cameras=True, camera_size=(64, 48))
    yield e
    e.close()


def _hold_chunk(q: np.ndarray, stamp: float) -> ActionChunk:
    return ActionChunk.uniform(PANDA.joint_names, np.tile(q, (4, 1)), 0.1, stamp)


def test_observation_keys_shapes_and_dtypes(env):
    obs, info = env.reset(0)
    assert obs[contract.JOINT_POSITIONS].shape == (PANDA.n_joints,)
    assert obs[contract.JOINT_POSITIONS].dtype == np.float64
    for cam in PANDA.camera_names:
        assert obs[contract.rgb_key(cam)].shape == (48, 64, 3) and obs[contract.rgb_key(cam)].dtype == np.uint8
        assert obs[contract.depth_key(cam)].shape == (48, 64) and obs[contract.depth_key(cam)].dtype == np.float32
        depth = obs[contract.depth_key(cam)]
        assert np.all(np.isfinite(depth)) and np.all(depth >= 0.0)  # 0 = no return (beyond the far plane)
        assert np.median(depth) > 0.05
    assert obs[TIME] == 0.0
    assert obs[OBJECT_POSE].shape == (7,)
    assert np.linalg.norm(obs[OBJECT_POSE][3:]) == pytest.approx(1.0)
    assert info["instruction"] == f"pick up the {info['object'].replace('_', ' ')} and lift it"
    assert info["success"] is False


def test_step_advances_one_policy_period_and_tracks_the_chunk(env):
    obs, _ = env.reset(1)
    target = obs[contract.JOINT_POSITIONS] + np.array([0.2, 0, 0, 0, 0, 0, 0, 0])
    chunk = ActionChunk.uniform(
        PANDA.joint_names, np.linspace(obs[contract.JOINT_POSITIONS], target, 3)[1:], 0.1, stamp=obs[TIME]
    )
    obs, reward, terminated, truncated, info = env.step(chunk)
    assert obs[TIME] == pytest.approx(0.1)
    assert not terminated and not truncated
    for _ in range(5):
        obs, *_ = env.step(_hold_chunk(target, obs[TIME]))
    assert obs[contract.JOINT_POSITIONS][0] == pytest.approx(target[0], abs=5e-3)
    assert set(info["reward_terms"]) == {"reach", "grasp", "lift"}
    assert reward == pytest.approx(
        sum(w * info["reward_terms"][k] for k, w in {"reach": 1, "grasp": 1, "lift": 2}.items())
    )


def test_bad_chunk_raises_and_the_episode_continues(env):
    obs, _ = env.reset(2)
    wrong = ActionChunk.uniform(("a", "b"), np.zeros((2, 2)), 0.1, obs[TIME])
    with pytest.raises(ValueError, match="don't match the controller joints"):
        env.step(wrong)
    assert env.core.time == 0.0
    obs, *_ = env.step(_hold_chunk(obs[contract.JOINT_POSITIONS], obs[TIME]))
    assert obs[TIME] == pytest.approx(0.1)


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError, match="policy_hz"):
        ManipulationEnv(cameras=False, policy_hz=7.0)
    with pytest.raises(ValueError, match="unknown task"):
        ManipulationEnv(task="juggle", cameras=False)
    env = ManipulationEnv(cameras=False)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(_hold_chunk(np.asarray(PANDA.home), 0.0))
    assert "wrist_rgb" not in env.reset(0)[0]


def _teleport_object(env: ManipulationEnv, position: np.ndarray) -> None:
    task = env.task
    qa = task._qpos_adr[task.object_name]
    env.core.data.qpos[qa : qa + 3] = position
    mujoco.mj_forward(env.core.model, env.core.data)


def test_reward_terms_one_by_one(env):
    env.reset(3)
    task = env.task
    assert task._reward_grasp() == 0.0 and task._reward_lift() == 0.0
    far = task._reward_reach()
    assert 0.0 < far < 0.5  # object ~0.4 m from the gripper at home
    _teleport_object(env, task.tcp_position())
    assert task._reward_reach() == pytest.approx(1.0, abs=1e-6)
    # Lifted but not held: no lift reward and no success.
    _teleport_object(env, task.tcp_position() + [0.0, 0.3, 0.0])
    assert task.lift_height() > 0.10
    assert task._reward_lift() == 0.0 and not task.success()


def test_expert_rollout_ends_in_held_success_with_full_lift_reward(env):
    result = rollout_expert(env, seed=11, record=True)
    assert result["success"]
    assert env.task._reward_grasp() == 1.0 and env.task._reward_lift() == 1.0
    assert len(result["observations"]) == len(result["actions"]) == result["steps"]
    assert result["actions"][0].shape == (8, PANDA.n_joints)
    assert contract.rgb_key("wrist") in result["observations"][0]
