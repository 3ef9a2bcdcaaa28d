"""Process supervision and clean shutdown over real processes and DDS (issue 12 rows 5, 12, 15).

- `dexstack up` keeps the safety filter and the sim running when the policy process is killed,
  reports it in one line, and the filter holds the arm; a critical node's death stops everything.
- Every node exits 0 on SIGINT twice (a terminal's Ctrl-C reaches the whole process group and
  `ros2 launch` signals each node again), with no traceback (EGL context closed from the wrong
  thread, physics publishing on a dead context, KeyboardInterrupt inside destroy_node()).
- The same under the upstream `ros2 launch`, when DEXSTACK_ROS2ENV names the setup script of a
  ROS 2 command-line environment (not part of CI).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sensor_msgs.msg import JointState
from test_bringup import _alive  # one definition of "this pid still runs (not a zombie)"
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.graph import node_list, parse_launch_args
from dexstack.hardware.profiles import PANDA
from dexstack.launcher import node_environment, start_nodes
from dexstack.ros_nodes.common import stamp_ns

pytestmark = [pytest.mark.ros, pytest.mark.fault]

# What a node's log must never show on shutdown: a traceback (KeyboardInterrupt in destroy_node,
# the physics thread's "publisher's context is invalid", rclpy.spin's take_message error) or an
# EGL error from a GL context closed off its thread.
SHUTDOWN_ERRORS = ("Traceback", "EGL_BAD", "context is invalid")


def _children(pid: int) -> dict[str, int]:
    """Executable name -> pid of the node processes `dexstack up` started."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        pids = [int(p) for p in f.read().split()]
    found = {}
    for child in pids:
        with open(f"/proc/{child}/cmdline", "rb") as f:
            module = next(a for a in f.read().decode().split("\0") if a.startswith("dexstack.ros_nodes."))
        found[module.rsplit(".", 1)[1]] = child
    return found


def _start_up(args: list[str], log_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dexstack.cli", "up", *args, "--log-dir", str(log_dir)]
    return subprocess.Popen(cmd, env=node_environment(), stderr=subprocess.PIPE, text=True)


def _stop_up(up: subprocess.Popen, children: dict[str, int]) -> str:
    """Ctrl-C `dexstack up`; returns its stderr. Leaves no node behind whatever happened."""
    try:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in children.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    return err


def _log_problems(log_dir: Path) -> dict[str, list[str]]:
    problems = {}
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        found = [e for e in SHUTDOWN_ERRORS if e in text]
        if found:
            problems[log.name] = found
    return problems


def test_a_killed_policy_leaves_filter_and_sim_running_and_the_filter_holds(ros_client, tmp_path):
    log_dir = tmp_path / "logs"
    up = _start_up(["hardware:=mujoco", "policy:=expert", "cameras:=false"], log_dir)
    chunks: set[int] = set()  # stamps of the chunks the expert sent
    commands: list[JointTrajectory] = []  # what reached the controller
    states: list[JointState] = []
    node = ros_client.node
    node.create_subscription(
        JointTrajectory, PANDA.policy_output_topic, lambda m: chunks.add(stamp_ns(m.header.stamp)), 100
    )
    node.create_subscription(JointTrajectory, PANDA.trajectory_topic, commands.append, 100)
    node.create_subscription(JointState, contract.JOINT_STATES, states.append, 10)
    children: dict[str, int] = {}
    try:
        assert ros_client.spin_until(lambda: len(commands) >= 5, 120), "the expert never moved the arm"
        children = _children(up.pid)
        assert set(children) == {"sim_node", "safety_filter", "expert_node"}
        os.kill(children["expert_node"], signal.SIGKILL)  # mid-motion
        seen = len(commands)

        def held() -> bool:
            """A command the filter sent on its own: a stamp no expert chunk had, or a second
            message with a chunk's stamp (a hold timed from the last chunk)."""
            stamps = [stamp_ns(m.header.stamp) for m in commands]
            return any(t not in chunks or stamps.count(t) > 1 for t in stamps[seen:])

        assert ros_client.spin_until(held, 60), "no hold reached the controller after the policy died"
        states.clear()
        assert ros_client.spin_until(lambda: len(states) >= 10, 30), "the sim stopped publishing"
        assert up.poll() is None, "dexstack up stopped with the policy"
        assert _alive(children["sim_node"]) and _alive(children["safety_filter"])
    finally:
        err = _stop_up(up, children)
    pid = children["expert_node"]
    assert f"expert (pid {pid}) exited with code -9 (SIGKILL); not critical" in err
    assert "stopped: sim=0, safety_filter=0, expert=-9" in err
    assert up.returncode == 1, err  # a node died during the run
    assert not _log_problems(log_dir)


def test_a_killed_critical_node_stops_everything(ros_client, tmp_path, dexstack_home):
    log_dir = tmp_path / "logs"
    up = _start_up(["hardware:=mock", "policy:=none", "record:=true"], log_dir)
    children: dict[str, int] = {}
    try:
        names = {"mock_hardware", "safety_filter", "recorder"}
        assert ros_client.spin_until(
            lambda: names <= {n for n, _ in ros_client.node.get_node_names_and_namespaces()}, 60
        )
        children = _children(up.pid)
        os.kill(children["safety_filter"], signal.SIGKILL)
        up.wait(60)  # up stops by itself
    finally:
        err = _stop_up(up, children)
    assert up.returncode == 1
    assert f"safety_filter (pid {children['safety_filter']}) (critical) exited with code -9 (SIGKILL)" in err
    assert "stopped: mock_hardware=0, safety_filter=-9, recorder=0" in err
    assert "recorder: records nothing until an episode is started" in err  # record:=true says what starts one
    assert not any(_alive(pid) for pid in children.values())


def test_every_node_exits_0_when_sigint_comes_twice(ros_client, tmp_path, dexstack_home):
    """Sim with cameras (a GL context on the physics thread), filter, expert and recorder: each
    gets SIGINT, then a second one 0 to 0.45 s later (during spin exit, destroy_node, teardown)."""
    specs = node_list(parse_launch_args(["hardware:=mujoco", "policy:=expert", "record:=true"]))
    log_dir = tmp_path / "logs"
    procs = start_nodes(specs, env=node_environment(), log_dir=str(log_dir))
    commands: list[JointTrajectory] = []
    ros_client.node.create_subscription(JointTrajectory, PANDA.trajectory_topic, commands.append, 100)
    try:
        assert ros_client.spin_until(lambda: len(commands) >= 3, 120), "the graph never moved the arm"
        assert ros_client.spin_until(
            lambda: "recorder" in {n for n, _ in ros_client.node.get_node_names_and_namespaces()}, 30
        )
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            time.sleep(0.15)
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        codes = {s.name: p.wait(60) for s, p in zip(specs, procs, strict=True)}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == {"sim": 0, "safety_filter": 0, "expert": 0, "recorder": 0}
    assert not _log_problems(log_dir)


def test_the_critical_nodes_are_the_filter_and_what_drives_the_arm():
    def critical(*args: str) -> set[str]:
        return {s.name for s in node_list(parse_launch_args(list(args))) if s.critical}

    assert critical("hardware:=mujoco", "record:=true") == {"sim", "safety_filter"}
    assert critical("hardware:=mock", "policy:=none") == {"mock_hardware", "safety_filter"}
    assert critical("hardware:=real", "record:=true") == {"safety_filter"}
    assert critical("task:=grasp") == {"sim", "safety_filter"}  # the grasp planner may die alone


def test_a_sim_with_an_unknown_pacing_says_so_in_one_line():
    with pytest.raises(ValueError, match="pacing:=fast is not one of realtime, lockstep"):
        node_list({"pacing": "fast"})  # eval and demo pass launch values without parse_launch_args
    out = subprocess.run(
        [sys.executable, "-m", "dexstack.ros_nodes.sim_node", "--ros-args", "-r", "__node:=sim", "-p", "pacing:=fast"],
        env=node_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "[sim]: cannot start: pacing must be realtime or lockstep, got 'fast'" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


# --- under the upstream `ros2 launch` (opt-in) ----------------------------------------------
ROS2ENV = os.environ.get("DEXSTACK_ROS2ENV", "")


@pytest.fixture(scope="module")
def ros2_workspace(tmp_path_factory) -> Path:
    """This checkout built with colcon in the ROS 2 command-line environment DEXSTACK_ROS2ENV."""
    if not (ROS2ENV and Path(ROS2ENV, "env.sh").is_file()):
        pytest.skip("set DEXSTACK_ROS2ENV to the setup script of a ROS 2 command-line environment")
    ws = tmp_path_factory.mktemp("ws")
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        _ros2_shell(f"colcon build --merge-install --base-paths {repo}", ws), cwd=ws, check=True, timeout=600
    )
    return ws


def _ros2_shell(command: str, ws: Path) -> list[str]:
    setup = f". {ROS2ENV}/env.sh" + (f" && . {ws}/install/setup.sh" if (ws / "install").is_dir() else "")
    return ["bash", "-c", f"export ROS2ENV_ROOT={ROS2ENV} && {setup} && exec {command}"]


def _ros2_launch(ws: Path, args: str, out: Path) -> subprocess.Popen:
    """`ros2 launch` in its own process group, as a terminal's foreground job. stdin is no tty, so
    launch runs non-interactive and also signals each node on Ctrl-C: every node sees SIGINT twice."""
    command = _ros2_shell(f"ros2 launch dexstack bringup.launch.py {args} > {out} 2>&1", ws)
    return subprocess.Popen(command, cwd=ws, start_new_session=True, stdin=subprocess.DEVNULL)


def _launch_pids(launch: subprocess.Popen) -> dict[str, int]:
    """Executable -> pid of the nodes in the launch's process group."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().decode().split("\0")
            exe = next((a for a in args if "/lib/dexstack/" in a), None)
            if exe and os.getpgid(int(proc.name)) == launch.pid:
                found[exe.rsplit("/", 1)[1]] = int(proc.name)
        except OSError:
            continue
    return found


def _wait_for_text(out: Path, text: str, launch: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in out.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in:\n{out.read_text(errors='replace')[-3000:]}"
        time.sleep(0.5)


def _kill_launch(launch: subprocess.Popen) -> None:
    if launch.poll() is None:
        os.killpg(launch.pid, signal.SIGKILL)
        launch.wait()


def test_ros2_launch_keeps_the_rest_when_the_policy_dies_and_ctrl_c_is_clean(ros2_workspace, ros_client, tmp_path):
    out = tmp_path / "launch.log"
    launch = _ros2_launch(ros2_workspace, "hardware:=mujoco policy:=expert record:=true", out)
    commands: list[JointTrajectory] = []
    ros_client.node.create_subscription(JointTrajectory, PANDA.trajectory_topic, commands.append, 100)
    try:
        assert ros_client.spin_until(lambda: len(commands) >= 3, 120), out.read_text()[-3000:]
        pids = _launch_pids(launch)
        assert set(pids) == {"sim_node", "safety_filter", "expert_node", "recorder"}, pids
        os.kill(pids["expert_node"], signal.SIGKILL)
        _wait_for_text(out, "not critical", launch, 30)
        seen = len(commands)
        assert ros_client.spin_until(lambda: len(commands) > seen, 30), "the filter sent no hold"
        assert launch.poll() is None
        assert all(_alive(pids[n]) for n in ("sim_node", "safety_filter", "recorder"))
        os.killpg(launch.pid, signal.SIGINT)  # Ctrl-C in a terminal
        assert launch.wait(60) == 0
    finally:
        _kill_launch(launch)
    text = out.read_text(errors="replace")
    assert f"expert (pid {pids['expert_node']}) exited with code -9 (SIGKILL); not critical" in text
    assert "recorder: records nothing until an episode is started" in text
    for name in ("sim_node-1", "safety_filter-2", "recorder-4"):
        assert f"[{name}]: process has finished cleanly" in text, text[-4000:]
    assert not [e for e in SHUTDOWN_ERRORS if e in text], text[-4000:]
    assert "failed to terminate" not in text, text[-4000:]


def test_ros2_launch_stops_everything_when_a_critical_node_dies(ros2_workspace, ros_client, tmp_path):
    out = tmp_path / "launch.log"
    launch = _ros2_launch(ros2_workspace, "hardware:=mock policy:=none", out)
    try:
        assert ros_client.spin_until(
            lambda: (
                {"mock_hardware", "safety_filter"} <= {n for n, _ in ros_client.node.get_node_names_and_namespaces()}
            ),
            60,
        ), out.read_text()[-3000:]
        pids = _launch_pids(launch)
        os.kill(pids["safety_filter"], signal.SIGKILL)
        launch.wait(60)  # launch shuts down by itself
    finally:
        _kill_launch(launch)
    text = out.read_text(errors="replace")
    assert "(critical) exited with code -9 (SIGKILL): stopping all nodes" in text, text[-3000:]
    assert "[mock_hardware-1]: process has finished cleanly" in text, text[-3000:]


def test_a_renderer_is_rendered_and_closed_only_on_its_own_thread():
    """An EGL context belongs to the thread that made it: another thread gets a clear error (not
    EGL_BAD_ACCESS) and the renderer stays usable; the owner closes it."""
    import threading

    import mujoco

    from dexstack.sim.render import RgbdRenderer

    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><camera name="c" pos="0 0 1"/><geom type="box" size=".1 .1 .1"/></worldbody></mujoco>'
    )
    data = mujoco.MjData(model)
    renderer = RgbdRenderer(model, 32, 24)
    errors: list[Exception] = []

    def other_thread() -> None:
        for call in (lambda: renderer.render(data, 0), renderer.close):
            try:
                call()
            except RuntimeError as exc:
                errors.append(exc)

    thread = threading.Thread(target=other_thread, name="not-the-owner")
    thread.start()
    thread.join()
    assert [str(e).split(" called")[0] for e in errors] == ["RgbdRenderer: render", "RgbdRenderer: close"]
    assert "'not-the-owner'" in str(errors[0])
    rgb, depth = renderer.render(data, 0)
    assert rgb.shape == (24, 32, 3) and depth.shape == (24, 32)
    renderer.close()
    with pytest.raises(RuntimeError, match="closed"):
        renderer.render(data, 0)
