"""Safety filter node: the only publisher on the controller's trajectory topic.

policy output (`/policy/<controller>/joint_trajectory`) -> `hardware.safety.SafetyFilter`
-> `/<controller>/joint_trajectory`. Every answer keeps the header.stamp of the chunk it
answers; a hold is a JointTrajectory with the profile's joint names and zero points.

Services: `~/enable` (std_srvs/SetBool), `~/reset_estop` (std_srvs/Trigger).
Parameters: profile, start_enabled, ramp_time_s, state_timeout_s, command_timeout_s, watchdog_hz.
"""

from __future__ import annotations

import collections
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.hardware.profiles import get_profile
from dexstack.hardware.safety import SafetyFilter
from dexstack.ros_nodes.common import (
    QOS,
    chunk_to_msg,
    diagnostic_status,
    joint_positions,
    msg_to_chunk,
    now_sec,
    run_node,
    to_sec,
    to_stamp,
    with_controller,
)
from dexstack.ros_nodes.gripper_bridge import CommandOutput

STATE_BUFFER = 64  # joint states kept by stamp (0.64 s at 100 Hz)
STATE_WAIT_S = 0.05  # how long a chunk waits for the state it was computed from (steady clock)
_STAMP_TOL = 1e-6


def hold_msg(joint_names, stamp) -> JointTrajectory:
    """An empty trajectory: the controller cancels what it runs and holds its current command."""
    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.joint_names = list(joint_names)
    return msg


class SafetyFilterNode(Node):
    def __init__(self) -> None:
        super().__init__("safety_filter")
        self.profile = with_controller(self, get_profile(self.declare_parameter("profile", "panda").value))
        self.safety = SafetyFilter(
            self.profile,
            ramp_time_s=float(self.declare_parameter("ramp_time_s", 2.0).value),
            state_timeout_s=float(self.declare_parameter("state_timeout_s", 0.2).value),
            command_timeout_s=float(self.declare_parameter("command_timeout_s", 1.0).value),
            start_enabled=bool(self.declare_parameter("start_enabled", False).value),
        )
        watchdog_hz = float(self.declare_parameter("watchdog_hz", 20.0).value)

        self.measured_q = None
        self.last_state_time: float | None = None
        # Recent joint states by header stamp: a chunk is checked against the state of the
        # observation it answers, not whichever state arrived last (that makes lockstep runs
        # deterministic). A chunk that overtook its state waits for it, briefly.
        self.states: collections.OrderedDict[float, tuple[np.ndarray, float]] = collections.OrderedDict()
        self.waiting: list[tuple[JointTrajectory, float]] = []  # (chunk, steady deadline)
        self.last_command_time: float | None = None
        self.watchdog_reason: str | None = None  # set while tripped: one hold per trip
        # What happened since the last diagnostics message, so a 1 Hz report misses nothing.
        self.bad_input_since_report = 0
        self.watchdog_trips_since_report = 0

        self.pub = CommandOutput(self, self.profile, QOS[contract.QoSKind.COMMAND])  # arm (+ gripper: gripper_bridge)
        self.diag_pub = self.create_publisher(DiagnosticArray, contract.DIAGNOSTICS, QOS[contract.QoSKind.DEFAULT])
        self.create_subscription(
            JointTrajectory, self.profile.policy_output_topic, self.on_chunk, QOS[contract.QoSKind.COMMAND]
        )
        self.create_subscription(
            JointState, contract.JOINT_STATES, self.on_joint_state, QOS[contract.QoSKind.STATE_SUB]
        )
        self.create_subscription(Bool, contract.ESTOP, self.on_estop, QOS[contract.QoSKind.LATCHED])
        self.create_service(SetBool, "~/enable", self.on_enable)
        self.create_service(Trigger, "~/reset_estop", self.on_reset_estop)
        # The watchdog runs on the node clock (sim time in sim: a paused sim is not stale);
        # diagnostics on the steady clock so operators hear from us even when the sim is paused.
        self.create_timer(1.0 / watchdog_hz, self.on_watchdog)
        self.create_timer(STATE_WAIT_S / 2, self.on_wait_timeout, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.create_timer(
            1.0 / contract.DIAGNOSTICS_HZ, self.publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self.get_logger().info(
            f"safety filter for {self.profile.name}: {self.profile.policy_output_topic} -> "
            f"{self.pub.describe()}, {'enabled' if self.safety.enabled else 'disabled until ~/enable'}"
        )

    # --- inputs -----------------------------------------------------------------------
    def on_joint_state(self, msg: JointState) -> None:
        try:
            self.measured_q = joint_positions(msg, self.profile.joint_names)
        except (KeyError, ValueError) as exc:
            self.get_logger().error(f"ignoring joint_states: {exc}", throttle_duration_sec=5.0)
            return
        # Receipt time on our clock, not the header stamp: a driver's clock may differ from ours.
        # Before our clock has started (sim time, no /clock yet) the stamp is the best estimate.
        stamp = to_sec(msg.header.stamp)
        received = now_sec(self)
        self.last_state_time = received if received > 0.0 else stamp
        self.states[stamp] = (self.measured_q, self.last_state_time)
        while len(self.states) > STATE_BUFFER:
            self.states.popitem(last=False)
        if self.waiting:
            ready = [w for w in self.waiting if to_sec(w[0].header.stamp) <= stamp + _STAMP_TOL]
            self.waiting = [w for w in self.waiting if w not in ready]
            for chunk_msg, _ in ready:
                self._answer(chunk_msg)

    def _measurement_for(self, stamp: float | None) -> tuple[np.ndarray | None, float | None]:
        """The joint state with this stamp if we have it, else (and for "now") the latest one."""
        for t, (q, received) in reversed(self.states.items() if stamp is not None else []):
            if abs(t - stamp) <= _STAMP_TOL:
                return q, received
        return self.measured_q, self.last_state_time

    def on_wait_timeout(self) -> None:
        """Chunks whose state never came are checked against the latest one."""
        now = time.monotonic()
        expired = [w for w in self.waiting if w[1] <= now]
        self.waiting = [w for w in self.waiting if w[1] > now]
        for chunk_msg, _ in expired:
            self._answer(chunk_msg)

    def on_chunk(self, msg: JointTrajectory) -> None:
        self.last_command_time = now_sec(self)
        stamp = to_sec(msg.header.stamp)
        newest = next(reversed(self.states)) if self.states else None
        if stamp > 0.0 and (newest is None or stamp > newest + _STAMP_TOL):
            self.waiting.append((msg, time.monotonic() + STATE_WAIT_S))
            return
        self._answer(msg)

    def _answer(self, msg: JointTrajectory) -> None:
        now = now_sec(self)
        if not msg.points:
            out, reasons = self.safety.upstream_hold()
            self.pub.publish(hold_msg(self.profile.joint_names, msg.header.stamp))
            return
        try:
            chunk = msg_to_chunk(msg)
        except ValueError as exc:
            out, reasons = self.safety.reject(str(exc))
        else:
            measured_q, measured_time = self._measurement_for(chunk.stamp)
            out, reasons = self.safety.filter(chunk, measured_q, now, measured_time)
        if out is None:
            if reasons[0].startswith("bad input"):
                self.bad_input_since_report += 1
                self.get_logger().error(f"holding: {reasons[0]}")
            else:
                self.get_logger().warning(f"holding: {reasons[0]}", throttle_duration_sec=2.0)
            self.pub.publish(hold_msg(self.profile.joint_names, msg.header.stamp))
            return
        if reasons:
            self.get_logger().warning("; ".join(reasons), throttle_duration_sec=2.0)
        answer = chunk_to_msg(out)
        answer.header = msg.header  # the exact stamp (and frame) of the chunk we answer
        # The times exactly as received: re-encoded from float seconds, a time near the int32 limit
        # of Duration.sec would wrap to a negative one on the wire.
        for point, received in zip(answer.points, msg.points, strict=True):
            point.time_from_start = received.time_from_start
        self.pub.publish(answer)

    def on_estop(self, msg: Bool) -> None:
        now = now_sec(self)
        was_latched = self.safety.estop_latched
        self.safety.estop(now, pressed=msg.data)
        if msg.data:
            self.get_logger().error("E-STOP: holding; needs ~/reset_estop and ~/enable to resume")
            self.pub.publish(hold_msg(self.profile.joint_names, to_stamp(now)))
        elif was_latched:
            self.get_logger().warning("e-stop input released; still latched until ~/reset_estop and ~/enable")

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        now = now_sec(self)
        if request.data:
            response.success, response.message = self.safety.enable(now)
        else:
            self.safety.disable(now)
            self.pub.publish(hold_msg(self.profile.joint_names, to_stamp(now)))
            response.success, response.message = True, "disabled; holding"
        self._log_result(response.success, f"~/enable {request.data}: {response.message}")
        return response

    def on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.safety.reset_estop()
        self._log_result(response.success, f"~/reset_estop: {response.message}")
        return response

    def _log_result(self, success: bool, text: str) -> None:
        # Separate call sites: rclpy's logger refuses one call site with two severities.
        if success:
            self.get_logger().info(text)
        else:
            self.get_logger().error(text)

    # --- watchdog and diagnostics -----------------------------------------------------
    def on_watchdog(self) -> None:
        now = now_sec(self)
        # A clock that jumped back (restarted sim) would otherwise mask staleness until it caught up.
        if self.last_state_time is not None and now < self.last_state_time:
            self.last_state_time = now
        if self.last_command_time is not None and now < self.last_command_time:
            self.last_command_time = now
        reason = self.safety.check(now, self.last_state_time, self.last_command_time)
        if reason is not None and self.watchdog_reason is None:
            self.watchdog_trips_since_report += 1
            self.safety.stats.held += 1
            self.safety.last_hold_reason = f"watchdog: {reason}"
            self.get_logger().warning(f"watchdog: {reason}; holding")
            self.pub.publish(hold_msg(self.profile.joint_names, to_stamp(now)))
        elif reason is None and self.watchdog_reason is not None:
            self.get_logger().info("watchdog cleared")
        self.watchdog_reason = reason

    def publish_diagnostics(self) -> None:
        s = self.safety
        if s.estop_latched:
            level, message = "ERROR", "e-stop latched"
        elif self.bad_input_since_report:
            level, message = "ERROR", f"held {self.bad_input_since_report} invalid command(s): {s.last_hold_reason}"
        elif self.watchdog_reason is not None or self.watchdog_trips_since_report:
            level, message = "WARN", f"watchdog: {self.watchdog_reason or s.last_hold_reason}"
        elif not s.enabled:
            level, message = "OK", "disabled"
        else:
            level, message = "OK", "enabled"
        values = {
            "enabled": s.enabled,
            "estop_latched": s.estop_latched,
            "estop_pressed": s.estop_pressed,
            "ramp_scale": f"{s.ramp_scale(now_sec(self)):.3f}",
            "commands": s.stats.commands,
            "passed": s.stats.passed,
            "clamped": s.stats.clamped,
            "limited": s.stats.limited,
            "held": s.stats.held,
            "bad_input": s.stats.bad_input,
            "last_hold_reason": s.last_hold_reason or "",
        }
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diagnostic_status(self, level, message, values)]
        self.diag_pub.publish(msg)
        self.bad_input_since_report = self.watchdog_trips_since_report = 0


def main(args: list[str] | None = None) -> None:
    run_node(SafetyFilterNode, args)


if __name__ == "__main__":
    main()
