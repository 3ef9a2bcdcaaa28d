"""What runs: the launch arguments and the node list, in one place.

`launch/bringup.launch.py` turns `node_list()` into launch_ros Node actions for `ros2 launch`;
`dexstack up` spawns the same list as processes with `--ros-args` on machines that only have
the pip ROS 2 wheels. Nothing else decides which nodes run or with which parameters.

Two robots: the Panda (`profile:=panda`, its sim tasks) and the G-PAYN Adroit hand
(`profile:=adroit`, or `task:=grasp`, which implies it); which robot each sim task runs on is
`dexstack/tasks.json` (`TASK_ROBOTS`), the data file the sim's task registry reads too. One sim
node serves both (for the hand: the grasp task, `object:=` from the sim's catalogue), and the hand
adds the grasp planner; the safety filter, the policy node and the recorder are the same nodes
on the adroit profile. The
Panda's default policy (`bc_pick_lift`) does not drive the hand, so with the adroit profile
and `policy` left at that default no policy node starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dexstack import contract

PACKAGE = "dexstack"
DEFAULT_POLICY = "bc_pick_lift"
# Sim task -> the robot profile whose scene it runs on; the sim's task registry checks it lists
# exactly its tasks (a data file: core does not import the sim).
TASK_ROBOTS: dict[str, str] = json.loads((Path(__file__).parent / "tasks.json").read_text())
HAND_PROFILE = "adroit"
GRASP_POSE_TIMEOUT_S = 30.0  # s of wall time a lockstep hand episode waits for its grasp pose
HAND_TASKS = tuple(sorted(t for t, robot in TASK_ROBOTS.items() if robot == HAND_PROFILE))
DEFAULT_TASK = "pick_lift"
DEFAULT_HAND_OBJECT = "potted_meat_can"
# The nodes that keep the arm safe: when one exits, `dexstack up` and `ros2 launch` stop everything.
# Any other node (policy, expert, recorder, grasp planner) may die alone: both launchers report it
# and keep the rest running, so the safety filter's watchdog holds the arm.
CRITICAL_EXECUTABLES = frozenset({"sim_node", "mock_hardware", "safety_filter"})
RECORDER_NOTE = (
    "recorder: records nothing until an episode is started: call the Trigger service "
    "/recorder/start_episode (stop and save: /recorder/stop_episode; discard: /recorder/cancel_episode)"
)


@dataclass(frozen=True)
class LaunchArg:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


LAUNCH_ARGS: tuple[LaunchArg, ...] = (
    LaunchArg(
        "hardware",
        "mujoco",
        "what the stack drives: the MuJoCo sim, the robot's own driver, or mock hardware",
        ("mujoco", "real", "mock"),
    ),
    LaunchArg(
        "policy",
        DEFAULT_POLICY,
        "policy to serve from the store, NAME or NAME@VERSION; 'expert' runs the sim's scripted expert; "
        "'none' runs no policy",
    ),
    LaunchArg(
        "task",
        DEFAULT_TASK,
        "sim task (ignored on real hardware); 'grasp' is the Adroit hand's and implies profile:=adroit",
        tuple(sorted(TASK_ROBOTS)),
    ),
    LaunchArg(
        "profile",
        "panda",
        "robot profile (joint names, limits, topics); adroit: the G-PAYN hand with the hand sim and the grasp planner",
        ("panda", HAND_PROFILE),
    ),
    LaunchArg(
        "object",
        DEFAULT_HAND_OBJECT,
        "object of the hand's grasp task (a name of the sim's object catalogue; adroit only)",
    ),
    LaunchArg(
        "controller",
        "",
        "the robot's JointTrajectoryController: the safety filter commands /<controller>/joint_trajectory and "
        "the policy publishes /policy/<controller>/joint_trajectory; empty: the profile's "
        "(panda: arm_controller, adroit: hand_controller)",
    ),
    LaunchArg("rtf", "1.0", "sim real-time factor in realtime pacing (0 = as fast as possible)"),
    LaunchArg(
        "pacing",
        "realtime",
        "realtime: sim runs on its own clock; lockstep: physics waits for each policy answer",
        ("realtime", "lockstep"),
    ),
    LaunchArg("record", "false", "start the MCAP recorder", ("true", "false")),
    LaunchArg("seed", "0", "seed of the first sim episode"),
    LaunchArg("cameras", "true", "render and publish sim cameras", ("true", "false")),
    LaunchArg("policy_rate", str(contract.POLICY_HZ), "policy loop rate in Hz"),
    LaunchArg(
        "params_file",
        "",
        "ROS 2 parameter YAML applied to every node (site tuning, e.g. "
        "share/dexstack/config/panda_real.yaml); the values this launch derives take precedence",
    ),
)


def _number(text: str, minimum: float, exclusive: bool) -> str | None:
    """Why `text` is not a finite number above (or from) `minimum`, or None when it is."""
    try:
        value = float(text)
    except ValueError:
        return "is not a number"
    if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
        return f"must be a finite number {'>' if exclusive else '>='} {minimum:g}"
    return None


def _seed(text: str) -> str | None:
    try:
        value = int(text)
    except ValueError:
        return "is not an integer"
    return None if 0 <= value < 2**63 else "must be an integer in 0 .. 2**63-1 (a ROS int64 parameter)"


def _params_file(text: str) -> str | None:
    if not text:
        return None
    path = Path(text).expanduser()
    if not path.is_file():
        return "is not a file" if path.exists() else "does not exist"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return None


def _controller_name(text: str) -> str | None:
    try:
        text and contract.check_controller_name(text)  # empty: the profile's controller
    except ValueError as exc:
        return f"is not usable: {exc}"
    return None


# How a launch argument's value is checked beyond its choices: name -> why the text is wrong, or None.
VALUE_CHECKS: dict[str, Callable[[str], str | None]] = {
    "rtf": lambda t: _number(t, 0.0, exclusive=False),
    "policy_rate": lambda t: _number(t, 0.0, exclusive=True),
    "seed": _seed,
    "params_file": _params_file,
    "controller": _controller_name,
}


def check_launch_values(values: dict[str, str]) -> None:
    """ValueError listing, in one line, every unknown name, value not among its choices and value
    that fails its VALUE_CHECKS rule (e.g. `policy_rate:=abc`, `seed:=-5`, a missing `params_file`),
    so a bringup never starts a node with a value it would die on."""
    known = {a.name: a for a in LAUNCH_ARGS}
    problems = []
    for name, value in values.items():
        arg = known.get(name)
        if arg is None:
            problems.append(f"unknown launch argument {name!r} (known: {', '.join(known)})")
        elif arg.choices and value not in arg.choices:
            problems.append(f"{name}:={value} is not one of {', '.join(arg.choices)}")
        elif name in VALUE_CHECKS and (why := VALUE_CHECKS[name](str(value))) is not None:
            problems.append(f"{name}:={value} {why}")
    if problems:
        raise ValueError("bad launch arguments: " + "; ".join(problems))


@dataclass(frozen=True)
class NodeSpec:
    """One node: what `ros2 run PACKAGE EXECUTABLE --ros-args ...` would start."""

    executable: str
    name: str
    parameters: dict[str, object] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    params_files: tuple[str, ...] = ()  # applied first: `parameters` override them
    package: str = PACKAGE
    note: str = ""  # one line both launchers print at start-up (what the user must do)

    @property
    def critical(self) -> bool:
        """Whether both launchers stop everything when this node exits (see CRITICAL_EXECUTABLES)."""
        return self.executable in CRITICAL_EXECUTABLES

    @property
    def node_names(self) -> tuple[str, ...]:
        """Every ROS node this process creates: the safety filter reads the e-stop on a second one."""
        if self.executable == "safety_filter":
            return (self.name, self.name + contract.ESTOP_NODE_SUFFIX)
        return (self.name,)

    @property
    def module(self) -> str:
        return f"dexstack.ros_nodes.{self.executable}"

    def ros_args(self) -> list[str]:
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        for path in self.params_files:  # rcl applies -p overrides after parameter files
            args += ["--params-file", path]
        for key, value in self.parameters.items():
            args += ["-p", f"{key}:={_param_text(value)}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args

    def command(self) -> list[str]:
        """The process `dexstack up` starts: this interpreter running the node's module."""
        return [sys.executable, "-m", self.module, *self.ros_args()]


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_launch_args(tokens: list[str]) -> dict[str, str]:
    """Parse `name:=value` tokens (the `ros2 launch` form), validating them (`check_launch_values`)."""
    values = {a.name: a.default for a in LAUNCH_ARGS}
    for token in tokens:
        name, sep, value = token.partition(":=")
        if not sep:
            raise ValueError(f"expected NAME:=VALUE, got {token!r}")
        values[name] = value
    check_launch_values(values)
    return values


def node_list(args: dict[str, str]) -> list[NodeSpec]:
    """The nodes for one bringup, from launch-argument values (all strings, as launch gives them)."""
    values = {a.name: a.default for a in LAUNCH_ARGS} | dict(args)
    check_launch_values(values)
    hand = _hand_bringup(values)
    hardware = values["hardware"]
    sim = hardware == "mujoco"
    lockstep = sim and values["pacing"] == "lockstep"
    common = {"use_sim_time": sim, "profile": values["profile"]}
    if values["controller"]:  # every node that names a controller topic derives it from this one name
        common["controller"] = contract.check_controller_name(values["controller"])
    nodes: list[NodeSpec] = []
    if sim:
        sim_params = common | {
            "task": values["task"],
            "rtf": float(values["rtf"]),
            "pacing": values["pacing"],
            "seed": int(values["seed"]),
            "cameras": values["cameras"] == "true",
            "policy_rate": float(values["policy_rate"]),
        }
        if hand:
            # Lockstep hand episodes start as GraspEnv's: fit the arm-clear view, wait (up to this
            # much wall time) for the planner's grasp pose, then start the clock (`sim_node.py`).
            sim_params |= {"object": values["object"]} | (
                {"grasp_pose_timeout_s": GRASP_POSE_TIMEOUT_S} if lockstep else {}
            )
        nodes.append(NodeSpec("sim_node", "sim", sim_params))
    elif hardware == "mock":
        nodes.append(NodeSpec("mock_hardware", "mock_hardware", dict(common)))
    if hand:
        # Depth + object mask -> /grasp/target_pose (on a real robot a segmentation node sends the mask).
        nodes.append(NodeSpec("grasp_planner_node", "grasp_planner", {"use_sim_time": sim}))
    # On a real robot nothing moves until an operator enables it; the gate then ramps in.
    # A lockstep sim's clock waits for each answer: no delivery latency for the filter to allow for.
    safety = {"start_enabled": hardware != "real"} | ({"arrival_margin_s": 0.0} if lockstep else {})
    nodes.append(NodeSpec("safety_filter", "safety_filter", common | safety))
    # What answers the observations (the expert or the policy) acts at the policy rate, once per
    # observation in lockstep.
    acting = common | {"rate": float(values["policy_rate"]), "trigger": "observation" if lockstep else "timer"}
    if values["policy"] == "expert":
        if hand:
            raise ValueError(
                "policy:=expert has no Adroit hand expert; the hand's scripted grasp is "
                "sim/experts/grasp.py (in-process)"
            )
        if not sim:
            raise ValueError("policy:=expert needs hardware:=mujoco (the expert reads the sim's ground truth)")
        nodes.append(NodeSpec("expert_node", "expert", acting | {"task": values["task"]}))
    elif values["policy"] != "none":
        nodes.append(
            NodeSpec(
                "policy_node", "policy", acting | {"policy": values["policy"], "start_enabled": hardware != "real"}
            )
        )
    if values["record"] == "true":
        nodes.append(NodeSpec("recorder", "recorder", common | {"task": values["task"]}, note=RECORDER_NOTE))
    if values["params_file"]:
        nodes = [dataclasses.replace(n, params_files=(values["params_file"],)) for n in nodes]
    return nodes


def _hand_bringup(values: dict[str, str]) -> bool:
    """Whether this bringup is the Adroit hand's; normalises `values` in place (profile, task, and
    the Panda's default policy, which the hand cannot serve, to 'none'). ValueError for a Panda
    task on the hand."""
    hand = values["profile"] == HAND_PROFILE or values["task"] in HAND_TASKS
    if not hand:
        return False
    if values["task"] not in HAND_TASKS and values["task"] != DEFAULT_TASK:
        raise ValueError(
            f"profile:={HAND_PROFILE} runs the hand's {HAND_TASKS[0]!r} task, not the Panda task task:={values['task']}"
        )
    values["profile"], values["task"] = HAND_PROFILE, HAND_TASKS[0]
    if values["policy"] == DEFAULT_POLICY:
        values["policy"] = "none"
    return True
