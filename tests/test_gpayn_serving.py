"""Serving a G-PAYN actor: the gpayn manifest schema, actions -> joint targets through IK on the
hand model (`policies/gpayn/serving.py`), observations built from robot data as GraspEnv builds
them, the hand bringup in `dexstack/graph.py`, and the policy node driving the hand sim through
ROS (real DDS, a real exported actor in a temporary store)."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
from gpayn_actor import UP_ACTION, export_rising_actor

from dexstack import contract
from dexstack.graph import NodeSpec, node_list, parse_launch_args
from dexstack.hardware.profiles import ADROIT, PANDA
from dexstack.manifest import ManifestError, check_against_profile, validate_manifest
from dexstack.policies.gpayn.env import ACTION_DIM, MAX_TRANSLATION, GraspEnv
from dexstack.policies.gpayn.serving import (
    ACTION_NAMES,
    DEFAULT_SCALES,
    AwaitingInput,
    GraspPose,
    HandKinematics,
    IKFailed,
    ObservationBuilder,
    PalmCommander,
    ServingPolicy,
    annotate_manifest,
    center_crop_resize,
    finger_fractions,
    integrate_action,
)
from dexstack.runtime import ObservationError
from dexstack.sim.hand_core import finger_targets
from dexstack.sim.hand_scene import HAND_JOINTS, TOUCH_PADS

SHA = "ab" * 32
NAME = "gpayn_serving_test"
POLICY_RATE_HZ = 100.0


# --- manifest schema --------------------------------------------------------------------------

def gpayn_manifest() -> dict:
    """A stored gpayn manifest as serving needs it (what annotate_manifest makes of an export)."""
    def vector(name, n, **read):
        return {"name": name, "kind": "vector", "shape": [n], "dtype": "float32",
                "normalization": {"type": "mean_std", "mean": [0.0] * n, "std": [1.0] * n}, **read}

    return {
        "schema_version": 1, "name": "gpayn_grasp", "version": "1", "family": "gpayn", "robot_profile": "adroit",
        "graphs": {"actor": "actor.onnx", "encoder": "encoder.onnx"},
        "inputs": [
            vector("hand_joints", 24, read="joint_positions", source=contract.JOINT_STATES, names=list(HAND_JOINTS)),
            vector("touch", 10, read="tactile", source="/tactile", pads=list(TOUCH_PADS), layout="flags_and_forces"),
            vector("ee_pose", 7, read="palm_pose", source=contract.JOINT_STATES),
            vector("grasp_center", 3, read="grasp_position", source=contract.GRASP_TARGET_POSE),
            vector("grasp_center_in_palm", 3, read="grasp_position_in_palm", source=contract.GRASP_TARGET_POSE),
            {"name": "image", "kind": "rgb", "source": contract.camera_color_topic("scene"), "shape": [64, 64, 3],
             "dtype": "uint8", "normalization": {"type": "scale", "scale": 1 / 255}, "preprocess": "center_crop_resize"},
        ],
        "outputs": {"kind": "action", "action_dim": 11, "range": [-1.0, 1.0], "dt": 0.1,
                    "names": list(ACTION_NAMES), "scales": list(DEFAULT_SCALES)},
        "files": {"actor.onnx": SHA, "encoder.onnx": SHA},
        "provenance": {"code_commit": "test", "created": "2025-01-02T03:04:05+00:00"},
        "evaluation": {},
        "runtime": {"actor_inputs": ["hand_joints", "touch", "ee_pose", "grasp_center", "grasp_center_in_palm",
                                     "visual"]},
    }


def _edit(path: str, value):
    def mutate(m: dict) -> None:
        *parents, last = path.split(".")
        target = m
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = value
    return mutate


def test_gpayn_manifest_is_valid_and_fits_the_hand():
    m = gpayn_manifest()
    validate_manifest(m)
    check_against_profile(m, ADROIT)
    m["outputs"]["names"] = m["outputs"]["scales"] = None  # null: the serving side's defaults
    m["inputs"][1].update(layout="forces", shape=[5], normalization={"type": "mean_std", "mean": 0.0, "std": 1.0})
    validate_manifest(m)
    check_against_profile(m, ADROIT)


GPAYN_BAD = [
    ("inputs.0.kind", "lidar", "inputs[0] ('hand_joints').kind is 'lidar'; expected one of ['joint_positions', 'rgb', "
                               "'depth', 'vector']"),
    ("inputs.0.read", "wrench", "inputs[0] ('hand_joints').read is 'wrench'"),
    ("inputs.0.shape", [24, 1], "shape must be [n] for kind 'vector'"),
    ("inputs.0.dtype", "uint8", "dtype must be a float type for kind 'vector'"),
    ("inputs.0.names", ["WRJ1"], "inputs[0] ('hand_joints'): 1 names but shape [24]"),
    ("inputs.1.shape", [5], "layout 'flags_and_forces' of 5 pads has 10 values, shape is [5]"),
    ("inputs.1.layout", "bits", "layout is 'bits'"),
    ("inputs.2.shape", [6], "read 'palm_pose' has 7 values, shape is [6]"),
    ("inputs.3.shape", [7], "read 'grasp_position' has 3 values, shape is [7]"),
    ("inputs.5.preprocess", "stretch", "preprocess is 'stretch'"),
    ("outputs.kind", "joint_position_chunk", "outputs.kind is 'joint_position_chunk'; expected one of ['action']"),
    ("outputs.action_dim", 0, "outputs.action_dim must be a positive integer"),
    ("outputs.names", ["palm_x"] * 11, "outputs.names has duplicate entries"),
    ("outputs.names", list(ACTION_NAMES[:10]), "outputs.names has 10 entries, action_dim is 11"),
    ("outputs.scales", [0.01] * 10 + [0.0], "outputs.scales must all be > 0"),
    ("outputs.scales", [0.01] * 3, "outputs.scales has 3 entries, expected 11"),
    ("outputs.range", [1.0, -1.0], "outputs.range must be [low, high] with high > low"),
    ("outputs.dt", 0, "outputs.dt must be a positive number of seconds"),
]


@pytest.mark.parametrize(("path", "value", "message"), GPAYN_BAD)
def test_gpayn_manifest_refuses_bad_kinds_and_shapes(path, value, message):
    m = gpayn_manifest()
    _edit(path, value)(m)
    with pytest.raises(ManifestError) as info:
        validate_manifest(m)
    assert message in str(info.value)


def test_gpayn_kinds_stay_out_of_other_families():
    m = gpayn_manifest()
    m["family"] = "bc"
    with pytest.raises(ManifestError, match=r"kind is 'vector'; expected one of \['joint_positions', 'rgb', 'depth'\]"):
        validate_manifest(m)
    m["inputs"] = m["inputs"][5:]
    with pytest.raises(ManifestError, match=r"preprocess 'center_crop_resize' is only served for families \['gpayn'\]"):
        validate_manifest(m)
    del m["inputs"][0]["preprocess"]
    with pytest.raises(ManifestError, match=r"outputs.kind is 'action'; expected one of \['joint_position_chunk'\]"):
        validate_manifest(m)


def test_gpayn_manifest_against_the_profile():
    m = gpayn_manifest()
    with pytest.raises(ManifestError, match="policy is for robot profile 'adroit', not 'panda'"):
        check_against_profile(m, PANDA)
    cases = [
        ("inputs.0.names", list(HAND_JOINTS[:-1]) + ["FFJ9"], r"joint\(s\) \['FFJ9'\] are not joints"),
        ("inputs.0.source", "/robot/joints", "read 'joint_positions' comes from '/joint_states', not '/robot/joints'"),
        ("inputs.1.pads", ["thumb", "index", "middle", "ring", "palm"], r"pad\(s\) \['palm'\] are not tactile pads"),
        ("inputs.1.source", "/touch", "tactile source '/touch' does not prefix the pad topics"),
        ("inputs.3.source", "/grasp/pose", "read 'grasp_position' comes from '/grasp/target_pose'"),
        ("inputs.5.shape", [128, 128, 3], "cropped and resized from camera 'scene' .* publishes only 120x160"),
        ("inputs.5.source", contract.camera_color_topic("wrist"), "is not a rgb topic of robot profile 'adroit'"),
    ]
    for path, value, message in cases:
        bad = gpayn_manifest()
        _edit(path, value)(bad)
        validate_manifest(bad)
        with pytest.raises(ManifestError, match=message):
            check_against_profile(bad, ADROIT)
    exact = gpayn_manifest()  # without preprocessing the image must be the camera's size
    del exact["inputs"][5]["preprocess"]
    with pytest.raises(ManifestError, match="expects 64x64 .* publishes 120x160"):
        check_against_profile(exact, ADROIT)


# --- actions -> joint targets -----------------------------------------------------------------

@pytest.fixture(scope="module")
def kinematics() -> HandKinematics:
    return HandKinematics()


@pytest.fixture(scope="module")
def grasp_env():
    """A reset GraspEnv without camera (oracle grasp pose): the reference serving must agree with."""
    env = GraspEnv("potted_meat_can", seed=0, render=False)
    obs, info = env.reset(seed=4)
    yield env, obs, info
    env.close()


def test_zero_action_holds_and_plus_x_moves_the_palm_plus_x(kinematics, grasp_env):
    env, _, _ = grasp_env
    q = env.sim.joint_positions()
    commander = PalmCommander(kinematics)
    held = commander.command(np.zeros(ACTION_DIM), q)
    np.testing.assert_allclose(held[:6], q[:6], atol=2e-3)  # the arm stays (IK absorbs the wrist's sag)
    assert np.abs(held[6:] - q[6:]).max() < 0.02  # fingers: the open synergy the joints rest near
    # The palm target is where the palm is, within IK's 0.1 mm convergence.
    np.testing.assert_allclose(kinematics.palm_pose(held)[0], kinematics.palm_pose(q)[0], atol=1e-4)

    commander.reset()
    plus_x = np.zeros(ACTION_DIM)
    plus_x[0] = 1.0
    palm0, quat0 = kinematics.palm_pose(q)
    targets = commander.command(plus_x, q)
    palm1, quat1 = kinematics.palm_pose(targets)
    np.testing.assert_allclose(palm1 - palm0, [MAX_TRANSLATION, 0.0, 0.0], atol=1e-3)  # IK within 1 mm
    assert abs(abs(float(quat1 @ quat0)) - 1.0) < 1e-3  # orientation kept
    # A fraction of a period (a faster node) moves a fraction of the step, from the commanded target.
    half = commander.command(plus_x, targets, step_fraction=0.5)
    np.testing.assert_allclose(kinematics.palm_pose(half)[0] - palm0, [1.5 * MAX_TRANSLATION, 0, 0], atol=1e-3)
    # Closing the index finger moves only the index joints, towards closed.
    close_index = np.zeros(ACTION_DIM)
    close_index[7] = 1.0
    closed = commander.command(close_index, half)
    moved = np.flatnonzero(np.abs(closed[6:] - half[6:]) > 1e-6)
    assert {HAND_JOINTS[i][:2] for i in moved} == {"FF"} and np.all(closed[6:][moved] > half[6:][moved])


def test_ik_failure_raises_and_keeps_the_last_reachable_target(kinematics, grasp_env):
    env, _, _ = grasp_env
    q = env.sim.joint_positions()
    commander = PalmCommander(kinematics)
    commander.command(np.zeros(ACTION_DIM), q)
    before = copy.deepcopy(commander.target)
    up = np.zeros(ACTION_DIM)
    up[2] = 1.0
    with pytest.raises(IKFailed, match="out of reach"):
        commander.command(up, q, step_fraction=100.0)  # 1 m up: beyond the lift's 0.4 m
    np.testing.assert_array_equal(commander.target.position, before.position)
    np.testing.assert_allclose(commander.command(np.zeros(ACTION_DIM), q)[:6], before.arm_q, atol=1e-6)


def test_bad_actions_are_refused(kinematics, grasp_env):
    q = grasp_env[0].sim.joint_positions()
    commander = PalmCommander(kinematics)
    with pytest.raises(ValueError, match=r"shape \(11,\)"):
        commander.command(np.zeros(6), q)
    with pytest.raises(ValueError, match="finite"):
        commander.command(np.full(ACTION_DIM, np.nan), q)
    with pytest.raises(TypeError, match="numeric"):
        commander.command(["left"] * ACTION_DIM, q)
    with pytest.raises(ValueError, match="step_fraction"):
        commander.command(np.zeros(ACTION_DIM), q, step_fraction=0.0)
    with pytest.raises(ValueError, match="30 finite"):
        commander.command(np.zeros(ACTION_DIM), q[:24])
    with pytest.raises(ValueError, match="scales"):
        PalmCommander(kinematics, scales=[0.01] * 10)


def test_action_integration_is_graspenvs(grasp_env):
    env, _, _ = grasp_env
    rng = np.random.default_rng(0)
    for _ in range(3):
        position, quaternion = env.palm_target
        action = rng.uniform(-1, 1, ACTION_DIM)
        _, _, _, _, info = env.step(action)
        assert not info["ik_failed"]
        expected_pos, expected_quat, _ = integrate_action(position, quaternion, np.zeros(5), action, DEFAULT_SCALES)
        got_pos, got_quat = env.palm_target
        np.testing.assert_allclose(got_pos, expected_pos, atol=1e-12)
        np.testing.assert_allclose(got_quat, expected_quat, atol=1e-12)


def test_finger_fractions_invert_the_synergy():
    fractions = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(finger_fractions(finger_targets(fractions)), fractions, atol=1e-12)
    with pytest.raises(ValueError, match="24 finite"):
        finger_fractions(np.zeros(20))


def test_observations_from_robot_data_equal_graspenvs(kinematics, grasp_env):
    import mujoco

    env, _, info = grasp_env
    # After mj_step MuJoCo's site poses and contacts are those of the step's start; recompute them
    # for the current joints so that GraspEnv's observation describes the state we read.
    mujoco.mj_forward(env.sim.model, env.sim.data)
    obs_env = env._observation()
    builder = ObservationBuilder(gpayn_manifest()["inputs"][:5], kinematics)
    forces = dict(zip(TOUCH_PADS, env.sim.pad_forces(), strict=True))
    grasp = GraspPose(0, np.asarray(info["grasp_pose"][0]), np.asarray(info["grasp_pose"][1]))
    obs = builder.build(env.sim.joint_positions(), forces, grasp, {})
    assert set(obs) == {"hand_joints", "touch", "ee_pose", "grasp_center", "grasp_center_in_palm"}
    for key, value in obs.items():
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, obs_env[key], atol=2e-6, err_msg=key)
    # Pads in contact: the flags follow the contract's threshold.
    pressed = builder.build(env.sim.joint_positions(), {p: 0.04 + 0.02 * i for i, p in enumerate(TOUCH_PADS)},
                            grasp, {})
    np.testing.assert_array_equal(pressed["touch"][:5], [0, 1, 1, 1, 1])
    with pytest.raises(AwaitingInput, match="no grasp pose yet on /grasp/target_pose"):
        builder.build(env.sim.joint_positions(), forces, None, {})
    depth = {"name": "depth", "kind": "depth", "source": contract.camera_depth_topic("scene"), "shape": [120, 160]}
    with pytest.raises(ValueError, match="cannot be served by gpayn"):
        ObservationBuilder([depth], kinematics)


def test_center_crop_resize_reproduces_the_square_render():
    """The 160x120 camera cropped and resized to 64x64 shows what GraspEnv's 64x64 render of the same
    camera shows; stretching the whole frame does not."""
    import cv2

    env = GraspEnv("potted_meat_can", seed=0, render=True, image_size=(64, 64))
    try:
        obs, _ = env.reset(seed=1)
        full, _ = env.sim.render()
    finally:
        env.close()
    assert full.shape == (120, 160, 3)
    served = center_crop_resize(full, 64, 64)
    assert served.shape == (64, 64, 3) and served.dtype == np.uint8
    error = np.abs(served.astype(float) - obs["image"].astype(float)).mean()
    stretched = cv2.resize(full, (64, 64), interpolation=cv2.INTER_AREA)
    stretch_error = np.abs(stretched.astype(float) - obs["image"].astype(float)).mean()
    assert error < 6.0 and error < 0.5 * stretch_error, (error, stretch_error)
    with pytest.raises(ObservationError, match="smaller than the policy's"):
        center_crop_resize(full[:32, :32], 64, 64)


# --- an exported actor ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory, grasp_env):
    """The shared test actor (`gpayn_actor.py`): action ~UP_ACTION on palm_z, ~0 elsewhere, so the
    hand should rise slowly, whatever it sees."""
    env, obs, _ = grasp_env
    return export_rising_actor(obs, env.observation_spec(), tmp_path_factory.mktemp("gpayn_export") / "actor")


def test_annotated_export_is_a_valid_store_manifest(exported, dexstack_home, monkeypatch):
    from dexstack.store import PolicyStore

    out, manifest = exported
    reads = {spec["name"]: spec.get("read") for spec in manifest["inputs"]}
    assert reads == {"hand_joints": "joint_positions", "touch": "tactile", "ee_pose": "palm_pose",
                     "grasp_center": "grasp_position", "grasp_center_in_palm": "grasp_position_in_palm",
                     "image": None}
    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")
    loaded = PolicyStore().publish(out, name=NAME)
    assert loaded.manifest["outputs"]["names"] == list(ACTION_NAMES)
    with pytest.raises(ValueError, match="not a GraspEnv observation key"):
        annotate_manifest(dict(manifest, inputs=[dict(manifest["inputs"][0], name="velocity")]))


def test_action_layout_is_the_one_the_trainer_exports():
    from dexstack.policies.gpayn import train

    assert list(ACTION_NAMES) == list(train.ACTION_NAMES)
    np.testing.assert_array_equal(DEFAULT_SCALES, train.ACTION_SCALES)


def test_serving_policy_acts_only_with_a_grasp_pose(exported, grasp_env):
    out, manifest = exported
    env, _, info = grasp_env
    policy = ServingPolicy(out, manifest, ADROIT, control_period_s=0.02)
    assert policy.step_fraction == pytest.approx(0.2)
    assert [s["source"] for s in policy.raw_inputs] == [contract.JOINT_STATES] + [
        contract.tactile_topic(p) for p in TOUCH_PADS] + [contract.camera_color_topic("scene")]
    q = env.sim.joint_positions()
    raw = {"joint_states": q, **{f"tactile/{p}": np.zeros(1) for p in TOUCH_PADS},
           "camera/image": np.zeros((120, 160, 3), np.uint8)}
    with pytest.raises(AwaitingInput):
        policy.act(raw)
    policy.episode_started(5_000)
    policy.set_pose(contract.GRASP_TARGET_POSE, 4_000, *info["grasp_pose"])  # planned before this episode
    with pytest.raises(AwaitingInput):
        policy.act(raw)
    policy.set_pose(contract.GRASP_TARGET_POSE, 6_000, *info["grasp_pose"])
    chunk = policy.act(raw)
    assert chunk.shape == (1, ADROIT.n_joints)
    np.testing.assert_allclose(policy.last_action, [0, 0, UP_ACTION] + [0] * 8, atol=0.02)
    kinematics = HandKinematics()
    arm = len(q) - len(HAND_JOINTS)  # IK solved for the arm with the hand at its measured joints
    rise = kinematics.palm_pose(np.concatenate([chunk[0][:arm], q[arm:]]))[0] - kinematics.palm_pose(q)[0]
    np.testing.assert_allclose(rise, [0, 0, 0.2 * UP_ACTION * MAX_TRANSLATION], atol=2e-4)
    assert policy.node_manifest["outputs"] == {"kind": "joint_position_chunk", "joint_names": list(ADROIT.joint_names),
                                               "chunk_length": 1, "dt": 0.1, "action": manifest["outputs"]}
    policy.set_pose(contract.GRASP_TARGET_POSE, 7_000, [np.nan, 0, 0], [1, 0, 0, 0])
    with pytest.raises(ObservationError, match="not finite") as caught:
        policy.act(raw)
    assert not isinstance(caught.value, AwaitingInput)
    policy.episode_started(8_000)
    with pytest.raises(ValueError, match="drives the 'adroit' hand"):
        ServingPolicy(out, manifest, PANDA)


# --- bringup ------------------------------------------------------------------------------------

def _names(args):
    return [(n.name, n.executable) for n in node_list(parse_launch_args(args))]


def test_adroit_bringup_starts_the_hand_sim_and_grasp_planner():
    hand = [("sim", "sim_node"), ("grasp_planner", "grasp_planner_node"), ("safety_filter", "safety_filter")]
    assert _names(["profile:=adroit"]) == hand  # the Panda's default policy does not drive the hand
    assert _names(["task:=grasp", "policy:=gpayn@2"]) == hand + [("policy", "policy_node")]
    nodes = {n.name: n for n in node_list(parse_launch_args(["task:=grasp", "policy:=gpayn", "pacing:=lockstep",
                                                             "object:=sugar_box"]))}
    assert all(n.parameters.get("profile", "adroit") == "adroit" for n in nodes.values())
    assert nodes["sim"].parameters["object"] == "sugar_box" and nodes["sim"].parameters["pacing"] == "lockstep"
    assert nodes["policy"].parameters["trigger"] == "observation"
    assert _names(["profile:=adroit", "hardware:=mock", "policy:=g"])[:2] == [
        ("mock_hardware", "mock_hardware"), ("grasp_planner", "grasp_planner_node")]
    assert _names(["policy:=none"]) == [("sim", "sim_node"), ("safety_filter", "safety_filter")]  # Panda unchanged
    with pytest.raises(ValueError, match="runs the hand's 'grasp' task, not the Panda task task:=cue_choice"):
        node_list(parse_launch_args(["profile:=adroit", "task:=cue_choice"]))
    with pytest.raises(ValueError, match="no Adroit hand expert"):
        node_list(parse_launch_args(["task:=grasp", "policy:=expert"]))
    with pytest.raises(ValueError, match="profile:=ur5 is not one of panda, adroit"):
        parse_launch_args(["profile:=ur5"])


# --- through ROS ----------------------------------------------------------------------------------

@pytest.mark.ros
def test_policy_node_drives_the_hand_through_ros(exported, dexstack_home, monkeypatch, launch_nodes, ros_client):
    """Hand sim (realtime) + safety filter + policy node at 60 Hz: empty trajectories (holds, WARN)
    until the grasp planner's pose arrives, then one-point trajectories reach the hand controller
    at >= 50 per second of the sim's clock with no holds, and the hand rises as the actor says."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from dexstack.ros_nodes.common import QOS, joint_positions
    from dexstack.store import PolicyStore

    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")
    PolicyStore().publish(exported[0], name=NAME)
    sim_time = {"use_sim_time": True, "profile": ADROIT.name}
    launch_nodes([NodeSpec("sim_node", "sim", {"task": "grasp", "max_episode_s": 300.0, "seed": 3}),
                  NodeSpec("safety_filter", "safety_filter", sim_time | {"start_enabled": True}),
                  NodeSpec("policy_node", "policy", sim_time | {"policy": NAME, "rate": POLICY_RATE_HZ})])
    node = ros_client.node
    reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    answers, commands, states, poses, diagnostics = [], [], [], [], []
    node.create_subscription(JointTrajectory, ADROIT.policy_output_topic, answers.append, reliable)
    received_at: dict[int, float] = {}  # id(command) -> wall clock, for the report (not asserted)
    node.create_subscription(JointTrajectory, ADROIT.trajectory_topic,
                             lambda m: (commands.append(m), received_at.__setitem__(id(m), time.monotonic())), reliable)
    node.create_subscription(JointState, contract.JOINT_STATES, states.append, QoSProfile(depth=50))
    node.create_subscription(PoseStamped, contract.GRASP_TARGET_POSE, poses.append, QOS[contract.QoSKind.LATCHED])
    node.create_subscription(DiagnosticArray, contract.DIAGNOSTICS, lambda m: diagnostics.extend(
        (s.level if isinstance(s.level, int) else ord(s.level), s.message, {kv.key: kv.value for kv in s.values})
        for s in m.status if s.name.endswith("/policy")), reliable)

    # No grasp planner yet: the node answers every tick with a hold and says why.
    assert ros_client.spin_until(lambda: len(answers) >= 20 and any("grasp pose" in d[1] for d in diagnostics), 45), \
        (len(answers), diagnostics[-2:])
    assert all(not m.points for m in answers), [(_sec(m.header.stamp), len(m.points)) for m in answers]
    assert not any(m.points for m in commands), [(_sec(m.header.stamp), len(m.points)) for m in commands]
    waiting = [d for d in diagnostics if "grasp pose" in d[1]][-1]
    assert waiting[0] == 1 and waiting[1] == "policy waits: no grasp pose yet on /grasp/target_pose", waiting
    assert waiting[2]["family"] == "gpayn"

    launch_nodes([NodeSpec("grasp_planner_node", "grasp_planner", {})])
    assert ros_client.spin_until(lambda: poses, 45), "no grasp pose from the planner"
    # The node has the pose once it answers with a trajectory (its discovery of the planner may
    # take longer than ours); from then on every tick is a trajectory.
    assert ros_client.spin_until(lambda: any(m.points for m in answers), 10), diagnostics[-1:]
    t_first = _sec(next(m for m in answers if m.points).header.stamp)
    span_s = 2.0

    def after(msgs):
        return [m for m in msgs if _sec(m.header.stamp) >= t_first]

    assert ros_client.spin_until(lambda: after(commands) and
                                 _sec(after(commands)[-1].header.stamp) - _sec(after(commands)[0].header.stamp) >= span_s,
                                 45), (len(commands), len(after(answers)))
    # The safety filter may add its own holds (watchdog, start-up) on the controller topic; the
    # relayed policy trajectories are the ones with points.
    served, relayed = after(answers), [m for m in after(commands) if m.points]
    holds = [m for m in served if not m.points]
    assert not holds, (f"{len(holds)} holds after the first trajectory (first at "
                       f"{_sec(holds[0].header.stamp) - t_first:.3f} s): {diagnostics[-3:]}")
    assert all(len(m.points) == 1 and list(m.joint_names) == list(ADROIT.joint_names) for m in relayed)
    stamps = np.array([_sec(m.header.stamp) for m in relayed])
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert rate >= 50.0, f"{rate:.1f} trajectories per second of sim time"
    dt = relayed[-1].points[0].time_from_start
    assert dt.sec + dt.nanosec * 1e-9 == pytest.approx(0.1)

    # The hand rose as the actor commands (2.5 cm/s), without drifting sideways.
    kinematics = HandKinematics()
    start = min(states, key=lambda m: abs(_sec(m.header.stamp) - t_first))
    end = states[-1]
    start_palm = kinematics.palm_pose(joint_positions(start, ADROIT.joint_names))[0]
    end_palm = kinematics.palm_pose(joint_positions(end, ADROIT.joint_names))[0]
    rise, elapsed = end_palm - start_palm, _sec(end.header.stamp) - _sec(start.header.stamp)
    # Bounds, not a rate: sim-time stamps of a realtime run on a loaded machine jitter by ticks.
    assert 0.4 * UP_ACTION * 0.1 * elapsed < rise[2] < 2.0 * UP_ACTION * 0.1 * elapsed, (rise, elapsed)
    assert np.linalg.norm(rise[:2]) < 0.005, rise
    wall = received_at[id(relayed[-1])] - received_at[id(relayed[0])]
    print(f"trajectories: {rate:.1f} per sim second over {stamps[-1] - stamps[0]:.2f} s "
          f"({(len(stamps) - 1) / wall:.1f} per wall second, sim/wall {(stamps[-1] - stamps[0]) / wall:.2f}); "
          f"palm rose {rise[2] * 100:.1f} cm in {elapsed:.2f} s (sim); policy answers {len(served)}; node "
          + ", ".join(f"{k} {diagnostics[-1][2][k]}" for k in ("inference_ms_p50", "inference_ms_p99", "compute_ms_p50",
                                                             "compute_ms_p99", "loop_period_ms_p50", "loop_jitter_ms_p99")))


def _sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9



@pytest.mark.ros
def test_lockstep_answers_each_observation_once(exported, dexstack_home, monkeypatch, launch_nodes, ros_client):
    """Lockstep pacing: the sim waits for the answer to each observation (joint states, pads and
    camera of one stamp); the node answers each stamp exactly once, with a hold until the grasp
    pose is there and a trajectory after, and the hand rises one action step per tick."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from dexstack.ros_nodes.common import joint_positions
    from dexstack.store import PolicyStore

    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")
    PolicyStore().publish(exported[0], name=NAME)
    specs = node_list(parse_launch_args(["task:=grasp", f"policy:={NAME}", "pacing:=lockstep", "seed:=3"]))
    assert [s.name for s in specs] == ["sim", "grasp_planner", "safety_filter", "policy"]
    launch_nodes(specs)
    reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    answers, states, episode_starts = [], [], []
    ros_client.node.create_subscription(JointTrajectory, ADROIT.policy_output_topic, answers.append, reliable)
    ros_client.node.create_subscription(JointState, contract.JOINT_STATES, states.append, reliable)
    ros_client.node.create_subscription(
        String, contract.SIM_EPISODE,
        lambda m: episode_starts.extend([info["stamp"]] if (info := json.loads(m.data))["status"] == "running" else []),
        QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    chunks = lambda: [m for m in answers if m.points]  # noqa: E731
    assert ros_client.spin_until(lambda: len(chunks()) >= 12, 50), (len(answers), len(chunks()))
    # A stamp may be answered more than once only by re-sending the same answer (the sim asks again
    # when an answer is lost, e.g. while DDS discovery completes at start-up): never recomputed.
    by_answer: dict[float, list] = {}
    for m in answers:
        by_answer.setdefault(_sec(m.header.stamp), []).append(
            [(tuple(p.positions), p.time_from_start.sec, p.time_from_start.nanosec) for p in m.points])
    assert all(all(a == same[0] for a in same) for same in by_answer.values()), "a stamp got two different answers"
    first = answers.index(chunks()[0])
    assert all(m.points for m in answers[first:]), "a hold after the first trajectory"
    served = sorted({_sec(m.header.stamp) for m in answers[first:]})
    np.testing.assert_allclose(np.diff(served), 0.1, atol=1e-6)  # one answer per 10 Hz tick, none skipped
    # Palm height at the observations answered: one action step (2.5 mm) higher per tick, after the lag.
    # Five consecutive answered ticks of one episode whose joint states this client saw (its joint
    # state subscription may finish discovery seconds late on a loaded machine: keep watching).
    def five_ticks() -> list[float] | None:
        seen = {round(_sec(m.header.stamp), 6) for m in states}  # to the microsecond, not float-exact
        matched = sorted({round(_sec(m.header.stamp), 6) for m in answers if m.points} & seen)
        for i in range(len(matched) - 4, -1, -1):
            run = matched[i:i + 5]
            if np.allclose(np.diff(run), 0.1, atol=1e-6) and not any(run[0] < s <= run[-1] for s in episode_starts):
                return run
        return None

    assert ros_client.spin_until(lambda: five_ticks() is not None, 30), (served[:3], [_sec(m.header.stamp) for m in states[:3]])
    kinematics = HandKinematics()
    by_stamp = {round(_sec(m.header.stamp), 6): m for m in states}
    ticks = five_ticks()
    heights = [kinematics.palm_pose(joint_positions(by_stamp[t], ADROIT.joint_names))[0][2] for t in ticks]
    rise_per_tick = (heights[-1] - heights[0]) / round((ticks[-1] - ticks[0]) / 0.1)
    assert 0.6 * UP_ACTION * MAX_TRANSLATION < rise_per_tick < 1.2 * UP_ACTION * MAX_TRANSLATION, heights


def test_gpayn_serving_path_imports_no_torch(exported, dexstack_home, monkeypatch):
    """The policy node's load of a gpayn version (store, runtime, IK model) and one act stay torch-free."""
    import subprocess
    import sys

    from dexstack.store import PolicyStore

    monkeypatch.setenv("DEXSTACK_BUNDLED_STORE", "")
    PolicyStore().publish(exported[0], name=NAME)
    script = (
        "import sys, numpy as np\n"
        "from dexstack.ros_nodes import policy_node\n"
        "from dexstack.hardware.profiles import ADROIT\n"
        f"p = policy_node.load_policy('{NAME}', ADROIT, 50.0)\n"
        "p.runtime.set_pose('/grasp/target_pose', 1, [0.0, 0.02, 0.08], [0.0, 1.0, 0.0, 0.0])\n"
        "q = np.array(ADROIT.home)\n"
        "q[1] = 0.05\n"
        "raw = {'joint_states': q, **{f'tactile/{pad}': np.zeros(1) for pad in ADROIT.tactile_pads},"
        " 'camera/image': np.zeros((120, 160, 3), np.uint8)}\n"
        "print(p.runtime.act(raw).shape, round(p.runtime.step_fraction, 9), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(1,", "30)", "0.2", "False"]
