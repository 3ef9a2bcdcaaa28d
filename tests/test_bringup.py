"""`dexstack up`: the launch node list as processes, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from sensor_msgs.msg import JointState

from dexstack import contract
from dexstack.launcher import node_environment

pytestmark = pytest.mark.ros


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
        return f.read().split()[2] != "Z"


def test_up_starts_the_node_list_and_ctrl_c_stops_every_node(ros_client, tmp_path):
    log_dir = tmp_path / "logs"
    cmd = [sys.executable, "-m", "dexstack.cli", "up", "hardware:=mock", "policy:=none", "--log-dir", str(log_dir)]
    up = subprocess.Popen(cmd, env=node_environment(), stderr=subprocess.PIPE, text=True)
    states = []
    ros_client.node.create_subscription(JointState, contract.JOINT_STATES, states.append, 10)
    children: list[int] = []
    try:
        assert ros_client.spin_until(lambda: len(states) > 3, 40), "mock hardware never published"
        assert ros_client.spin_until(
            lambda: (
                {"mock_hardware", "safety_filter"} <= {n for n, _ in ros_client.node.get_node_names_and_namespaces()}
            ),
            20,
        )
        with open(f"/proc/{up.pid}/task/{up.pid}/children") as f:
            children = [int(p) for p in f.read().split()]
        assert len(children) == 2
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=30)
    finally:
        if up.poll() is None:  # the test failed before Ctrl-C: leave no node behind
            up.send_signal(signal.SIGINT)
            try:
                up.wait(15)
            except subprocess.TimeoutExpired:
                up.kill()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert up.returncode == 0, err
    assert "stopped: mock_hardware=0, safety_filter=0" in err
    assert not any(_alive(pid) for pid in children)


def test_up_rejects_unknown_arguments_before_starting_anything():
    out = subprocess.run(
        [sys.executable, "-m", "dexstack.cli", "up", "hardware:=gazebo"],
        env=node_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "not one of mujoco, real, mock" in out.stderr


def test_params_file_tunes_nodes_and_derived_values_win(ros_client, launch_nodes, tmp_path):
    from pathlib import Path

    from rcl_interfaces.srv import GetParameters

    from dexstack.graph import node_list, parse_launch_args

    site = tmp_path / "site.yaml"
    site.write_text(
        Path(__file__).resolve().parents[1].joinpath("config", "panda_real.yaml").read_text()
        + "    start_enabled: true\n"
    )  # a file must not enable a real robot
    specs = node_list(parse_launch_args(["hardware:=real", "policy:=none", f"params_file:={site}"]))
    launch_nodes(specs)
    client = ros_client.node.create_client(GetParameters, "/safety_filter/get_parameters")
    assert client.wait_for_service(timeout_sec=30)
    future = client.call_async(GetParameters.Request(names=["ramp_time_s", "state_timeout_s", "start_enabled"]))
    assert ros_client.spin_until(future.done, 10)
    ramp, timeout, enabled = future.result().values
    assert ramp.double_value == 3.0 and timeout.double_value == 0.05
    assert enabled.bool_value is False  # hardware:=real derives start_enabled:=false, and that wins


def test_demo_video_holds_the_whole_first_successful_episode_at_the_control_rate(tmp_path):
    """`dexstack demo` through ROS (lockstep): the MP4 decodes to one frame per control tick of the
    first successful episode (else of the first), however late the client's camera subscription
    matched (the sim waits, paused, for it) and whatever order the last frames and "done" arrive in."""
    import json

    import cv2

    out = subprocess.run(
        [sys.executable, "-m", "dexstack.cli", "demo", "--episodes", "2", "--out", str(tmp_path)],
        env=node_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    shown = summary["outcomes"].index(True) if True in summary["outcomes"] else 0
    expected = round(summary["episode_sim_s"][shown] * contract.POLICY_HZ)
    video = cv2.VideoCapture(summary["video"])
    frames = 0
    while video.read()[0]:
        frames += 1
    assert video.get(cv2.CAP_PROP_FPS) == contract.POLICY_HZ
    assert 0.95 * expected <= frames <= expected, (frames, expected, summary)
