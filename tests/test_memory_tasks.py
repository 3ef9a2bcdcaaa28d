"""Memory tasks (cover_pick, cue_choice): the ambiguity is real in the rendered cameras, the
waiting experts succeed, reward terms on constructed states, determinism per seed."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from dexstack import contract
from dexstack.dataset import Dataset
from dexstack.hardware.profiles import PANDA
from dexstack.sim.collect import collect_dataset
from dexstack.sim.core import SimCore
from dexstack.sim.env import OBJECT_POSE, TIME, ManipulationEnv, make_expert, rollout_expert
from dexstack.sim.experts import EXPERTS
from dexstack.sim.tasks import TASKS, cover_pick, cue_choice

MEMORY_TASKS = ("cover_pick", "cue_choice")
CAMERAS = ("wrist", "scene")


@pytest.fixture(scope="module")
def cores() -> dict[str, SimCore]:
    built = {name: SimCore(name) for name in MEMORY_TASKS}  # the profile's 96 x 96 cameras
    yield built
    for core in built.values():
        core.close()


@pytest.fixture(scope="module")
def envs() -> dict[str, ManipulationEnv]:
    built = {name: ManipulationEnv(name, cameras=False) for name in MEMORY_TASKS}
    yield built
    for env in built.values():
        env.close()


def _force(core: SimCore, choice: int | None) -> None:
    """Same scene draws, only the hidden answer set: the place (cover_pick) or the target (cue_choice)."""
    if core.task.name == "cover_pick":
        core.task.forced_place = choice
    else:
        core.task.forced_target = choice


def _frames_at(core: SimCore, seed: int, choice: int, times: tuple[float, ...]) -> tuple[list, np.ndarray]:
    """Reset with the answer forced, hold the arm at home; images of both cameras at `times`."""
    _force(core, choice)
    try:
        core.reset(seed)
    finally:
        _force(core, None)
    target = core.task.object_pose()[0]
    frames = []
    for t in times:
        while core.time < t - 1e-9:
            core.step(1)
        frames.append(np.concatenate([core.render(cam)[0].astype(np.int16) for cam in CAMERAS], axis=1))
    return frames, target


def test_memory_tasks_are_registered_with_experts():
    for name in MEMORY_TASKS:
        assert TASKS[name].name == name and name in EXPERTS


@pytest.mark.parametrize("task,choices", [("cover_pick", (0, 2)), ("cue_choice", (0, 1))])
def test_frames_after_the_cue_are_identical_for_episodes_that_need_different_actions(cores, task, choices):
    core = cores[task]
    times = (0.0, core.task.cue_end_s + 0.05, core.task.cue_end_s + 0.3)
    (start_a, after_a, later_a), target_a = _frames_at(core, 7, choices[0], times)
    (start_b, after_b, later_b), target_b = _frames_at(core, 7, choices[1], times)
    # The two episodes need the gripper at places at least 10 cm apart ...
    assert np.linalg.norm(target_a[:2] - target_b[:2]) > 0.10
    # ... the first frame shows which (many pixels differ) ...
    assert np.count_nonzero(np.abs(start_a - start_b).max(axis=-1) > 30) >= 10
    # ... and once the cue is gone both cameras show the same picture.
    for a, b in ((after_a, after_b), (later_a, later_b)):
        assert np.abs(a - b).max() <= 2, f"largest pixel difference {np.abs(a - b).max()}"


def test_covers_come_down_together_and_stand_on_the_table(cores):
    core = cores["cover_pick"]
    core.reset(3)
    assert np.all(core.task.cover_heights() > 0.5)  # up out of the scene camera's view at t = 0
    core.step(int(round((cover_pick.COVERED_AT_S + 0.3) / core.dt)))
    heights = core.task.cover_heights()
    np.testing.assert_allclose(heights, heights[0], atol=1e-9)  # identical fall at every place
    assert np.all(np.abs(heights) < 0.005)
    # The hidden object did not move: covers do not touch it.
    assert core.task.lift_height() == pytest.approx(0.0, abs=0.003)


def test_cue_ball_sinks_out_of_view_in_the_targets_colour(cores):
    core = cores["cue_choice"]
    core.reset(4)
    task = core.task
    assert task.cue_position()[2] == pytest.approx(cue_choice.CUE_START[2], abs=0.02)
    ball = core.model.geom_rgba[core.model.geom_bodyid == core.model.body(cue_choice.CUE_BODY + "/").id][0]
    np.testing.assert_allclose(ball, task.original_rgba(task.object_name))
    assert not np.allclose(ball, task.original_rgba(task.distractor_name))
    core.step(int(round(cue_choice.CUE_GONE_AT_S / core.dt)))
    assert task.cue_position()[2] < -cue_choice.CUE_RADIUS_M  # top of the ball below the table top


@pytest.mark.parametrize("task", MEMORY_TASKS)
def test_reset_is_deterministic_per_seed(cores, task):
    core = cores[task]
    core.reset(11)
    qpos, name, frame = core.data.qpos.copy(), core.task.object_name, core.render("scene")[0]
    core.reset(12)
    other = core.data.qpos.copy()
    core.reset(11)
    np.testing.assert_array_equal(core.data.qpos, qpos)
    np.testing.assert_array_equal(core.render("scene")[0], frame)
    assert core.task.object_name == name
    assert not np.allclose(other, qpos)


def test_bad_forced_answer_is_refused_and_the_episode_is_kept(cores):
    core = cores["cover_pick"]
    core.reset(5)
    before = (core.task.object_name, core.task.place_index, core.data.qpos.copy())
    core.task.forced_place = 3
    with pytest.raises(ValueError, match="forced_place must be in 0..2"):
        core.task.reset(np.random.default_rng(0))
    core.task.forced_place = None
    assert (core.task.object_name, core.task.place_index) == before[:2]
    np.testing.assert_array_equal(core.data.qpos, before[2])
    cue = cores["cue_choice"].task
    cue.forced_target = 2
    with pytest.raises(ValueError, match="forced_target must be 0 or 1"):
        cue.reset(np.random.default_rng(0))
    cue.forced_target = None


def test_cue_choice_reward_terms_on_constructed_states(cores):
    core = cores["cue_choice"]
    core.reset(6)
    task = core.task
    terms = task.reward_terms()
    assert terms["grasp"] == 0.0 and terms["lift"] == 0.0 and terms["wrong_lift"] == 0.0
    assert 0.0 < terms["reach"] < 1.0
    # Raise the distractor 5 cm by hand: the wrong-object term fires and success is impossible.
    qa = int(core.model.jnt_qposadr[core.model.body_jntadr[core.model.body(task.distractor_name + "/").id]])
    core.data.qpos[qa + 2] += 0.05
    mujoco.mj_forward(core.model, core.data)
    assert task.distractor_lift_height() == pytest.approx(0.05, abs=1e-3)
    assert task.reward_terms()["wrong_lift"] == 1.0
    assert task.reward() == pytest.approx(terms["reach"] - 2.0, abs=1e-6)
    assert not task.success()
    # The target raised without a grasp earns no lift reward.
    core.data.qpos[qa + 2] -= 0.05
    qt = int(core.model.jnt_qposadr[core.model.body_jntadr[core.model.body(task.object_name + "/").id]])
    core.data.qpos[qt + 2] += 0.12
    mujoco.mj_forward(core.model, core.data)
    assert task.lift_height() == pytest.approx(0.12, abs=1e-3)
    assert task.reward_terms()["lift"] == 0.0 and not task.success()


def test_expert_holds_home_while_the_cue_is_on():
    expert = EXPERTS["cue_choice"](PANDA)
    home = np.asarray(PANDA.home)
    target = np.array([0.5, 0.15, 0.04])
    chunk = expert.act(0.5, home, target, np.array([1.0, 0, 0, 0]))
    np.testing.assert_array_equal(chunk.positions, np.tile(home, (chunk.positions.shape[0], 1)))
    later = expert.act(cue_choice.CUE_GONE_AT_S + 0.3, home, target, np.array([1.0, 0, 0, 0]))
    assert np.abs(later.positions[-1, :7] - home[:7]).max() > 0.05  # now it moves
    with pytest.raises(ValueError, match="joint_positions"):
        expert.act(0.1, np.full(8, np.nan), target, np.array([1.0, 0, 0, 0]))


@pytest.mark.parametrize("task", MEMORY_TASKS)
def test_expert_succeeds_in_at_least_18_of_20_randomised_episodes(envs, task):
    results = [rollout_expert(envs[task], seed) for seed in range(2000, 2020)]
    successes = sum(r["success"] for r in results)
    assert successes >= 18, [(r["seed"], r["object"]) for r in results if not r["success"]]


def _rollout_with_pose(env: ManipulationEnv, seed: int, pose_for_expert) -> dict:
    """Expert episode in which the expert is told `pose_for_expert(env)` instead of the truth."""
    expert = make_expert(env)
    obs, info = env.reset(seed)
    done, lifted = False, 0.0
    while not done:
        pose = pose_for_expert(env)
        chunk = expert.act(obs[TIME], obs[contract.JOINT_POSITIONS], pose[:3], pose[3:])
        obs, _, terminated, truncated, info = env.step(chunk)
        lifted = max(lifted, env.task.lift_height())
        done = terminated or truncated or env.core.time > 7.0  # the expert is done lifting by then
    return {"info": info, "max_lift": lifted}


def test_grasping_an_empty_place_lifts_nothing(envs):
    env = envs["cover_pick"]
    env.reset(9)
    wrong = (env.task.place_index + 1) % cover_pick.N_PLACES

    def empty_place(e):
        pos, quat = e.task.object_pose()
        return np.concatenate([[*e.task.places[wrong], pos[2]], quat])

    result = _rollout_with_pose(env, 9, empty_place)
    assert not result["info"]["success"] and result["max_lift"] < 0.01


def test_lifting_the_other_object_is_a_failure(envs):
    env = envs["cue_choice"]

    def distractor(e):
        qa = e.core.model.jnt_qposadr[e.core.model.body_jntadr[e.core.model.body(e.task.distractor_name + "/").id]]
        return e.core.data.qpos[qa : qa + 7].copy()

    result = _rollout_with_pose(env, 9, distractor)
    assert result["info"]["reward_terms"]["wrong_lift"] == 1.0
    assert not result["info"]["success"] and result["max_lift"] < 0.01


def test_collect_writes_memory_task_demonstrations(tmp_path):
    dataset = collect_dataset(tmp_path / "ds", episodes=1, seed=30, task="cue_choice")
    assert isinstance(dataset, Dataset) and len(dataset) == 1
    meta = dataset.meta["episodes"][0]
    assert meta["success"] and meta["task"] == "lift the object that has the colour of the cue"
    episode = dataset.episode(0)
    # The cue is in the first scene frame and gone later: the demonstrations carry the memory problem.
    assert episode["scene_rgb"].shape[1:] == (96, 96, 3)
    assert np.abs(episode["scene_rgb"][0].astype(int) - episode["scene_rgb"][14].astype(int)).max() > 30
    assert OBJECT_POSE not in dataset.meta["features"]
