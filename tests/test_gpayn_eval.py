"""`dexstack eval --task grasp`: the G-PAYN grasp task evaluated in-process (GraspEnv, the store's
policy through the onnxruntime runtime, or the scripted controller) and through the ROS graph in
lockstep (hand sim, grasp planner, safety filter, policy node), with real MuJoCo, a real exported
actor in a temporary store and real DDS; task options (`--option object=...`) and the paired
comparison of two summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gpayn_actor import export_rising_actor

from dexstack.cli.evaluate import parse_options, run_eval
from dexstack.cli.report import compare_outcomes
from dexstack.policies.gpayn.env import GraspEnv
from dexstack.sim.tasks.grasp import resolve_objects

NAME = "gpayn_eval_test"
OBJECT = "potted_meat_can"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shared test actor (`gpayn_actor.py`): it lifts the open hand slowly."""
    env = GraspEnv(OBJECT, seed=0, render=False)
    try:
        obs, _ = env.reset(seed=4)
        spec_env = env.observation_spec()
    finally:
        env.close()
    return export_rising_actor(obs, spec_env, tmp_path_factory.mktemp("gpayn_eval") / "actor")[0]


@pytest.fixture
def store(exported, dexstack_home, monkeypatch):
    from dexstack.store import PolicyStore

    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")
    PolicyStore().publish(exported, name=NAME)
    return NAME


def test_gpayn_policy_is_refused_on_a_panda_task(store):
    with pytest.raises(
        ValueError,
        match=r"'gpayn' policy for the 'adroit' robot; it runs on --task grasp, not "
        r"--task pick_lift",
    ):
        run_eval(store, "pick_lift", 2, None, False)
    with pytest.raises(ValueError, match=r"task 'pick_lift' has no option object; its options: none"):
        run_eval("expert", "pick_lift", 2, None, False, options={"object": OBJECT})
    with pytest.raises(ValueError, match=r"task 'grasp' has no option colour; its options: object \("):
        run_eval("scripted", "grasp", 2, None, False, options={"colour": "red"})
    with pytest.raises(ValueError, match="no Adroit hand expert"):
        run_eval("scripted", "grasp", 2, None, True, options={"object": OBJECT})


def test_options_parse_as_key_value_pairs():
    assert parse_options(["object=held_out", " a = b "]) == {"object": "held_out", "a": "b"}
    assert parse_options(None) == {}
    for bad in (["object"], ["=x"], ["object="]):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_options(bad)
    with pytest.raises(ValueError, match="given twice"):
        parse_options(["object=a", "object=b"])


def test_unknown_objects_are_refused():
    with pytest.raises(ValueError, match=r"unknown object\(s\) \['banana_phone'\]"):
        run_eval("scripted", "grasp", 1, None, False, options={"object": f"{OBJECT},banana_phone"})
    with pytest.raises(ValueError, match="no object named"):
        resolve_objects(" , ")
    with pytest.raises(TypeError, match="must be a string"):
        resolve_objects(["sugar_box"])
    assert resolve_objects("held_out") == ("chips_can", "rubiks_cube", "pear", "tomato_soup_can")
    assert resolve_objects("validation") == ("pudding_box", "apple", "wood_block", "tuna_fish_can")
    assert resolve_objects(None) == resolve_objects("train")
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        run_eval("scripted", "grasp", 0, None, False, options={"object": OBJECT})


def test_scripted_controller_lifts_the_meat_can_in_process():
    summary = run_eval("scripted", "grasp", 5, 100, False, options={"object": OBJECT})
    can = summary["groups"][OBJECT]
    assert summary["mode"] == "in_process" and summary["episodes"] == 5
    assert can["seeds"] == [100, 101, 102, 103, 104]
    assert can["successes"] >= 4, can
    # The scripted plan lifts on a fixed schedule: approach, close, hold, lift (< GraspEnv's 5 s).
    lifted = [t for t in can["time_to_lift_s"] if t is not None]
    assert all(1.0 < t < 5.0 for t in lifted), lifted
    assert summary["success_rate"] == can["success_rate"] == can["successes"] / 5
    # The task's metric, per episode and as a mean, in the group and over groups.
    assert summary["time_to_lift_s"] == can["time_to_lift_s"]
    assert summary["mean_time_to_lift_s"] == can["mean_time_to_lift_s"] == round(sum(lifted) / len(lifted), 3)
    assert summary["seeds"] == can["seeds"] and summary["outcomes"] == can["outcomes"]


def test_store_policy_in_process_runs_through_the_onnx_runtime(store):
    """The untrained actor only lifts the open hand: every episode ends at GraspEnv's time limit."""
    summary = run_eval(store, "grasp", 1, 7, False, options={"object": OBJECT})
    can = summary["groups"][OBJECT]
    assert can["outcomes"] == [False] and can["mean_time_to_lift_s"] is None and can["seeds"] == [7]


@pytest.mark.ros
def test_through_ros_runs_the_seeds_asked_for(store, tmp_path):
    """Two lockstep episodes of one object through the graph: two outcomes with seeds 11 and 12;
    the grasp planner's pose of each episode, fitted from the hand sim's arm-clear view, is
    GraspEnv's planned grasp for the same seed within the depth image's mm quantisation."""
    import os

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    summary = run_eval(store, "grasp", 2, 11, True, options={"object": OBJECT}, log_dir=str(tmp_path / "logs"))
    can = summary["groups"][OBJECT]
    assert summary["mode"] == "ros_lockstep"
    assert can["seeds"] == [11, 12] and can["episodes"] == 2
    assert can["outcomes"] == [False, False], can  # the untrained actor never lifts
    assert can["time_to_lift_s"] == [None, None]  # the sim node's done message carries the task's metrics
    env = GraspEnv(OBJECT, render=True)
    try:
        planned = [env.reset(seed=s)[1]["grasp_pose"][0] for s in (11, 12)]
    finally:
        env.close()
    for got, want in zip(can["grasp_positions"], planned, strict=True):
        assert got is not None, can["grasp_positions"]
        assert np.linalg.norm(np.asarray(got) - want) < 0.002, (got, want)  # measured 0.5 mm
    print(json.dumps(summary))


def test_compare_outcomes_pairs_episodes_by_group_and_seed():
    def summary(outcomes, seeds=None):
        return {"groups": {OBJECT: {"seeds": seeds or list(range(100, 100 + len(outcomes))), "outcomes": outcomes}}}

    first = summary([False] * 6 + [True] * 4)
    second = summary([True] * 10)
    row = compare_outcomes(first, second)[OBJECT]
    assert (row["first"], row["second"], row["only_first"], row["only_second"]) == (4, 10, 0, 6)
    assert row["p_value"] == pytest.approx(2 / 2**6)  # McNemar exact: 6 discordant pairs, all one way
    same = compare_outcomes(first, first)
    assert same["all"]["p_value"] == 1.0 and same["all"]["episodes"] == 10
    # Only the seeds both ran are paired.
    partial = compare_outcomes(first, summary([True, True], seeds=[105, 106]))[OBJECT]
    assert (partial["episodes"], partial["first"], partial["only_second"]) == (2, 1, 1)
    with pytest.raises(ValueError, match="share no seed"):
        compare_outcomes(first, summary([True], seeds=[7]))
    with pytest.raises(ValueError, match="share no group"):
        compare_outcomes(first, {"groups": {"sugar_box": {"seeds": [1], "outcomes": [True]}}})
    # A task without groups pairs by seed alone; a summary from before the common format gave
    # "seeds" as [first, last] and the grasp task's groups as "objects".
    flat = compare_outcomes(
        {"seeds": [1000, 1002], "outcomes": [True, False, True]},
        {"seeds": [1000, 1001, 1002], "outcomes": [True, True, True]},
    )
    assert list(flat) == ["all"] and (flat["all"]["episodes"], flat["all"]["only_second"]) == (3, 1)
    old = compare_outcomes({"objects": first["groups"]}, second)
    assert old[OBJECT]["only_second"] == 6
