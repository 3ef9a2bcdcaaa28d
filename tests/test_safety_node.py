"""Safety filter node over real DDS: clamping, NaN -> hold + ERROR, latched e-stop, watchdog.

The filter (and for the watchdog test, mock hardware) run as real processes; a plain rclpy
client plays policy, e-stop button and joint-state source. Every hold seen is checked for what a
stock JointTrajectoryController needs to execute it as a stop (`check_hold`); tests send chunks
lasting >= 1 s so a hold (one point, due ~0.25 s after it is sent) is told apart from an answer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dexstack.hardware.profiles import PANDA
from dexstack.trajectory import ActionChunk

pytestmark = pytest.mark.ros

HOME = np.asarray(PANDA.home)
HOLD_MAX_S = 0.5  # a hold's point is due HOLD_SETTLE_S (+ the answered chunk's age) after its stamp


def duration_s(d) -> float:
    return d.sec + d.nanosec * 1e-9


def is_hold(msg, received: float) -> bool:
    """One point due soon after it arrived (`received`, our clock); test chunks last >= 1 s."""
    from dexstack.ros_nodes.common import to_sec

    start = to_sec(msg.header.stamp) or received
    return len(msg.points) == 1 and start + duration_s(msg.points[0].time_from_start) - received < HOLD_MAX_S


def check_hold(msg, now: float, at=None) -> None:
    """What ros2_controllers' JTC validate_trajectory_msg requires of a trajectory, for a hold: the
    profile's joints, points, positions of full width, finite, strictly increasing positive times,
    and a non-zero stamp whose last point is after `now` (received-at, node clock); the last
    point's velocity (if given) is zero, so it ends at rest. `at`: where it must stop."""
    from dexstack.ros_nodes.common import to_sec

    assert list(msg.joint_names) == list(PANDA.joint_names)
    assert msg.points, "an empty trajectory is rejected by JTC ('Empty trajectory received')"
    times = [duration_s(p.time_from_start) for p in msg.points]
    assert times[0] > 0 and np.all(np.diff(times) > 0), times
    for p in msg.points:
        assert len(p.positions) == PANDA.n_joints and all(math.isfinite(x) for x in p.positions)
    assert all(abs(v) < 1e-7 for v in msg.points[-1].velocities)  # allow_nonzero_velocity_at_trajectory_end
    stamp = to_sec(msg.header.stamp)
    assert stamp == 0.0 or stamp + times[-1] > now, f"hold ends in the past: {stamp} + {times[-1]} <= {now}"
    if at is not None:
        np.testing.assert_allclose(msg.points[-1].positions, at, atol=1e-9)


class FilterHarness:
    """Client side of one running safety filter: publishers, recorders, service calls."""

    def __init__(self, ros_client, publish_joint_states: bool) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool
        from std_srvs.srv import SetBool, Trigger
        from trajectory_msgs.msg import JointTrajectory

        from dexstack import contract
        from dexstack.ros_nodes.common import QOS, joint_state_msg, now_sec

        self.client = ros_client
        node = ros_client.node
        self.outputs: list[JointTrajectory] = []
        self.received: list[float] = []  # our clock when each output arrived
        self.diagnostics = []
        self.states: list[JointState] = []
        node.create_subscription(
            JointTrajectory, PANDA.trajectory_topic, self._on_output, QOS[contract.QoSKind.COMMAND]
        )
        node.create_subscription(
            DiagnosticArray,
            contract.DIAGNOSTICS,
            lambda m: self.diagnostics.extend(s for s in m.status if s.name.endswith("safety_filter")),
            QOS[contract.QoSKind.DEFAULT],
        )
        node.create_subscription(JointState, contract.JOINT_STATES, self.states.append, QOS[contract.QoSKind.STATE_SUB])
        self.policy_pub = node.create_publisher(
            JointTrajectory, PANDA.policy_output_topic, QOS[contract.QoSKind.COMMAND]
        )
        self.estop_pub = node.create_publisher(Bool, contract.ESTOP, QOS[contract.QoSKind.LATCHED])
        self.enable_client = node.create_client(SetBool, "/safety_filter/enable")
        self.reset_client = node.create_client(Trigger, "/safety_filter/reset_estop")
        self._Bool, self._SetBool, self._Trigger = Bool, SetBool, Trigger
        self.now = lambda: now_sec(node)
        if publish_joint_states:
            self.js_pub = node.create_publisher(JointState, contract.JOINT_STATES, QOS[contract.QoSKind.STATE_PUB])
            node.create_timer(
                0.02, lambda: self.js_pub.publish(joint_state_msg(PANDA.joint_names, HOME, stamp=self.now()))
            )

    def _on_output(self, msg) -> None:
        self.outputs.append(msg)
        self.received.append(self.now())

    def is_hold(self, msg) -> bool:
        return is_hold(msg, self.received[self.outputs.index(msg)])

    def holds_after(self, index: int) -> list:
        """Holds published after `self.outputs[index]`, each checked as a JTC-executable stop."""
        found = [(m, t) for m, t in zip(self.outputs[index:], self.received[index:], strict=True) if is_hold(m, t)]
        for m, t in found:
            check_hold(m, t)
        return [m for m, _ in found]

    def wait_connected(self, joint_states_from_client: bool) -> None:
        node = self.client.node
        assert self.client.spin_until(
            lambda: (
                self.policy_pub.get_subscription_count() > 0
                and node.count_publishers(PANDA.trajectory_topic) > 0
                and self.estop_pub.get_subscription_count() > 0
                and (not joint_states_from_client or self.js_pub.get_subscription_count() > 0)
            ),
            30.0,
        ), "safety filter never connected"
        assert self.enable_client.wait_for_service(timeout_sec=10.0)
        self.client.spin_for(0.3)  # a few joint states reach the filter

    def wait_passing(self, position=HOME, timeout_s: float = 10.0) -> None:
        """Until the filter passes a chunk to stay at `position` (it has fresh joint states)."""
        deadline = self.now() + timeout_s
        while self.now() < deadline:
            if not self.is_hold(self.answer_to(self.send(position, [1.0]))):
                return
            self.client.spin_for(0.2)
        raise AssertionError("the filter never passed a chunk")

    def send(self, positions, times) -> float:
        """Publish a chunk stamped now (client clock = filter clock: both wall time); returns the stamp."""
        from dexstack.ros_nodes.common import chunk_to_msg

        stamp = self.now()
        msg = chunk_to_msg(ActionChunk(PANDA.joint_names, np.atleast_2d(positions), np.asarray(times), stamp))
        self.policy_pub.publish(msg)
        return stamp

    def send_nan(self) -> float:
        from dexstack.ros_nodes.common import chunk_to_msg

        stamp = self.now()
        msg = chunk_to_msg(ActionChunk(PANDA.joint_names, HOME[None], np.array([0.1]), stamp))
        msg.points[0].positions[2] = math.nan
        self.policy_pub.publish(msg)
        return stamp

    def answer_to(self, stamp: float, timeout_s: float = 5.0):
        """The controller-topic message that carries `stamp` (the filter keeps input stamps)."""
        from dexstack.ros_nodes.common import to_stamp

        want = to_stamp(stamp)

        def find():
            return next((m for m in self.outputs if m.header.stamp == want), None)

        assert self.client.spin_until(lambda: find() is not None, timeout_s), f"no answer to chunk stamped {stamp}"
        answer = find()
        if self.is_hold(answer):
            check_hold(answer, self.received[self.outputs.index(answer)])
        return answer

    def hold_after(self, index: int, timeout_s: float = 5.0):
        """First hold published after `self.outputs[index]` (checked by `check_hold`)."""
        assert self.client.spin_until(lambda: self.holds_after(index), timeout_s), "no hold published"
        return self.holds_after(index)[0]

    def wait_diagnostic(self, level: int, text: str, timeout_s: float = 5.0):
        def find():
            return next((d for d in self.diagnostics if d.level == level and text in d.message), None)

        seen = self.client.spin_until(lambda: find() is not None, timeout_s)
        assert seen, (
            f"no diagnostics level {level} with {text!r}; saw {[(d.level, d.message) for d in self.diagnostics]}"
        )
        return find()

    def call(self, client, request):
        future = client.call_async(request)
        assert self.client.spin_until(future.done, 10.0), "service call timed out"
        return future.result()

    def set_enabled(self, value: bool):
        return self.call(self.enable_client, self._SetBool.Request(data=value))

    def reset_estop(self):
        return self.call(self.reset_client, self._Trigger.Request())

    def estop(self, pressed: bool) -> None:
        self.estop_pub.publish(self._Bool(data=pressed))


def filter_spec(**params):
    from dexstack.graph import NodeSpec

    return NodeSpec(
        "safety_filter", "safety_filter", {"start_enabled": True, "use_sim_time": False, "profile": "panda"} | params
    )


def test_clamps_out_of_limit_chunk_and_holds_nan_with_error(launch_nodes, ros_client):
    from diagnostic_msgs.msg import DiagnosticStatus

    launch_nodes([filter_spec()])
    h = FilterHarness(ros_client, publish_joint_states=True)
    h.wait_connected(joint_states_from_client=True)

    # The finger past its limit, but slow (2 s per point) so only clamping applies.
    target = HOME.copy()
    target[0], target[7] = 0.5, 0.07
    stamp = h.send([target, target], [2.0, 4.0])
    answer = h.answer_to(stamp)
    assert list(answer.joint_names) == list(PANDA.joint_names)
    expected = target.copy()
    expected[7] = PANDA.upper[7]
    got = np.array([p.positions for p in answer.points])
    np.testing.assert_allclose(got, [expected, expected])
    assert [p.time_from_start.sec for p in answer.points] == [2, 4]

    # A 0.8 rad step due 0.1 s after the stamp: at most vmax * 0.1 beyond the commanded position.
    step = HOME.copy()
    step[1] += 0.8
    answer = h.answer_to(h.send(step, [0.1]))
    moved = answer.points[0].positions[1] - HOME[1]
    assert 0.0 <= moved <= PANDA.vmax[1] * 0.1 + 1e-9

    # NaN: a hold answering that chunk's stamp, and a diagnostics ERROR; never a command.
    stamp = h.send_nan()
    answer = h.answer_to(stamp)
    assert h.is_hold(answer) and list(answer.joint_names) == list(PANDA.joint_names)
    status = h.wait_diagnostic(DiagnosticStatus.ERROR, "non-finite", timeout_s=4.0)
    values = {kv.key: kv.value for kv in status.values}
    assert values["bad_input"] == "1" and values["clamped"] == "1" and values["limited"] == "1"


def test_estop_latches_until_reset_and_enable(launch_nodes, ros_client):
    from diagnostic_msgs.msg import DiagnosticStatus

    launch_nodes([filter_spec()])
    h = FilterHarness(ros_client, publish_joint_states=True)
    h.wait_connected(joint_states_from_client=True)
    assert not h.is_hold(h.answer_to(h.send(HOME, [1.0]))), "an enabled filter passes a safe chunk"

    n = len(h.outputs)
    h.estop(True)
    h.hold_after(n)  # pressing the e-stop publishes a hold at once
    assert h.is_hold(h.answer_to(h.send(HOME, [1.0])))
    h.wait_diagnostic(DiagnosticStatus.ERROR, "stop latched: e-stop pressed")

    h.estop(False)
    ros_client.spin_for(0.3)
    assert h.is_hold(h.answer_to(h.send(HOME, [1.0]))), "releasing the e-stop alone must not resume"
    response = h.set_enabled(True)
    assert not response.success and "reset_estop" in response.message
    assert h.is_hold(h.answer_to(h.send(HOME, [1.0])))

    assert h.reset_estop().success
    assert h.is_hold(h.answer_to(h.send(HOME, [1.0]))), "reset alone leaves the filter disabled"
    assert h.set_enabled(True).success
    answer = h.answer_to(h.send(HOME, [1.0]))
    assert len(answer.points) == 1 and not h.is_hold(answer)


def test_watchdog_holds_when_commands_or_joint_states_stop(launch_nodes, ros_client):
    from diagnostic_msgs.msg import DiagnosticStatus

    from dexstack.graph import NodeSpec
    from dexstack.launcher import stop_nodes
    from dexstack.ros_nodes.common import joint_positions

    procs = launch_nodes(
        [
            filter_spec(command_timeout_s=2.0),
            NodeSpec("mock_hardware", "mock_hardware", {"use_sim_time": False, "profile": "panda"}),
        ]
    )
    h = FilterHarness(ros_client, publish_joint_states=False)
    h.wait_connected(joint_states_from_client=False)
    assert ros_client.spin_until(
        lambda: h.states and ros_client.node.count_subscribers(PANDA.trajectory_topic) > 1, 20.0
    ), "mock hardware never connected"

    # Policy -> filter -> mock: the arm arrives at the target.
    h.wait_passing()
    target = HOME.copy()
    target[0] = 0.3
    h.answer_to(h.send([target, target], [1.0, 3.0]))  # 3 s horizon: the watchdog allows 1.5 s
    assert ros_client.spin_until(lambda: abs(joint_positions(h.states[-1], PANDA.joint_names)[0] - 0.3) < 1e-6, 5.0), (
        "arm did not follow"
    )

    # The policy goes quiet: within half the chunk's horizon one hold, and a WARN saying why.
    n = len(h.outputs)
    h.hold_after(n, timeout_s=6.0)
    h.wait_diagnostic(DiagnosticStatus.WARN, "commands stopped", timeout_s=4.0)
    ros_client.spin_for(1.0)
    assert len(h.holds_after(n)) == 1, "one hold per trip, not one per tick"

    # Commands resume, then joint states stop (the robot's driver dies): a hold again.
    assert not h.is_hold(h.answer_to(h.send(target, [1.0])))
    ros_client.spin_for(0.3)
    n = len(h.outputs)
    stop_nodes(procs[1:])
    h.hold_after(n)
    h.wait_diagnostic(DiagnosticStatus.WARN, "joint states stale", timeout_s=4.0)
    assert h.is_hold(h.answer_to(h.send(target, [1.0]))), "no command without a fresh measured position"
