"""The one node list that `ros2 launch` and `dexstack up` share."""

import ast
from pathlib import Path

import pytest

from dexstack.graph import LAUNCH_ARGS, node_list, parse_launch_args

ROOT = Path(__file__).resolve().parents[1]


def names(values):
    return [n.name for n in node_list(parse_launch_args(values))]


def test_node_sets_per_hardware():
    assert names(["hardware:=mujoco"]) == ["sim", "safety_filter", "policy"]
    assert names(["hardware:=mock"]) == ["mock_hardware", "safety_filter", "policy"]
    assert names(["hardware:=real"]) == ["safety_filter", "policy"]
    assert names(["hardware:=mujoco", "policy:=expert", "record:=true"]) == [
        "sim",
        "safety_filter",
        "expert",
        "recorder",
    ]
    assert names(["policy:=none"]) == ["sim", "safety_filter"]


def test_use_sim_time_follows_hardware_and_real_robot_starts_disabled():
    sim = {n.name: n for n in node_list(parse_launch_args(["hardware:=mujoco"]))}
    real = {n.name: n for n in node_list(parse_launch_args(["hardware:=real"]))}
    assert all(n.parameters["use_sim_time"] for n in sim.values())
    assert not any(n.parameters["use_sim_time"] for n in real.values())
    assert real["safety_filter"].parameters["start_enabled"] is False
    assert real["policy"].parameters["start_enabled"] is False
    assert sim["safety_filter"].parameters["start_enabled"] is True


def test_lockstep_makes_the_policy_answer_observations():
    nodes = {n.name: n for n in node_list(parse_launch_args(["pacing:=lockstep", "policy:=bc@2"]))}
    assert nodes["policy"].parameters["trigger"] == "observation"
    assert nodes["policy"].parameters["policy"] == "bc@2"
    assert nodes["sim"].parameters["pacing"] == "lockstep"


def test_ros_args_are_what_ros2_run_takes():
    sim = node_list(parse_launch_args(["rtf:=2.5"]))[0]
    args = sim.ros_args()
    assert args[:3] == ["--ros-args", "-r", "__node:=sim"]
    assert "rtf:=2.5" in args and "use_sim_time:=true" in args
    assert sim.command()[1:3] == ["-m", "dexstack.ros_nodes.sim_node"]


def test_bad_launch_arguments_are_rejected_clearly():
    with pytest.raises(ValueError, match="unknown launch argument 'hw'"):
        parse_launch_args(["hw:=mujoco"])
    with pytest.raises(ValueError, match="not one of mujoco, real, mock"):
        parse_launch_args(["hardware:=gazebo"])
    with pytest.raises(ValueError, match="NAME:=VALUE"):
        parse_launch_args(["hardware=mujoco"])
    with pytest.raises(ValueError, match="needs hardware:=mujoco"):
        node_list(parse_launch_args(["hardware:=real", "policy:=expert"]))


def test_every_node_has_a_console_script_and_module():
    setup = (ROOT / "setup.py").read_text()
    tree = ast.parse(setup)
    nodes = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.targets[0].id == "NODES")
    declared = {e.value for e in nodes.elts}
    specs = node_list(parse_launch_args(["record:=true"])) + node_list(parse_launch_args(["hardware:=mock"]))
    specs += node_list(parse_launch_args(["policy:=expert"]))
    for spec in specs:
        assert spec.executable in declared
        assert (ROOT / "ros_nodes" / f"{spec.executable}.py").exists()


def test_launch_file_declares_every_argument_from_the_graph():
    text = (ROOT / "launch" / "bringup.launch.py").read_text()
    assert "LAUNCH_ARGS" in text and "node_list" in text
    assert {a.name for a in LAUNCH_ARGS} >= {"hardware", "policy", "task", "rtf", "pacing", "record"}


def test_params_file_goes_to_every_node_before_the_derived_values():
    site = str(ROOT / "config" / "panda_real.yaml")
    nodes = node_list(parse_launch_args(["hardware:=real", f"params_file:={site}"]))
    for node in nodes:
        args = node.ros_args()
        assert args[3:5] == ["--params-file", site]
        assert args.index("--params-file") < args.index("-p")


def test_launch_task_choices_are_the_sim_task_registry():
    from dexstack.graph import LAUNCH_ARGS, TASK_ROBOTS
    from dexstack.sim.tasks import TASKS, task_robot

    task_arg = next(a for a in LAUNCH_ARGS if a.name == "task")
    assert task_arg.choices == tuple(sorted(TASKS))
    assert all(task_robot(name) == TASK_ROBOTS[name] for name in TASKS)
    expert = next(n for n in node_list(parse_launch_args(["policy:=expert", "task:=cue_choice"])) if n.name == "expert")
    assert expert.parameters["task"] == "cue_choice"
