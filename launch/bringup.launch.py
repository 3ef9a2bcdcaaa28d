"""Bring up dexstack: `ros2 launch dexstack bringup.launch.py hardware:=mujoco|real|mock policy:=NAME task:=...`

The arguments and the node list come from `dexstack.graph` (the same function `dexstack up`
uses), so `ros2 launch` on a robot and `dexstack up` on a pip-only machine start the same
nodes with the same parameters. `ros2 launch dexstack bringup.launch.py --show-args` lists
the arguments with their choices.

Supervision is `dexstack up`'s (`dexstack/launcher.py`), by `NodeSpec.critical`: a critical node
(safety filter, sim/hardware) is "required" in launch's sense, its exit shuts the launch down
(launch's `Shutdown` action from the node's `on_exit`, launch's "required node" idiom); any other
node (policy, recorder) may die alone, launch logs "process has died [pid, exit code]" and the
rest keeps running so the safety filter holds the arm.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dexstack import contract
from dexstack.graph import LAUNCH_ARGS, node_list
from dexstack.launcher import exit_line


def _nodes(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGS}
    specs = node_list(values)
    notes = [LogInfo(msg=spec.note) for spec in specs if spec.note]
    return notes + [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            # Files first, then the derived values: the same precedence as `--ros-args`.
            parameters=[*spec.params_files, spec.parameters],
            remappings=list(spec.remappings),
            output="screen",
            emulate_tty=True,
            on_exit=_on_exit(spec),
        )
        for spec in specs
    ]


def _on_exit(spec):
    """What launch does when a node exits outside a shutdown (Ctrl-C, or a critical node's exit).
    launch's `ExecuteLocal` (launch/actions/execute_local.py) runs `on_exit` on its ProcessExited
    event, also during a shutdown, hence the `is_shutdown` check; `Shutdown`
    (launch/actions/shutdown_action.py) then stops every process as Ctrl-C does."""

    def on_exit(event, context):
        if context.is_shutdown:
            return None
        actions = [LogInfo(msg=exit_line(spec, event.returncode, event.pid))]
        if spec.critical:
            actions.append(Shutdown(reason=f"critical node {spec.name} exited with code {event.returncode}"))
        return actions

    return on_exit


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(
            a.name,
            default_value=a.default,
            description=a.description,
            **({"choices": list(a.choices)} if a.choices else {}),
        )
        for a in LAUNCH_ARGS
    ]
    # Discovery stays on this host unless the robot's environment already says otherwise
    # (a robot whose drivers run on other machines sets ROS_AUTOMATIC_DISCOVERY_RANGE itself).
    env = [SetEnvironmentVariable(k, v) for k, v in contract.ros_environment().items() if k not in os.environ]
    return LaunchDescription([*declared, *env, OpaqueFunction(function=_nodes)])
