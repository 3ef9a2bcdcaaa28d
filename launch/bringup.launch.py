"""Bring up dexstack: `ros2 launch dexstack bringup.launch.py hardware:=mujoco|real|mock policy:=NAME task:=...`

The arguments and the node list come from `dexstack.graph` (the same function `dexstack up`
uses), so `ros2 launch` on a robot and `dexstack up` on a pip-only machine start the same
nodes with the same parameters. `ros2 launch dexstack bringup.launch.py --show-args` lists
the arguments with their choices.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dexstack import contract
from dexstack.graph import LAUNCH_ARGS, node_list


def _nodes(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGS}
    return [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            # Files first, then the derived values: the same precedence as `--ros-args`.
            parameters=[*spec.params_files, spec.parameters],
            remappings=list(spec.remappings),
            output="screen",
            emulate_tty=True,
        )
        for spec in node_list(values)
    ]


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
