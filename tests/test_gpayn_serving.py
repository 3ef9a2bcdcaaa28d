"""Serving a G-PAYN actor (`policies/gpayn/serving.py`): raw robot inputs (schema-2 manifest) ->
the actor's observation as GraspEnv builds it -> the action applied with GraspEnv's meaning
(`action.py`) and IK on the robot model (`hardware/kinematics.py`) -> joint targets; identical to
what the serving path gave before it stopped building a hand sim; no torch, no simulator; the hand
bringup in `dexstack/graph.py`; and the policy node driving the hand sim through ROS (real DDS, a
real exported actor in a temporary store)."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gpayn_actor import UP_ACTION, export_rising_actor

from dexstack import contract
from dexstack.graph import NodeSpec, node_list, parse_launch_args
from dexstack.hardware.hand_synergy import finger_fractions, finger_targets
from dexstack.hardware.kinematics import RobotKinematics
from dexstack.hardware.profiles import ADROIT, PANDA
from dexstack.images import center_crop_resize
from dexstack.policies.gpayn.action import (
    ACTION_DIM,
    ACTION_NAMES,
    ACTION_SCALES,
    MAX_TRANSLATION,
    IKFailed,
    PalmCommander,
    PalmTarget,
    apply_action,
    integrate_action,
)
from dexstack.policies.gpayn.env import GraspEnv
from dexstack.policies.gpayn.export import GRASP_ENV_READS
from dexstack.policies.gpayn.serving import ObservationBuilder, make_runtime
from dexstack.runtime import ObservationError
from dexstack.sim.hand_scene import HAND_JOINTS, TOUCH_PADS

NAME = "gpayn_serving_test"
POLICY_RATE_HZ = 100.0
REPO = Path(__file__).resolve().parents[1]
SHIPPED = [REPO / "policy_store" / "gpayn_grasp" / v for v in ("1", "2")]
# Recorded with the serving code this module replaced (ServingPolicy, IK on a whole hand sim):
# for each shipped version, one GraspEnv episode of raw robot data (joints, pad normal forces, the
# grasp pose, the camera image centre-cropped to 64x64 as the node now does) and the joint targets
# it commanded, served once per action period ("dt") and at 50 Hz.
GOLDEN = Path(__file__).parent / "data" / "gpayn_serving_golden.npz"
# The policy node that wires schema-2 inputs (latched poses, wrenches) arrives with the family
# registry; the through-ROS tests need it.
NEEDS_NODE = pytest.mark.skipif(
    importlib.util.find_spec("dexstack.families") is None,
    reason="the policy node does not serve schema-2 manifests yet",
)


def shipped_manifest(policy_dir: Path) -> dict:
    # Read directly: the store's validator learns schema 2 with the policy node's side of issue 13.
    return json.loads((policy_dir / "manifest.json").read_text())


def raw_inputs(q: np.ndarray, pad_forces: np.ndarray, grasp: np.ndarray, image: np.ndarray) -> dict[str, np.ndarray]:
    """What the policy node hands the runtime: values by manifest input name (contract §3)."""
    raw = {"joint_states": np.asarray(q, float), "grasp_target": np.asarray(grasp, float), "image": image}
    for pad, force in zip(ADROIT.tactile_pads, pad_forces, strict=True):
        raw[f"tactile/{pad}"] = np.array([0.0, 0.0, force, 0.0, 0.0, 0.0])  # normal force on z
    return raw


# --- same joint targets as before --------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("rate", ["dt", "50hz"])
def test_shipped_policies_command_what_the_replaced_serving_commanded(version, rate):
    policy_dir = SHIPPED[int(version) - 1]
    runtime = make_runtime(
        policy_dir, shipped_manifest(policy_dir), profile=ADROIT, rate_hz=None if rate == "dt" else 50.0
    )
    runtime.reset()
    key = f"v{version}_{rate}"
    with np.load(GOLDEN) as golden:
        for i in range(len(golden[f"{key}_joints"])):
            raw = raw_inputs(
                golden[f"{key}_joints"][i],
                golden[f"{key}_forces"][i],
                golden[f"{key}_grasps"][i],
                golden[f"{key}_images"][i],
            )
            targets = runtime.act(raw)
            assert targets.shape == (1, ADROIT.n_joints)
            assert np.array_equal(targets[0], golden[f"{key}_targets"][i]), (key, i)


def test_shipped_manifests_have_the_schema_2_form():
    for policy_dir in SHIPPED:
        manifest = shipped_manifest(policy_dir)
        assert manifest["schema_version"] == 2 and manifest["family"] == "gpayn"
        inputs = {spec["name"]: spec for spec in manifest["inputs"]}
        assert list(inputs) == ["joint_states", *[f"tactile/{p}" for p in TOUCH_PADS], "grasp_target", "image"]
        assert inputs["joint_states"]["names"] == list(ADROIT.joint_names)
        assert inputs["joint_states"]["max_age_s"] == contract.JOINT_STATE_MAX_AGE_S
        assert all(
            inputs[f"tactile/{p}"]["kind"] == "wrench" and inputs[f"tactile/{p}"]["source"] == contract.tactile_topic(p)
            for p in TOUCH_PADS
        )
        assert inputs["grasp_target"] == {
            "name": "grasp_target",
            "kind": "pose",
            "source": contract.GRASP_TARGET_POSE,
            "shape": [7],
            "dtype": "float64",
            "latched": True,
        }
        assert inputs["image"]["preprocess"] == "center_crop_resize" and inputs["image"]["shape"] == [64, 64, 3]
        for spec in manifest["inputs"]:  # exactly one freshness rule each
            assert ("max_age_s" in spec) != bool(spec.get("latched")), spec
        assert manifest["outputs"] == {
            "kind": "joint_position_chunk",
            "joint_names": list(ADROIT.joint_names),
            "chunk_length": 1,
            "dt": 0.1,
        }
        action = manifest["runtime"]["action"]
        assert action["names"] == list(ACTION_NAMES) and action["scales"] == list(ACTION_SCALES) and action["dt"] == 0.1
        assert {spec["name"] for spec in manifest["runtime"]["observation"]} == {*GRASP_ENV_READS, "image"}
        assert set(manifest["files"]) == {"actor.onnx", "encoder.onnx"}


# --- actions -> joint targets: the meaning GraspEnv trains with ------------------------------------


@pytest.fixture(scope="module")
def kinematics() -> RobotKinematics:
    return RobotKinematics(ADROIT)


@pytest.fixture(scope="module")
def grasp_env():
    """A reset GraspEnv without camera (oracle grasp pose): the reference serving must agree with."""
    env = GraspEnv("potted_meat_can", seed=0, render=False)
    obs, info = env.reset(seed=4)
    yield env, obs, info
    env.close()


def test_graspenv_and_serving_give_the_same_joint_targets_for_the_same_state_and_action(kinematics):
    env = GraspEnv("sugar_box", seed=0, render=False)
    try:
        env.reset(seed=2)
        rng = np.random.default_rng(1)
        commander = PalmCommander(kinematics)
        for step in range(8):
            state = PalmTarget(*env.palm_target, env._arm_q.copy(), env._fractions.copy())
            q = env.sim.joint_positions()
            action = rng.uniform(-1, 1, ACTION_DIM)
            expected, ik = apply_action(kinematics, state, action, q[6:])
            commander.target = copy.deepcopy(state)
            served = commander.command(action, q)
            _, _, terminated, truncated, info = env.step(action)
            assert ik.success and not info["ik_failed"]
            commanded = PalmTarget(*env.palm_target, env._arm_q, env._fractions).joint_targets()
            assert np.array_equal(commanded, expected.joint_targets()) and np.array_equal(served, commanded), step
            assert not (terminated or truncated)
    finally:
        env.close()


def test_zero_action_holds_and_plus_x_moves_the_palm_plus_x(kinematics, grasp_env):
    env, _, _ = grasp_env
    q = env.sim.joint_positions()
    commander = PalmCommander(kinematics)
    held = commander.command(np.zeros(ACTION_DIM), q)
    np.testing.assert_allclose(held[:6], q[:6], atol=2e-3)  # the arm stays (IK absorbs the wrist's sag)
    assert np.abs(held[6:] - q[6:]).max() < 0.02  # fingers: the open synergy the joints rest near
    # The palm target is where the palm is, within IK's 0.1 mm convergence.
    np.testing.assert_allclose(kinematics.site_pose(held)[0], kinematics.site_pose(q)[0], atol=1e-4)

    commander.reset()
    plus_x = np.zeros(ACTION_DIM)
    plus_x[0] = 1.0
    palm0, quat0 = kinematics.site_pose(q)
    targets = commander.command(plus_x, q)
    palm1, quat1 = kinematics.site_pose(targets)
    np.testing.assert_allclose(palm1 - palm0, [MAX_TRANSLATION, 0.0, 0.0], atol=1e-3)  # IK within 1 mm
    assert abs(abs(float(quat1 @ quat0)) - 1.0) < 1e-3  # orientation kept
    # A fraction of a period (a faster node) moves a fraction of the step, from the commanded target.
    half = commander.command(plus_x, targets, step_fraction=0.5)
    np.testing.assert_allclose(kinematics.site_pose(half)[0] - palm0, [1.5 * MAX_TRANSLATION, 0, 0], atol=1e-3)
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
    np.testing.assert_array_equal(commander.target.fractions, before.fractions)
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
        expected_pos, expected_quat, _ = integrate_action(position, quaternion, np.zeros(5), action, ACTION_SCALES)
        got_pos, got_quat = env.palm_target
        assert np.array_equal(got_pos, expected_pos) and np.array_equal(got_quat, expected_quat)


def test_finger_fractions_invert_the_synergy():
    fractions = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(finger_fractions(finger_targets(fractions)), fractions, atol=1e-12)
    with pytest.raises(ValueError, match="24 finite"):
        finger_fractions(np.zeros(20))


# --- raw inputs -> the actor's observation ---------------------------------------------------------


def test_observations_from_raw_inputs_equal_graspenvs(kinematics, grasp_env):
    import mujoco

    env, _, info = grasp_env
    # After mj_step MuJoCo's site poses and contacts are those of the step's start; recompute them
    # for the current joints so that GraspEnv's observation describes the state we read.
    mujoco.mj_forward(env.sim.model, env.sim.data)
    obs_env = env._observation()
    manifest = shipped_manifest(SHIPPED[1])
    vectors = [spec for spec in manifest["runtime"]["observation"] if spec["kind"] == "vector"]
    builder = ObservationBuilder(vectors, manifest["inputs"], kinematics)
    grasp = np.concatenate(info["grasp_pose"])
    raw = raw_inputs(env.sim.joint_positions(), env.sim.pad_forces(), grasp, np.zeros((64, 64, 3), np.uint8))
    obs = builder.build(raw)
    assert set(obs) == {"hand_joints", "touch", "ee_pose", "grasp_center", "grasp_center_in_palm"}
    for key, value in obs.items():
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, obs_env[key], atol=2e-6, err_msg=key)
    # Pads in contact: the flags follow the contract's threshold.
    pressed = builder.build(raw_inputs(env.sim.joint_positions(), [0.04, 0.06, 0.08, 0.1, 0.12], grasp, raw["image"]))
    np.testing.assert_array_equal(pressed["touch"][:5], [0, 1, 1, 1, 1])
    for bad in ([np.nan, 0, 0, 1, 0, 0, 0], [0.0, 0.02, 0.1, 0, 0, 0, 0]):
        with pytest.raises(ObservationError, match="grasp pose on /grasp/target_pose is not finite or not a rotation"):
            builder.build(dict(raw, grasp_target=np.array(bad, float)))
    with pytest.raises(ValueError, match="unknown read"):
        ObservationBuilder([dict(vectors[0], read="velocity")], manifest["inputs"], kinematics)
    with pytest.raises(ValueError, match="not a pose input"):
        ObservationBuilder([dict(vectors[3], input="joint_states")], manifest["inputs"], kinematics)


def test_center_crop_resize_reproduces_the_square_render():
    """The 160x120 camera cropped and resized to 64x64 (the node's `preprocess`) shows what
    GraspEnv's 64x64 render of the same camera shows; stretching the whole frame does not."""
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


# --- an exported actor ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory, grasp_env):
    """The shared test actor (`gpayn_actor.py`): action ~UP_ACTION on palm_z, ~0 elsewhere, so the
    hand should rise slowly, whatever it sees."""
    env, obs, _ = grasp_env
    return export_rising_actor(obs, env.observation_spec(), tmp_path_factory.mktemp("gpayn_export") / "actor")


def test_export_writes_the_shipped_form(exported):
    _, manifest = exported
    shipped = shipped_manifest(SHIPPED[1])
    assert manifest["inputs"] == shipped["inputs"] and manifest["outputs"] == shipped["outputs"]
    drop_stats = lambda specs: [{k: v for k, v in s.items() if k != "normalization"} for s in specs]  # noqa: E731
    assert drop_stats(manifest["runtime"]["observation"]) == drop_stats(shipped["runtime"]["observation"])
    assert manifest["runtime"]["action"] == shipped["runtime"]["action"]


def test_serving_acts_on_raw_inputs_at_the_node_rate(exported, kinematics, grasp_env):
    out, manifest = exported
    env, _, info = grasp_env
    runtime = make_runtime(out, manifest, profile=ADROIT, rate_hz=50.0)
    assert runtime.step_fraction == pytest.approx(0.2)
    q = env.sim.joint_positions()
    raw = raw_inputs(q, np.zeros(5), np.concatenate(info["grasp_pose"]), np.zeros((64, 64, 3), np.uint8))
    chunk = runtime.act(raw)
    assert chunk.shape == (1, ADROIT.n_joints)
    np.testing.assert_allclose(runtime.last_action, [0, 0, UP_ACTION] + [0] * 8, atol=0.02)
    arm = len(q) - len(HAND_JOINTS)  # IK solved for the arm with the hand at its measured joints
    rise = kinematics.site_pose(np.concatenate([chunk[0][:arm], q[arm:]]))[0] - kinematics.site_pose(q)[0]
    np.testing.assert_allclose(rise, [0, 0, 0.2 * UP_ACTION * MAX_TRANSLATION], atol=2e-4)
    target = copy.deepcopy(runtime.commander.target)
    with pytest.raises(ObservationError, match="not a rotation"):
        runtime.act(dict(raw, grasp_target=np.zeros(7)))
    assert np.array_equal(runtime.commander.target.position, target.position)  # nothing changed
    runtime.reset()
    assert runtime.commander.target is None
    with pytest.raises(ValueError, match="joint_position_chunk over panda's joints"):
        make_runtime(out, manifest, profile=PANDA, rate_hz=None)
    with pytest.raises(ValueError, match="rate_hz"):
        make_runtime(out, manifest, profile=ADROIT, rate_hz=0.0)


def test_serving_path_imports_neither_torch_nor_the_simulator():
    """Build the runtime from the shipped manifest and act once, in a fresh interpreter."""
    script = (
        "import json, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from dexstack.hardware.profiles import ADROIT\n"
        "from dexstack.policies.gpayn.serving import make_runtime\n"
        f"d = Path({str(SHIPPED[1])!r})\n"
        "rt = make_runtime(d, json.loads((d / 'manifest.json').read_text()), profile=ADROIT, rate_hz=50.0)\n"
        "q = np.zeros(30); q[1] = 0.05\n"
        "raw = {'joint_states': q, 'grasp_target': np.array([0.0, 0.02, 0.08, 0.0, 1.0, 0.0, 0.0]),\n"
        "       'image': np.zeros((64, 64, 3), np.uint8), **{f'tactile/{p}': np.zeros(6) for p in ADROIT.tactile_pads}}\n"
        "assert rt.act(raw).shape == (1, 30)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'dexstack.sim')))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


# --- bringup ------------------------------------------------------------------------------------


def _names(args):
    return [(n.name, n.executable) for n in node_list(parse_launch_args(args))]


def test_adroit_bringup_starts_the_hand_sim_and_grasp_planner():
    hand = [("sim", "sim_node"), ("grasp_planner", "grasp_planner_node"), ("safety_filter", "safety_filter")]
    assert _names(["profile:=adroit"]) == hand  # the Panda's default policy does not drive the hand
    assert _names(["task:=grasp", "policy:=gpayn@2"]) == hand + [("policy", "policy_node")]
    nodes = {
        n.name: n
        for n in node_list(parse_launch_args(["task:=grasp", "policy:=gpayn", "pacing:=lockstep", "object:=sugar_box"]))
    }
    assert all(n.parameters.get("profile", "adroit") == "adroit" for n in nodes.values())
    assert nodes["sim"].parameters["object"] == "sugar_box" and nodes["sim"].parameters["pacing"] == "lockstep"
    assert nodes["policy"].parameters["trigger"] == "observation"
    assert _names(["profile:=adroit", "hardware:=mock", "policy:=g"])[:2] == [
        ("mock_hardware", "mock_hardware"),
        ("grasp_planner", "grasp_planner_node"),
    ]
    assert _names(["policy:=none"]) == [("sim", "sim_node"), ("safety_filter", "safety_filter")]  # Panda unchanged
    with pytest.raises(ValueError, match="runs the hand's 'grasp' task, not the Panda task task:=cue_choice"):
        node_list(parse_launch_args(["profile:=adroit", "task:=cue_choice"]))
    with pytest.raises(ValueError, match="no Adroit hand expert"):
        node_list(parse_launch_args(["task:=grasp", "policy:=expert"]))
    with pytest.raises(ValueError, match="profile:=ur5 is not one of panda, adroit"):
        parse_launch_args(["profile:=ur5"])


# --- through ROS ----------------------------------------------------------------------------------


@NEEDS_NODE
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
    launch_nodes(
        [
            NodeSpec("sim_node", "sim", {"task": "grasp", "max_episode_s": 300.0, "seed": 3}),
            NodeSpec("safety_filter", "safety_filter", sim_time | {"start_enabled": True}),
            NodeSpec("policy_node", "policy", sim_time | {"policy": NAME, "rate": POLICY_RATE_HZ}),
        ]
    )
    node = ros_client.node
    reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    answers, commands, states, poses, diagnostics = [], [], [], [], []
    node.create_subscription(JointTrajectory, ADROIT.policy_output_topic, answers.append, reliable)
    received_at: dict[int, float] = {}  # id(command) -> wall clock, for the report (not asserted)
    node.create_subscription(
        JointTrajectory,
        ADROIT.trajectory_topic,
        lambda m: (commands.append(m), received_at.__setitem__(id(m), time.monotonic())),
        reliable,
    )
    node.create_subscription(JointState, contract.JOINT_STATES, states.append, QoSProfile(depth=50))
    node.create_subscription(PoseStamped, contract.GRASP_TARGET_POSE, poses.append, QOS[contract.QoSKind.LATCHED])
    node.create_subscription(
        DiagnosticArray,
        contract.DIAGNOSTICS,
        lambda m: diagnostics.extend(
            (s.level if isinstance(s.level, int) else ord(s.level), s.message, {kv.key: kv.value for kv in s.values})
            for s in m.status
            if s.name.endswith("/policy")
        ),
        reliable,
    )

    # No grasp planner yet: the node answers every tick with a hold and says why.
    assert ros_client.spin_until(lambda: len(answers) >= 20 and any("grasp_target" in d[1] for d in diagnostics), 45), (
        len(answers),
        diagnostics[-2:],
    )
    assert all(not m.points for m in answers), [(_sec(m.header.stamp), len(m.points)) for m in answers]
    # The filter answers each hold with its own: one point where the hand is commanded (JTC ignores
    # empty trajectories); none of them moves it.
    held = np.array([m.points[0].positions for m in commands if m.points])
    assert all(len(m.points) <= 1 for m in commands), [len(m.points) for m in commands]
    assert not len(held) or np.abs(held - held[0]).max() < 1e-9, np.abs(held - held[0]).max()
    waiting = [d for d in diagnostics if "grasp_target" in d[1]][-1]
    assert waiting[0] == 1 and "waiting for grasp_target on /grasp/target_pose" in waiting[1], waiting
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

    assert ros_client.spin_until(
        lambda: (
            after(commands) and _sec(after(commands)[-1].header.stamp) - _sec(after(commands)[0].header.stamp) >= span_s
        ),
        45,
    ), (len(commands), len(after(answers)))
    # The safety filter may add its own holds (watchdog, start-up) on the controller topic; the
    # relayed policy trajectories are the ones with points.
    served, relayed = after(answers), [m for m in after(commands) if m.points]
    holds = [m for m in served if not m.points]
    assert not holds, (
        f"{len(holds)} holds after the first trajectory (first at "
        f"{_sec(holds[0].header.stamp) - t_first:.3f} s): {diagnostics[-3:]}"
    )
    assert all(len(m.points) == 1 and list(m.joint_names) == list(ADROIT.joint_names) for m in relayed)
    stamps = np.array([_sec(m.header.stamp) for m in relayed])
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert rate >= 50.0, f"{rate:.1f} trajectories per second of sim time"
    dt = relayed[-1].points[0].time_from_start
    assert dt.sec + dt.nanosec * 1e-9 == pytest.approx(0.1)

    # The hand rose as the actor commands (2.5 cm/s), without drifting sideways.
    kinematics = RobotKinematics(ADROIT)
    start = min(states, key=lambda m: abs(_sec(m.header.stamp) - t_first))
    end = states[-1]
    start_palm = kinematics.site_pose(joint_positions(start, ADROIT.joint_names))[0]
    end_palm = kinematics.site_pose(joint_positions(end, ADROIT.joint_names))[0]
    rise, elapsed = end_palm - start_palm, _sec(end.header.stamp) - _sec(start.header.stamp)
    # Bounds, not a rate: sim-time stamps of a realtime run on a loaded machine jitter by ticks.
    assert 0.4 * UP_ACTION * 0.1 * elapsed < rise[2] < 2.0 * UP_ACTION * 0.1 * elapsed, (rise, elapsed)
    assert np.linalg.norm(rise[:2]) < 0.005, rise
    wall = received_at[id(relayed[-1])] - received_at[id(relayed[0])]
    print(
        f"trajectories: {rate:.1f} per sim second over {stamps[-1] - stamps[0]:.2f} s "
        f"({(len(stamps) - 1) / wall:.1f} per wall second, sim/wall {(stamps[-1] - stamps[0]) / wall:.2f}); "
        f"palm rose {rise[2] * 100:.1f} cm in {elapsed:.2f} s (sim); policy answers {len(served)}; node "
        + ", ".join(
            f"{k} {diagnostics[-1][2][k]}"
            for k in (
                "inference_ms_p50",
                "inference_ms_p99",
                "compute_ms_p50",
                "compute_ms_p99",
                "loop_period_ms_p50",
                "loop_jitter_ms_p99",
            )
        )
    )


def _sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@NEEDS_NODE
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
        String,
        contract.SIM_EPISODE,
        lambda m: episode_starts.extend([info["stamp"]] if (info := json.loads(m.data))["status"] == "running" else []),
        QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    chunks = lambda: [m for m in answers if m.points]  # noqa: E731
    assert ros_client.spin_until(lambda: len(chunks()) >= 12, 50), (len(answers), len(chunks()))
    # A stamp may be answered more than once only by re-sending the same answer (the sim asks again
    # when an answer is lost, e.g. while DDS discovery completes at start-up): never recomputed.
    by_answer: dict[float, list] = {}
    for m in answers:
        by_answer.setdefault(_sec(m.header.stamp), []).append(
            [(tuple(p.positions), p.time_from_start.sec, p.time_from_start.nanosec) for p in m.points]
        )
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
            run = matched[i : i + 5]
            if np.allclose(np.diff(run), 0.1, atol=1e-6) and not any(run[0] < s <= run[-1] for s in episode_starts):
                return run
        return None

    assert ros_client.spin_until(lambda: five_ticks() is not None, 30), (
        served[:3],
        [_sec(m.header.stamp) for m in states[:3]],
    )
    kinematics = RobotKinematics(ADROIT)
    by_stamp = {round(_sec(m.header.stamp), 6): m for m in states}
    ticks = five_ticks()
    heights = [kinematics.site_pose(joint_positions(by_stamp[t], ADROIT.joint_names))[0][2] for t in ticks]
    rise_per_tick = (heights[-1] - heights[0]) / round((ticks[-1] - ticks[0]) / 0.1)
    assert 0.6 * UP_ACTION * MAX_TRANSLATION < rise_per_tick < 1.2 * UP_ACTION * MAX_TRANSLATION, heights
