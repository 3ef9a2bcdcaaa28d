"""G-PAYN environment: reward terms, palm IK, reset at the pre-grasp, touch with the thumb fix,
scripted demos pre-filling the replay buffer, replay checkpoints, bad actions, vector env
(real MuJoCo physics and rendering, real superquadric fits)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexstack.hardware.profiles import ADROIT
from dexstack.perception.grasp_pose import PREGRASP_DISTANCE, arm_friendly_grasp, grasp_pose
from dexstack.perception.superquadric import Superquadric
from dexstack.policies.gpayn.action import ACTION_DIM, MAX_FINGER_DELTA
from dexstack.policies.gpayn.demos import ScriptedGraspDemo, collect_demos, episode_outcomes, prefill
from dexstack.policies.gpayn.env import (
    HELD_OUT_OBJECTS,
    TRAIN_OBJECTS,
    VALIDATION_OBJECTS,
    GraspEnv,
    VectorGraspEnv,
)
from dexstack.policies.gpayn.replay import ReplayBuffer
from dexstack.sim import objects as objects_lib
from dexstack.sim.hand_core import TOUCH_THRESHOLD
from dexstack.sim.hand_scene import TOUCH_PADS
from dexstack.sim.tasks import grasp as grasp_task


def state(**overrides) -> grasp_task.RewardState:
    base = dict(
        contacts=0,
        prev_contacts=0,
        object_height=0.05,
        prev_object_height=0.05,
        rest_height=0.05,
        palm_distance=0.03,
        prev_palm_distance=0.03,
    )
    return grasp_task.RewardState(**(base | overrides))


# --- rewards --------------------------------------------------------------------------------
def test_contact_term_rewards_the_change_in_fingertips_in_contact():
    terms, total, terminal = grasp_task.compute_reward(state(contacts=3, prev_contacts=1, touched_before=True))
    assert terms["contacts"] == pytest.approx(2 * grasp_task.CONTACT_WEIGHT)
    assert total == pytest.approx(2 * grasp_task.CONTACT_WEIGHT) and not terminal
    assert grasp_task._reward_contacts(state(contacts=1, prev_contacts=4)) == pytest.approx(
        -3 * grasp_task.CONTACT_WEIGHT
    )
    assert grasp_task._reward_contacts(state(contacts=2, prev_contacts=2)) == 0.0


def test_lift_counts_only_with_two_fingertips_on_the_object():
    lifted = dict(object_height=0.07, prev_object_height=0.06, touched_before=True)
    assert grasp_task._reward_lift(state(contacts=1, prev_contacts=1, **lifted)) == 0.0
    assert grasp_task._reward_lift(state(contacts=2, prev_contacts=2, **lifted)) == pytest.approx(
        0.01 * grasp_task.LIFT_WEIGHT
    )
    # Dropping back down while held costs what lifting earned.
    dropped = dict(object_height=0.06, prev_object_height=0.07, touched_before=True)
    assert grasp_task._reward_lift(state(contacts=3, prev_contacts=3, **dropped)) == pytest.approx(
        -0.01 * grasp_task.LIFT_WEIGHT
    )


def test_centring_pays_for_approaching_the_grasp_pose_only_before_the_first_contact():
    closer = dict(palm_distance=0.02, prev_palm_distance=0.03)
    assert grasp_task._reward_centring(state(**closer)) == pytest.approx(0.01 * grasp_task.CENTRING_WEIGHT)
    assert grasp_task._reward_centring(state(palm_distance=0.04, prev_palm_distance=0.03)) < 0
    assert grasp_task._reward_centring(state(touched_before=True, **closer)) == 0.0
    assert grasp_task._reward_centring(state(contacts=1, **closer)) == 0.0


def test_success_at_ten_centimetres_terminates_with_plus_one():
    terms, _, terminal = grasp_task.compute_reward(
        state(object_height=0.149, prev_object_height=0.14, contacts=4, prev_contacts=4, touched_before=True)
    )
    assert terms["success"] == 0.0 and not terminal
    terms, total, terminal = grasp_task.compute_reward(
        state(object_height=0.151, prev_object_height=0.14, contacts=4, prev_contacts=4, touched_before=True)
    )
    assert terms["success"] == 1.0 and terms["failure"] == 0.0 and terminal
    assert total == pytest.approx(1.0 + 0.011 * grasp_task.LIFT_WEIGHT)


@pytest.mark.parametrize(
    "failure", [dict(object_tilt=1.0), dict(object_height=-0.01), dict(ik_failed=True), dict(timed_out=True)]
)
def test_knocked_over_ik_failure_and_timeout_cost_minus_one(failure):
    terms, total, terminal = grasp_task.compute_reward(state(**failure))
    assert terms["failure"] == -1.0 and total == pytest.approx(-1.0)
    assert terminal == (not failure.get("timed_out", False))  # a timeout is a truncation, not a terminal state
    assert set(terms) == set(grasp_task.TERMS)


def test_bad_reward_states_are_refused():
    with pytest.raises(ValueError, match="contacts"):
        state(contacts=7)
    with pytest.raises(ValueError, match="object_height"):
        state(object_height=float("nan"))


# --- env ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vision_env():
    env = GraspEnv("sugar_box", seed=3, render=True, image_size=(64, 48))
    yield env
    env.close()


@pytest.fixture(scope="module")
def state_env():
    env = GraspEnv("potted_meat_can", seed=0, render=False)
    yield env
    env.close()


def test_object_sets_are_disjoint_catalogue_objects():
    assert set(TRAIN_OBJECTS).isdisjoint(HELD_OUT_OBJECTS) and len(HELD_OUT_OBJECTS) >= 3
    assert all(name in objects_lib.CATALOG for name in TRAIN_OBJECTS + HELD_OUT_OBJECTS + VALIDATION_OBJECTS)
    # Settings are chosen on validation objects: never trained on, never held out.
    assert set(VALIDATION_OBJECTS).isdisjoint(TRAIN_OBJECTS + HELD_OUT_OBJECTS)
    drill = objects_lib.CATALOG["power_drill"]
    assert len(drill.shapes) == 3 and drill.mass == pytest.approx(0.895)


def test_grasps_on_round_sections_close_away_from_the_arm_and_boxes_keep_their_narrow_width():
    mount = np.array([-0.5, 0.0, 0.1])
    upright = Rotation.from_euler("z", 1.2).as_matrix()
    can = Superquadric(np.array([0.0375, 0.0375, 0.125]), np.array([0.1, 1.0]), np.array([0.0, 0.02, 0.125]), upright)
    turned = arm_friendly_grasp(grasp_pose(can, "auto", reference=mount), can, mount)
    x_axis = Rotation.from_quat(turned[1], scalar_first=True).as_matrix()[:, 0]
    away = can.position - mount
    away[2] = 0.0
    assert x_axis @ away / np.linalg.norm(away) > 0.999  # closes straight away from the mount
    box = Superquadric(np.array([0.0445, 0.019, 0.0875]), np.array([0.1, 0.1]), np.array([0.0, 0.02, 0.0875]), upright)
    planned = grasp_pose(box, "auto", reference=mount)
    kept = arm_friendly_grasp(planned, box, mount)
    x_box = Rotation.from_quat(kept[1], scalar_first=True).as_matrix()[:, 0]
    assert 2 * box.support(x_box) == pytest.approx(0.038, abs=1e-3)  # still across the 3.8 cm side
    assert np.allclose(kept[0], planned[0])


def test_ik_reaches_a_reachable_palm_pose_and_reports_an_unreachable_one(state_env):
    sim = state_env.sim
    sim.reset()
    position = np.array([0.03, 0.0, 0.15])
    quat = Rotation.from_euler("xz", [np.pi, 0.3]).as_quat(scalar_first=True)  # palm down, turned 0.3 rad
    live_qpos = sim.data.qpos.copy()
    result = sim.solve_palm_ik(position, quat)
    assert result.success and result.message == ""
    assert np.array_equal(sim.data.qpos, live_qpos)  # solved on scratch data
    sim.set_arm_pose(result.arm_q)
    reached_p, reached_q = sim.palm_pose()
    assert np.linalg.norm(reached_p - position) < ADROIT.model.ik.position_tolerance
    angle = (
        Rotation.from_quat(reached_q, scalar_first=True).inv() * Rotation.from_quat(quat, scalar_first=True)
    ).magnitude()
    assert angle < ADROIT.model.ik.rotation_tolerance
    assert np.all(result.arm_q >= sim.profile.lower[:6]) and np.all(result.arm_q <= sim.profile.upper[:6])

    far = sim.solve_palm_ik([0.8, 0.0, 0.15], quat)  # 30 cm beyond ARTz's reach
    assert not far.success and far.position_error > 0.2 and "out of reach" in far.message
    upside_down = sim.solve_palm_ik(position, [1.0, 0.0, 0.0, 0.0])  # palm up: beyond the hinges' limits
    assert not upside_down.success and upside_down.rotation_error > ADROIT.model.ik.rotation_tolerance
    with pytest.raises(ValueError, match="quaternion"):
        sim.solve_palm_ik(position, [0.0, 0.0, 0.0, 0.0])


def test_reset_puts_the_open_hand_at_the_pregrasp_five_cm_back_along_the_approach(vision_env):
    obs, info = vision_env.reset(seed=11)
    grasp_p, grasp_q = info["grasp_pose"]
    approach = Rotation.from_quat(grasp_q, scalar_first=True).as_matrix()[:, 2]
    assert approach[2] < -0.9  # a top grasp on the upright sugar box
    palm_p, palm_q = vision_env.sim.palm_pose()
    assert np.linalg.norm(palm_p - (grasp_p - PREGRASP_DISTANCE * approach)) < 0.005
    assert (
        Rotation.from_quat(palm_q, scalar_first=True).inv() * Rotation.from_quat(grasp_q, scalar_first=True)
    ).magnitude() < 0.05
    # The vision fit found the box: grasp point above its centre, on its top (17.5 cm).
    centre = vision_env.sim.object_center()
    assert np.linalg.norm(grasp_p[:2] - centre[:2]) < 0.02 and grasp_p[2] == pytest.approx(0.175, abs=0.015)
    assert info["ik"].success and info["reset_attempts"] >= 1
    spec = vision_env.observation_spec()
    assert set(obs) == set(spec)
    for key, (shape, dtype) in spec.items():
        assert obs[key].shape == shape and obs[key].dtype == dtype, key
    assert obs["image"].shape == (48, 64, 3) and obs["image"].std() > 5  # a real picture, not a blank
    assert np.allclose(obs["ee_pose"][:3], palm_p, atol=1e-6)
    assert np.linalg.norm(obs["grasp_center_in_palm"] - [0.0, 0.0, PREGRASP_DISTANCE]) < 0.006  # straight ahead
    assert not obs["touch"][:5].any()


def test_scripted_closing_touches_with_four_pads_including_the_thumb_and_none_in_free_air(vision_env):
    _, info = vision_env.reset(seed=5)
    demo = ScriptedGraspDemo()
    demo.reset(info)
    steps = int(round(PREGRASP_DISTANCE / 0.01)) + int(np.ceil(1 / MAX_FINGER_DELTA)) + 2  # approach, close, hold
    for _ in range(steps):
        obs, _, terminated, truncated, step_info = vision_env.step(demo.act())
        assert not (terminated or truncated)
    flags, forces = obs["touch"][:5], obs["touch"][5:]
    assert flags.sum() >= 4 and flags[TOUCH_PADS.index("thumb")] == 1.0, forces
    assert np.all(forces[flags == 1.0] > TOUCH_THRESHOLD) and forces.max() < 100.0
    assert step_info["contacts"] >= 4  # counted on the object itself

    # The same closing at the pre-grasp with the object gone: the hand closes on nothing.
    vision_env.reset(seed=5)
    sim = vision_env.sim
    sim.park_object()
    sim.run_closing()
    assert sim.joint_positions()[6:].max() > 0.8  # the fingers did close
    assert np.abs(sim.pad_forces()).max() == 0.0


def test_bad_actions_are_refused(state_env):
    state_env.reset(seed=1)
    with pytest.raises(ValueError, match="shape"):
        state_env.step(np.zeros(ACTION_DIM + 1))
    with pytest.raises(ValueError, match="finite"):
        state_env.step(np.full(ACTION_DIM, np.nan))
    with pytest.raises(TypeError, match="numeric"):
        state_env.step(["left"] * ACTION_DIM)
    with pytest.raises(ValueError, match="unknown object"):
        GraspEnv("teapot", render=False)
    fresh = GraspEnv("potted_meat_can", render=False)
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step(np.zeros(ACTION_DIM))


def test_demos_prefill_every_transition_failures_included(state_env):
    buffer = ReplayBuffer(200, state_env.observation_spec(), ACTION_DIM)
    stats = prefill(buffer, state_env, n_episodes=2, seed=20)
    short = GraspEnv("potted_meat_can", seed=0, render=False, max_episode_steps=12)  # times out before lifting
    failed = prefill(buffer, short, n_episodes=1, seed=40)
    assert stats["successes"] == 2 and failed["successes"] == 0
    assert len(buffer) == stats["transitions"] + failed["transitions"]

    # The same episodes stepped by hand give the same transitions, in order.
    expected = collect_demos(state_env, 2, seed=20) + collect_demos(short, 1, seed=40)
    outcomes = episode_outcomes(expected[: stats["transitions"]])
    assert len(buffer) == len(expected) == sum(o["steps"] for o in outcomes) + 12
    assert np.allclose(buffer.reward[: len(expected)], [t["reward"] for t in expected], atol=1e-6)
    ends = np.flatnonzero(buffer.terminated[: len(buffer)] | buffer.truncated[: len(buffer)])
    assert ends.tolist() == np.cumsum([o["steps"] for o in outcomes] + [12]).__sub__(1).tolist()
    assert buffer.terminated[ends[:2]].all() and buffer.reward[ends[:2]].min() > 1.0  # successes: +1 and the lift
    assert buffer.truncated[ends[2]] and not buffer.terminated[ends[2]]
    assert buffer.reward[ends[2]] < -0.9  # the timeout's -1
    assert np.allclose(
        buffer.obs["hand_joints"][1 : len(buffer)][~(buffer.terminated | buffer.truncated)[: len(buffer) - 1]],
        buffer.next_obs["hand_joints"][: len(buffer) - 1][~(buffer.terminated | buffer.truncated)[: len(buffer) - 1]],
    )
    short.close()


def test_replay_buffer_wraps_samples_and_roundtrips_through_npz(tmp_path):
    spec = {"touch": ((10,), np.float32), "image": ((4, 5, 3), np.uint8)}
    buffer = ReplayBuffer(5, spec, 3)
    for i in range(7):  # wraps: transitions 2..6 remain
        obs = {"touch": np.full(10, i, np.float32), "image": np.full((4, 5, 3), i, np.uint8)}
        nxt = {"touch": np.full(10, i + 1, np.float32), "image": np.full((4, 5, 3), i + 1, np.uint8)}
        buffer.add(obs, np.full(3, i / 10), float(i), nxt, terminated=i == 3, truncated=i == 5)
    assert len(buffer) == 5
    assert sorted(buffer.reward.tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    batch = buffer.sample(64, np.random.default_rng(0))
    assert batch["obs"]["image"].shape == (64, 4, 5, 3) and batch["action"].shape == (64, 3)
    assert np.all(batch["next_obs"]["touch"][:, 0] == batch["obs"]["touch"][:, 0] + 1)
    assert np.all(batch["terminated"] == (batch["reward"] == 3.0))
    assert np.all(batch["truncated"] == (batch["reward"] == 5.0))

    path = tmp_path / "replay.npz"
    buffer.save(path)
    loaded = ReplayBuffer.load(path)
    assert len(loaded) == 5 and loaded.capacity == 5
    assert loaded.reward.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]  # oldest first
    for name in ("action", "terminated", "truncated"):
        assert np.array_equal(getattr(loaded, name), getattr(buffer, name)[buffer._chronological()])
    assert np.array_equal(loaded.obs["image"], buffer.obs["image"][buffer._chronological()])
    loaded.add(
        {k: np.zeros(s, d) for k, (s, d) in spec.items()},
        np.zeros(3),
        9.0,
        {k: np.zeros(s, d) for k, (s, d) in spec.items()},
        False,
        False,
    )
    assert 2.0 not in loaded.reward.tolist()  # the oldest was overwritten first

    with pytest.raises(ValueError, match="image"):
        buffer.add(
            {"touch": np.zeros(10), "image": np.zeros((5, 4, 3))},
            np.zeros(3),
            0.0,
            {"touch": np.zeros(10), "image": np.zeros((4, 5, 3))},
            False,
            False,
        )
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, spec, 3).sample(2, np.random.default_rng(0))


def test_kept_demonstrations_survive_wrap_around_and_fill_their_share_of_each_batch(tmp_path):
    spec = {"touch": ((10,), np.float32)}
    buffer = ReplayBuffer(6, spec, 2)

    def add(i: int) -> None:
        buffer.add(
            {"touch": np.full(10, i, np.float32)},
            np.zeros(2),
            float(i),
            {"touch": np.zeros(10, np.float32)},
            False,
            False,
        )

    for i in range(2):  # the "demonstrations"
        add(i)
    buffer.keep_current()
    for i in range(2, 12):  # 10 newer transitions through the 4 remaining slots
        add(i)
    assert buffer.kept == 2 and len(buffer) == 6
    assert sorted(buffer.reward.tolist()) == [0.0, 1.0, 8.0, 9.0, 10.0, 11.0]  # demos kept, oldest newer ones gone
    batch = buffer.sample(100, np.random.default_rng(0), kept_fraction=0.5)
    assert batch["demo"].sum() == 50 and set(batch["reward"][batch["demo"]]) <= {0.0, 1.0}
    assert set(batch["reward"][~batch["demo"]]) <= {8.0, 9.0, 10.0, 11.0}
    assert not buffer.sample(50, np.random.default_rng(0))["demo"].all()  # no share asked: uniform over all

    path = tmp_path / "kept.npz"
    buffer.save(path)
    loaded = ReplayBuffer.load(path)
    assert loaded.kept == 2 and loaded.reward.tolist() == [0.0, 1.0, 8.0, 9.0, 10.0, 11.0]
    loaded.add(
        {"touch": np.zeros(10, np.float32)}, np.zeros(2), 12.0, {"touch": np.zeros(10, np.float32)}, False, False
    )
    assert sorted(loaded.reward.tolist()) == [0.0, 1.0, 9.0, 10.0, 11.0, 12.0]
    with pytest.raises(ValueError, match="kept_fraction"):
        buffer.sample(4, np.random.default_rng(0), kept_fraction=1.5)
    full = ReplayBuffer(2, spec, 2)
    for _ in range(2):
        full.add({"touch": np.zeros(10)}, np.zeros(2), 0.0, {"touch": np.zeros(10)}, False, False)
    with pytest.raises(ValueError, match="no room"):
        full.keep_current()


def test_vector_env_auto_resets_and_returns_the_final_observation():
    venv = VectorGraspEnv(2, objects=("potted_meat_can", "sugar_box"), seed=7, render=False, max_episode_steps=3)
    obs, infos = venv.reset(seed=1)
    assert obs["hand_joints"].shape == (2, 24) and [i["object"] for i in infos] == ["potted_meat_can", "sugar_box"]
    close_fingers = np.zeros((2, ACTION_DIM))
    close_fingers[:, 6:] = 1.0
    for _ in range(2):
        obs, rew, term, trunc, infos = venv.step(close_fingers)
        assert not (term.any() or trunc.any())
    obs, rew, term, trunc, infos = venv.step(close_fingers)
    assert trunc.all() and not term.any() and np.allclose(rew, -1.0, atol=0.3)
    for i in range(2):
        final = infos[i]["final_observation"]
        assert final["hand_joints"].max() > 0.3  # the closing hand at the end of the episode
        assert obs["hand_joints"][i].max() < 0.05  # the new episode starts open
        assert infos[i]["final_info"]["reward_terms"]["failure"] == -1.0
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros(ACTION_DIM))
    venv.close()


def test_the_sim_nodes_hand_core_starts_each_episode_exactly_as_graspenv():
    """Both run the grasp task's reset (`sim/tasks/grasp.py`): same seed, same placement, the same
    planned grasp and the same joint state, bit for bit."""
    from dexstack.sim.cores import HandCore

    env, core = GraspEnv("sugar_box", render=True), HandCore(object_name="sugar_box")
    try:
        for seed in (3, 4):
            _, info = env.reset(seed=seed)
            assert core.reset(seed) is None and core.time == 0.0
            assert core.plan["grasp_position"] == info["grasp_pose"][0].tolist()
            assert core.plan["grasp_quaternion"] == info["grasp_pose"][1].tolist()
            assert np.array_equal(core.joint_state()[0], env.sim.joint_positions())
            assert np.array_equal(core.object_pose()[0], env.sim.object_pose()[0])
            assert core.task.success() is False and core.task.rest_height == env.task.rest_height
    finally:
        env.close()
        core.close()
