"""`dexstack policy ...` over DDS against the real safety filter and policy node, as on a robot
(`hardware:=real`: both start disabled): enable/disable flip both nodes (seen in their
diagnostics, and a hold on the controller topic), the e-stop resume procedure, hot-swap by
reference, and one-line errors when a node is not up. Also `dexstack store list --json`."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import pytest

from dexstack import contract
from dexstack.graph import node_list
from dexstack.hardware.profiles import PANDA

pytestmark = pytest.mark.ros

POLICY = "bc_pick_lift"


def dexstack(client, *args: str) -> tuple[int, str, str]:
    """Run `dexstack ARGS` while `client` keeps spinning; (exit status, stdout, stderr)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dexstack.cli", *args], stdout=out, stderr=err, text=True)
        while proc.poll() is None:
            client.spin_for(0.1)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read()


class Watcher:
    """The client's view of the graph: latest diagnostics per node, commands on the controller
    topic. It also plays the robot's joint_state_broadcaster (the arm standing at home), so the
    filter knows where to hold."""

    def __init__(self, client) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory

        from dexstack.ros_nodes.common import QOS, joint_state_msg, now_sec

        states = client.node.create_publisher(JointState, contract.JOINT_STATES, QOS[contract.QoSKind.STATE_PUB])
        client.node.create_timer(
            0.02, lambda: states.publish(joint_state_msg(PANDA.joint_names, PANDA.home, stamp=now_sec(client.node)))
        )

        self.client = client
        self.latest: dict[str, dict[str, str]] = {}
        self.commands: list = []
        client.node.create_subscription(
            DiagnosticArray, contract.DIAGNOSTICS, self._on_diag, QOS[contract.QoSKind.DEFAULT]
        )
        client.node.create_subscription(
            JointTrajectory, PANDA.trajectory_topic, self.commands.append, QOS[contract.QoSKind.COMMAND]
        )

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            self.latest[s.name] = {kv.key: kv.value for kv in s.values} | {"_message": s.message}

    def wait_for(self, node: str, key: str, value: str) -> bool:
        """Until a diagnostics message of `node` received from now on has key == value."""
        self.latest.pop(node, None)
        return self.client.spin_until(lambda: self.latest.get(node, {}).get(key) == value, 15.0)


@pytest.fixture(scope="module")
def robot_graph(tmp_path_factory):
    from dexstack.launcher import node_environment, start_nodes, stop_nodes

    specs = node_list({"hardware": "real", "policy": POLICY})  # the safety filter and the policy node
    assert sorted(s.name for s in specs) == ["policy", "safety_filter"]
    log_dir = tmp_path_factory.mktemp("policy_cli_logs")
    procs = start_nodes(specs, env=node_environment(), log_dir=str(log_dir))
    yield
    stop_nodes(procs)
    for log in sorted(log_dir.glob("*.log")):  # shown by pytest when a test failed
        print(f"----- {log.name} -----\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def watcher(robot_graph, ros_client) -> Watcher:
    w = Watcher(ros_client)
    assert ros_client.spin_until(lambda: "/policy" in w.latest and "/safety_filter" in w.latest, 60.0)
    assert ros_client.spin_until(lambda: w.latest["/policy"].get("policy") == POLICY, 60.0), w.latest["/policy"]
    return w


def test_enable_and_disable_flip_the_filter_and_the_policy_node(watcher):
    client = watcher.client
    code, out, err = dexstack(client, "policy", "status", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["/safety_filter"]["values"]["enabled"] == "False"  # hardware:=real starts disabled
    assert status["/policy"]["values"]["enabled"] == "False" and status["/policy"]["values"]["policy"] == POLICY

    code, out, err = dexstack(client, "policy", "enable")
    assert code == 0, err
    assert "/policy: enabled" in out and "/safety_filter: enabled" in out
    assert watcher.wait_for("/safety_filter", "enabled", "True")
    assert watcher.wait_for("/policy", "enabled", "True")

    before = len(watcher.commands)
    code, out, err = dexstack(client, "policy", "disable")
    assert code == 0, err
    assert "/safety_filter: disabled" in out and "/policy: disabled" in out
    assert watcher.wait_for("/safety_filter", "enabled", "False")
    assert watcher.wait_for("/policy", "enabled", "False")
    code, out, err = dexstack(client, "policy", "status")  # the table an operator reads
    assert code == 0 and "enabled=False" in out and f"policy={POLICY}" in out, out + err
    holds = [m for m in watcher.commands[before:] if list(m.joint_names) == list(PANDA.joint_names)]
    assert holds, "disabling sent the controller nothing"


def test_estop_resume_procedure(watcher):
    from std_msgs.msg import Bool

    from dexstack.ros_nodes.common import QOS

    client = watcher.client
    estop = client.node.create_publisher(Bool, contract.ESTOP, QOS[contract.QoSKind.LATCHED])
    estop.publish(Bool(data=True))
    assert watcher.wait_for("/safety_filter", "estop_latched", "True")

    code, out, _ = dexstack(client, "policy", "enable")  # refused while latched, saying why
    assert code == 1 and "/safety_filter:" in out and "e-stop" in out
    code, out, _ = dexstack(client, "policy", "estop", "reset")  # refused while still pressed
    assert code == 1 and "/safety_filter:" in out

    estop.publish(Bool(data=False))
    assert watcher.wait_for("/safety_filter", "estop_pressed", "False")
    code, out, err = dexstack(client, "policy", "estop", "reset")
    assert code == 0, out + err
    assert watcher.wait_for("/safety_filter", "estop_latched", "False")
    code, out, err = dexstack(client, "policy", "enable")
    assert code == 0, out + err
    assert watcher.wait_for("/safety_filter", "enabled", "True")
    assert dexstack(client, "policy", "disable")[0] == 0


def test_reload_swaps_by_reference_and_a_refused_swap_keeps_serving(watcher):
    client = watcher.client
    code, out, err = dexstack(client, "policy", "reload", f"{POLICY}@1")
    assert code == 0 and f"/policy: serving {POLICY}@1" in out, err
    code, out, _ = dexstack(client, "policy", "reload", "no_such_policy@3")
    assert code == 1 and "refused no_such_policy@3" in out and f"still serving {POLICY}@1" in out
    assert watcher.wait_for("/policy", "policy", POLICY)
    code, out, err = dexstack(client, "policy", "reload")  # re-resolve the current ref
    assert code == 0 and f"serving {POLICY}@1" in out, err


def test_a_node_that_is_not_up_is_one_line_and_exit_1(watcher):
    code, out, err = dexstack(watcher.client, "policy", "enable", "--policy-node", "nobody", "--timeout", "1")
    assert code == 1 and "Traceback" not in err
    assert err.strip().startswith("error: service /nobody/enable not available after 1 s on ROS domain")
    assert len(err.strip().splitlines()) == 1
    code, out, err = dexstack(watcher.client, "policy", "status", "--filter-node", "nobody", "--timeout", "2")
    assert code == 1 and "error: no diagnostics from /nobody" in err and "Traceback" not in err


def test_store_list_json(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dexstack.cli", "store", "list", "--json", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(out.stdout)
    assert {"name": POLICY, "version": "1", "source": "bundled"}.items() <= next(
        r for r in rows if r["name"] == POLICY
    ).items()
    assert set(rows[0]) == {"name", "version", "family", "promoted", "created", "path", "source"}
