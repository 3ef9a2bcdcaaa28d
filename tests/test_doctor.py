"""`dexstack doctor` against real graphs over DDS: the sim graph passes; a wrong joint order, a
missing topic, a camera of another resolution and an e-stop publisher that a subscriber cannot
hear each fail with exit status 1 and a check that names the problem, and so does a second publisher
on the controller's topic (it bypasses the safety filter).

The sim graph (sim + safety filter + policy node serving bc_pick_lift, real time) is shared by the
tests of this module; each fault is a real publisher of the test client, gone after its test.
The doctor runs as the `dexstack` command in a subprocess while the client keeps publishing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from dexstack import contract
from dexstack.graph import node_list
from dexstack.hardware.profiles import PANDA

pytestmark = pytest.mark.ros

POLICY = "bc_pick_lift"


def run_doctor(client, *args: str, domain: int | None = None) -> tuple[int, dict | None, str]:
    """Run `dexstack doctor --json ARGS` while `client` keeps spinning (its publishers stay alive);
    returns (exit status, the JSON report or None, stderr)."""
    command = [sys.executable, "-m", "dexstack.cli", "doctor", "--json", "--window", "1.5", *args]
    if domain is not None:
        command += ["--domain", str(domain)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        while proc.poll() is None:
            client.spin_for(0.1)
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    return proc.returncode, (json.loads(text) if text.strip() else None), errors


def failures(report: dict, area: str) -> list[dict]:
    return [c for c in report["checks"] if c["area"] == area and c["status"] == "fail"]


@pytest.fixture(scope="module")
def sim_graph(tmp_path_factory):
    from dexstack.launcher import node_environment, start_nodes, stop_nodes

    specs = node_list({"hardware": "mujoco", "policy": POLICY, "task": "pick_lift"})
    log_dir = str(tmp_path_factory.mktemp("doctor_logs"))
    procs = start_nodes(specs, env=node_environment(), log_dir=log_dir)
    yield specs
    stop_nodes(procs)
    for log in sorted(Path(log_dir).glob("*.log")):  # shown by pytest when a test failed
        print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def client_with_sim(sim_graph, ros_client):
    """The test client once the sim graph is running: the policy node serves and the sim streams."""
    from diagnostic_msgs.msg import DiagnosticArray

    from dexstack.ros_nodes.common import QOS

    serving = []
    ros_client.node.create_subscription(
        DiagnosticArray,
        contract.DIAGNOSTICS,
        lambda m: serving.extend(s for s in m.status if s.name == "/policy" and s.message.startswith("serving")),
        QOS[contract.QoSKind.DEFAULT],
    )
    assert ros_client.spin_until(lambda: bool(serving), 90.0), "the policy node never served"
    return ros_client


def test_doctor_passes_on_the_healthy_sim_graph(client_with_sim):
    """Without --policy and --profile the doctor checks the policy the node serves, on its robot."""
    code, report, errors = run_doctor(client_with_sim)
    assert code == 0, [c for c in (report or {"checks": []})["checks"] if c["status"] == "fail"] or errors
    assert report["ok"] and report["profile"] == "panda" and report["policy"] == POLICY
    checks = {(c["area"], c["subject"]): c for c in report["checks"]}
    assert checks[("joints", contract.JOINT_STATES)]["status"] == "ok"
    assert checks[("safety", PANDA.trajectory_topic)]["detail"] == "only /safety_filter commands the controller"
    assert checks[("clock", contract.CLOCK)]["detail"].startswith("sim time from /sim")
    for cam in PANDA.camera_names:  # every policy input converts as the policy node converts it
        assert checks[("inputs", contract.camera_color_topic(cam))]["detail"].endswith("-> shape (96, 96, 3)")
    rate = checks[("rates", contract.JOINT_STATES)]["detail"]
    assert f"Hz (nominal {contract.JOINT_STATE_HZ:g} Hz)" in rate
    # the enabled policy node's chunks, at the loop rate it reports
    assert f"Hz (nominal {contract.POLICY_HZ:g} Hz)" in checks[("rates", PANDA.policy_output_topic)]["detail"]


def test_doctor_fails_on_a_joint_order_other_than_the_profiles(client_with_sim):
    from sensor_msgs.msg import JointState

    from dexstack.ros_nodes.common import QOS, joint_state_msg, now_sec

    node = client_with_sim.node
    order = [1, 0, *range(2, PANDA.n_joints)]  # panda_joint2 first: a driver with another joint order
    pub = node.create_publisher(JointState, contract.JOINT_STATES, QOS[contract.QoSKind.STATE_PUB])
    names, home = [PANDA.joint_names[i] for i in order], [PANDA.home[i] for i in order]
    timer = node.create_timer(0.02, lambda: pub.publish(joint_state_msg(names, home, stamp=now_sec(node))))
    try:
        code, report, _ = run_doctor(client_with_sim, "--policy", POLICY)
    finally:
        node.destroy_timer(timer)
        node.destroy_publisher(pub)
    assert code == 1 and not report["ok"]
    (bad,) = failures(report, "joints")
    assert "joint order" in bad["detail"] and "'panda_joint2' where the profile has 'panda_joint1'" in bad["detail"]


def test_doctor_fails_on_a_camera_resolution_other_than_the_profiles(client_with_sim):
    from sensor_msgs.msg import Image

    from dexstack.ros_nodes.common import QOS, now_sec, rgb_msg

    node = client_with_sim.node
    topic = contract.camera_color_topic("scene")
    pub = node.create_publisher(Image, topic, QOS[contract.QoSKind.SENSOR_DATA])
    small = np.zeros((48, 64, 3), dtype=np.uint8)  # 64x48 where the profile's scene camera is 96x96
    timer = node.create_timer(1 / 15, lambda: pub.publish(rgb_msg(small, "scene", now_sec(node))))
    try:
        code, report, _ = run_doctor(client_with_sim, "--policy", POLICY)
    finally:
        node.destroy_timer(timer)
        node.destroy_publisher(pub)
    assert code == 1
    bad = [c for c in failures(report, "cameras") if c["subject"] == topic]
    assert bad and "64x48 (WxH), profile panda says 96x96" in bad[0]["detail"]


def test_doctor_fails_on_publishers_that_break_the_safety_path(client_with_sim):
    """A relay monitor subscribes to the e-stop with the contract's QoS (reliable, transient-local);
    relays publishing best-effort or volatile never reach it. What the running safety filter
    accepts is read from the graph, so this holds whichever QoS the filter subscribes with. A
    second publisher on the controller's topic bypasses the filter."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool
    from trajectory_msgs.msg import JointTrajectory

    from dexstack.ros_nodes.common import QOS

    node = client_with_sim.node
    monitor = node.create_subscription(Bool, contract.ESTOP, lambda m: None, QOS[contract.QoSKind.LATCHED])
    relays = [
        node.create_publisher(Bool, contract.ESTOP, QoSProfile(depth=1, reliability=reliability))  # volatile
        for reliability in (ReliabilityPolicy.BEST_EFFORT, ReliabilityPolicy.RELIABLE)
    ]
    bypass = node.create_publisher(JointTrajectory, PANDA.trajectory_topic, QOS[contract.QoSKind.COMMAND])
    try:
        code, report, _ = run_doctor(client_with_sim, "--policy", POLICY)
    finally:
        for pub in [*relays, bypass]:
            node.destroy_publisher(pub)
        node.destroy_subscription(monitor)
    assert code == 1
    bad = [c["detail"] for c in failures(report, "qos") if c["subject"] == contract.ESTOP]
    for qos in ("best_effort/volatile", "reliable/volatile"):
        assert any(f"({qos}) reaches no subscription of /test_client" in d for d in bad), bad
    (bypassed,) = [c["detail"] for c in failures(report, "safety") if c["subject"] == PANDA.trajectory_topic]
    assert bypassed == "/test_client also publish(es) here, bypassing the safety filter"


def test_doctor_accepts_an_estop_publisher_with_the_contracts_qos(client_with_sim):
    from std_msgs.msg import Bool

    from dexstack.ros_nodes.common import QOS

    node = client_with_sim.node
    relay = node.create_publisher(Bool, contract.ESTOP, QOS[contract.QoSKind.LATCHED])
    try:
        code, report, _ = run_doctor(client_with_sim, "--policy", POLICY)
    finally:
        node.destroy_publisher(relay)
    estop = [c for c in report["checks"] if c["area"] == "qos" and c["subject"] == contract.ESTOP]
    assert [c["status"] for c in estop] == ["ok"] and code == 0


def test_doctor_names_the_missing_topics_of_a_graph_without_cameras(launch_nodes):
    """Mock hardware (joint states, no cameras) + the safety filter, on a domain of their own:
    checked for a camera policy, the camera topics are missing and the inputs get no message; a
    node reading the joint states on use_sim_time with no /clock in the graph has a stopped clock."""
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState

    from dexstack.ros_nodes.client import RosClient
    from dexstack.ros_nodes.common import QOS

    base = int(os.environ["ROS_DOMAIN_ID"])  # conftest picks 20..99, eval 50..99; DDS takes 0..232
    domain = base + 100 if base + 100 <= 232 else base - 100
    launch_nodes(node_list({"hardware": "mock", "policy": "none"}), extra_env={"ROS_DOMAIN_ID": str(domain)})
    client = RosClient("sim_time_reader", domain_id=domain)
    try:
        client.node.set_parameters([Parameter("use_sim_time", value=True)])
        client.node.create_subscription(
            JointState, contract.JOINT_STATES, lambda m: None, QOS[contract.QoSKind.STATE_SUB]
        )
        code, report, errors = run_doctor(client, "--policy", POLICY, "--timeout", "6", domain=domain)
    finally:
        client.close()
    assert code == 1, errors
    assert report["domain"] == str(domain)
    missing = {c["subject"]: c["detail"] for c in failures(report, "topics")}
    for cam in PANDA.camera_names:
        assert missing[contract.camera_color_topic(cam)].startswith("no publisher")
    inputs = {c["subject"] for c in failures(report, "inputs")}
    assert inputs == {contract.camera_color_topic(cam) for cam in PANDA.camera_names}
    checks = {(c["area"], c["subject"]): c for c in report["checks"]}
    assert checks[("joints", contract.JOINT_STATES)]["status"] == "ok"  # mock hardware has the profile's order
    (clock,) = failures(report, "clock")
    assert clock["detail"] == "/sim_time_reader use(s) sim time but nothing publishes /clock"


def test_doctor_refuses_an_unknown_policy_in_one_line(ros_client):
    code, report, errors = run_doctor(ros_client, "--policy", "no_such_policy", "--timeout", "1")
    assert code == 2 and report is None
    assert errors.strip().startswith("error: no policy named 'no_such_policy'") and "Traceback" not in errors


def test_rate_is_the_median_period_of_the_stamps():
    from dexstack.cli.doctor import Samples

    stamps = [i * 0.01 for i in range(50) if i != 20]  # 100 Hz with one message lost
    stamps[30] += 0.004  # and one late
    assert Samples(stamps=stamps).rate_hz() == pytest.approx(100.0)
    assert Samples(stamps=[0.0, 0.01]).rate_hz() is None  # too few to say


@pytest.mark.parametrize(
    ("period_s", "relays", "status", "detail"),
    [
        (0.1, ["/relay"], "ok", "heartbeat every 100 ms, timeout 0.5 s"),
        (0.4, ["/relay"], "fail", "heartbeat every 400 ms leaves no margin"),
        (0.1, [], "fail", "heartbeat mode (0.5 s) but no relay publishes"),
    ],
)
def test_heartbeat_must_beat_twice_per_filter_timeout(period_s, relays, status, detail):
    from dexstack.cli.doctor import Report, Samples, check_heartbeat

    report = Report("0", "panda", None)
    check_heartbeat(report, Samples(stamps=[i * period_s for i in range(10)]), 0.5, relays)
    (check,) = report.checks
    assert (check.area, check.subject, check.status) == ("safety", contract.ESTOP, status)
    assert check.detail.startswith(detail)
