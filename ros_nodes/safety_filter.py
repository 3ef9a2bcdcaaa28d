"""Safety filter node: the only publisher on the controller's trajectory topic.

policy output (`/policy/<controller>/joint_trajectory`) -> `hardware.safety.SafetyFilter` ->
`/<controller>/joint_trajectory`. Every answer keeps the header.stamp of the chunk it answers; a
hold is `SafetyFilter.hold`, which a stock JointTrajectoryController executes as a stop. The
e-stop (`/safety/estop`) is subscribed twice, reliable + transient-local and best-effort +
volatile, so a publisher with any common QoS connects; with `estop_heartbeat_timeout` set, no
fresh `false` for that long latches the stop (how a relay should publish: docs/SAFETY.md). It runs
on its own node and executor thread ("<name>_estop"), so no chunk delays it. Services:
`~/enable` (SetBool), `~/reset_estop` (Trigger). Parameters: profile, watchdog_hz and every
keyword argument of `SafetyFilter` (same defaults).
"""

from __future__ import annotations

import inspect
import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.hardware.profiles import get_profile
from dexstack.hardware.safety import SafetyFilter, StateBuffer
from dexstack.ros_nodes import common
from dexstack.ros_nodes.common import QOS, now_sec, to_sec, with_controller
from dexstack.ros_nodes.gripper_bridge import CommandOutput

STATE_WAIT_S = 0.05  # how long a chunk waits for the state it was computed from (steady clock)
_STAMP_TOL = 1e-6
ESTOP_BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)  # matches every publisher
K = contract.QoSKind
FILTER_PARAMS = {
    k: p.default for k, p in inspect.signature(SafetyFilter.__init__).parameters.items() if p.default is not p.empty
}


class SafetyFilterNode(Node):
    def __init__(self) -> None:
        super().__init__("safety_filter")
        self.profile = with_controller(self, get_profile(self.declare_parameter("profile", "panda").value))
        watchdog_hz = float(self.declare_parameter("watchdog_hz", 20.0).value)
        self.safety = SafetyFilter(
            self.profile, **{k: self.declare_parameter(k, v).value for k, v in FILTER_PARAMS.items()}
        )
        # The e-stop group runs beside the default group; this lock makes each answer atomic
        # against an e-stop (no chunk is published after the hold that answers the e-stop).
        self.lock, self.closing, self.stops = threading.Lock(), False, 0
        self.states, self.last_state_wall = StateBuffer(), time.monotonic()
        self.state_error: str | None = None  # the latest /joint_states was refused (duplicate/missing names)
        self.waiting: list[tuple[JointTrajectory, float]] = []  # chunks waiting for their state, steady deadline
        # Receipt of the last chunk; the watchdog's reason while tripped (one hold per trip); the policy served.
        self.last_command_time = self.watchdog_reason = self.policy_identity = None
        # What happened since the last diagnostics message, so a 1 Hz report misses nothing.
        self.errors_since_report, self.watchdog_trips_since_report = [], 0
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        # Own node, DDS participant (context) and executor thread: a flood of chunks queued in the main
        # participant's receive threads or executor cannot delay the e-stop (no global args: `-r __node:=`
        # would rename it too). rclpy's MultiThreadedExecutor would do the same at half the chunk throughput.
        self.estop_context = rclpy.Context()
        rclpy.init(context=self.estop_context, domain_id=self.context.get_domain_id())
        name = self.get_name() + contract.ESTOP_NODE_SUFFIX
        en = self.estop_node = rclpy.create_node(
            name, namespace=self.get_namespace(), context=self.estop_context, use_global_arguments=False
        )
        self.estop_executor = SingleThreadedExecutor(context=self.estop_context)
        self.estop_executor.add_node(en)
        self.pub = CommandOutput(self, self.profile, QOS[K.COMMAND])  # arm (+ gripper: gripper_bridge)
        self.diag_pub = self.create_publisher(DiagnosticArray, contract.DIAGNOSTICS, QOS[K.DEFAULT])
        self.create_subscription(
            JointTrajectory, self.profile.policy_output_topic, self.on_chunk, QOS[K.COMMAND], raw=True
        )
        self.create_subscription(JointState, contract.JOINT_STATES, self.on_joint_state, QOS[K.STATE_SUB])
        for qos in (QOS[K.LATCHED], ESTOP_BEST_EFFORT):
            en.create_subscription(Bool, contract.ESTOP, self.on_estop, qos)
        if (heartbeat := self.safety.heartbeat_timeout_s) > 0:
            en.create_timer(min(0.02, heartbeat / 4), self.on_heartbeat_timer, clock=steady)
        threading.Thread(target=self.estop_executor.spin, name="estop", daemon=True).start()
        self.create_subscription(String, contract.POLICY_ACTIVE, self.on_policy_active, QOS[K.LATCHED])
        self.create_service(SetBool, "~/enable", self.on_enable)
        self.create_service(Trigger, "~/reset_estop", self.on_reset_estop)
        # Steady clock: runs on when /clock stops (dead sim); staleness is judged on the node clock.
        self.create_timer(1.0 / watchdog_hz, self.on_watchdog, clock=steady)
        self.create_timer(STATE_WAIT_S / 2, self.on_wait_timeout, clock=steady)
        self.create_timer(1.0 / contract.DIAGNOSTICS_HZ, self.publish_diagnostics, clock=steady)
        state = "enabled" if self.safety.enabled else "disabled until ~/enable"
        self.get_logger().info(f"safety filter: {self.profile.policy_output_topic} -> {self.pub.describe()}, {state}")

    def _hold(self, now: float, header=None) -> None:
        """Publish the hold (lock held); `header`: that of the chunk it answers (exact stamp).
        Any other hold is a stop: `stops` counts them so an answer decided before is not sent."""
        if self.closing:
            return  # the final hold was the last message
        self.stops += header is None
        stamp = (to_sec(header.stamp) or None) if header is not None else None
        if (chunk := self.safety.hold(now, stamp)) is None and header is None:
            return  # we never commanded and know no position: the controller holds on its own
        # No position known yet, but a chunk needs its answer (lockstep): empty, which JTC ignores.
        msg = common.chunk_to_msg(chunk) if chunk else JointTrajectory(joint_names=list(self.profile.joint_names))
        msg.header = header or msg.header
        self.pub.publish(msg)

    def _error(self, text: str) -> None:
        self.errors_since_report.append(text)
        self.get_logger().error(text, throttle_duration_sec=1.0)

    # --- inputs -----------------------------------------------------------------------
    def on_joint_state(self, msg: JointState) -> None:
        try:
            q = common.joint_positions(msg, self.profile.joint_names)
        except (KeyError, ValueError) as exc:
            with self.lock:
                if self.state_error is None:
                    self._hold(now_sec(self))
                self.state_error = f"refusing joint_states: {exc}"
                self._error(f"{self.state_error}; holding")
            return
        # Receipt time on our clock, not the header stamp: a driver's clock may differ from ours.
        # Before our clock has started (sim time, no /clock yet) the stamp is the best estimate.
        stamp, received = to_sec(msg.header.stamp), now_sec(self)
        with self.lock:
            self.state_error = None
            self.last_state_wall = time.monotonic()
            self.states.add(stamp, q, received if received > 0.0 else stamp)
            if (latched := self.safety.observe(q, stamp)) is not None:
                self._hold(received)
                self._error(f"{latched}: stop latched; needs ~/reset_estop and ~/enable")
        ready = [w for w in self.waiting if to_sec(w[0].header.stamp) <= stamp + _STAMP_TOL]
        self.waiting = [w for w in self.waiting if w not in ready]
        for chunk_msg, _ in ready:
            self._answer(chunk_msg)

    def on_wait_timeout(self) -> None:  # chunks whose state never came are checked against the latest one
        expired = [w for w in self.waiting if w[1] <= time.monotonic()]
        self.waiting = [w for w in self.waiting if w not in expired]
        for chunk_msg, _ in expired:
            self._answer(chunk_msg)

    def on_chunk(self, raw: bytes) -> None:
        self.last_command_time = now_sec(self)
        msg, too_long = common.take_trajectory(raw, contract.MAX_CHUNK_POINTS)  # the GIL stays free
        stamp = to_sec(msg.header.stamp)
        if too_long is not None:
            return self._answer(msg, too_long)
        if stamp > 0.0 and (self.states.newest_stamp is None or stamp > self.states.newest_stamp + _STAMP_TOL):
            self.waiting.append((msg, time.monotonic() + STATE_WAIT_S))
            return
        self._answer(msg)

    def _answer(self, msg: JointTrajectory, problem: str | None = None) -> None:
        chunk = None
        if msg.points and problem is None:  # parsed outside the lock: the e-stop must not wait for it
            try:
                chunk = common.msg_to_chunk(msg)
            except ValueError as exc:
                problem = str(exc)
        with self.lock:
            now, stops = now_sec(self), self.stops
            if problem is not None:
                out, reasons = self.safety.reject(problem)
            elif not msg.points:
                out, reasons = self.safety.upstream_hold()
            elif self.state_error is not None:
                out, reasons = self.safety.upstream_hold(self.state_error)
            else:
                measured_q, measured_time = self.states.lookup(chunk.stamp, _STAMP_TOL)
                out, reasons = self.safety.filter(chunk, measured_q, now, measured_time)
        if out is not None:  # reuse the message's points: building new ones costs more than the filter
            msg.joint_names = list(self.profile.joint_names)  # and its header: the exact stamp we answer
            for point, q in zip(msg.points, out.positions.tolist(), strict=True):
                point.positions, point.velocities, point.accelerations, point.effort = q, [], [], []
        with self.lock:  # a stop (e-stop, disable, ...) since we decided turns the answer into a hold
            if out is None or stops != self.stops:
                self._hold(now, msg.header)
            elif not self.closing:
                self.pub.publish(msg)
        if out is None and reasons[0].startswith("bad input"):
            self._error(f"holding: {reasons[0]}")
        elif reasons and chunk is not None:
            text = ("holding: " if out is None else "") + "; ".join(reasons)
            self.get_logger().warning(text, throttle_duration_sec=2.0)

    def on_estop(self, msg: Bool) -> None:
        with self.lock:
            now, was_latched = now_sec(self), self.safety.estop_latched
            self.safety.estop(now, pressed=msg.data, wall_time=time.monotonic())
            if msg.data:
                self._hold(now)
        if msg.data:
            self.get_logger().error("E-STOP: holding; needs ~/reset_estop and ~/enable to resume")
        elif was_latched:
            self.get_logger().warning("e-stop input released; still latched until ~/reset_estop and ~/enable")

    def on_heartbeat_timer(self) -> None:
        with self.lock:
            reason = self.safety.heartbeat_check(time.monotonic())
            if reason is None or self.safety.estop_latched:
                return
            self.safety.latch(now_sec(self), reason)
            self._hold(now_sec(self))
        self._error(f"{reason}: stop latched; needs ~/reset_estop and ~/enable")

    def on_policy_active(self, msg: String) -> None:
        """A different policy identity (serving.policy_identity JSON) than before is a hot-swap."""
        with self.lock:
            previous, self.policy_identity = self.policy_identity, msg.data
            if previous is not None and previous != msg.data:
                self.safety.restart_ramp(now_sec(self))
                self.get_logger().info(f"policy changed to {msg.data}: velocity ramps in again")

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self.lock:
            now = now_sec(self)
            if not request.data:
                self.safety.disable(now)
                self._hold(now)
            response.success, response.message = (
                self.safety.enable(now) if request.data else (True, "disabled; holding")
            )
        (self.get_logger().info if response.success else self._error)(f"~/enable {request.data}: {response.message}")
        return response

    def on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            response.success, response.message = self.safety.reset_estop(time.monotonic())
        (self.get_logger().info if response.success else self._error)(f"~/reset_estop: {response.message}")
        return response

    # --- watchdog, diagnostics, shutdown ----------------------------------------------
    def on_watchdog(self) -> None:
        with self.lock:
            now = now_sec(self)
            _, last_state_time = self.states.lookup(None)
            # A clock that jumped back (restarted sim) would otherwise mask staleness until it caught up.
            if self.last_command_time is not None and now < self.last_command_time:
                self.last_command_time = now
            # Wall-clock silence counts only under sim time (else the node clock is the wall clock).
            silence = time.monotonic() - self.last_state_wall if self.get_parameter("use_sim_time").value else 0.0
            last_state_time = None if last_state_time is None else min(last_state_time, now)
            reason = self.safety.check(now, last_state_time, self.last_command_time, silence)
            tripped = reason is not None and self.watchdog_reason is None
            if tripped:
                self.watchdog_trips_since_report += 1
                self.safety.note_hold(f"watchdog: {reason}")
                self._hold(now)
            cleared, self.watchdog_reason = reason is None and self.watchdog_reason is not None, reason
        if tripped:
            self.get_logger().warning(f"watchdog: {reason}; holding")
        elif cleared:
            self.get_logger().info("watchdog cleared")

    def publish_diagnostics(self) -> None:
        level, message = self.safety.diagnostic_summary(self.errors_since_report, self.watchdog_reason)
        if level == "OK" and self.watchdog_trips_since_report:
            level, message = "WARN", f"watchdog tripped: {self.safety.last_hold_reason}"
        values = self.safety.diagnostic_values(now_sec(self)) | {"policy": self.policy_identity or ""}
        msg = DiagnosticArray(status=[common.diagnostic_status(self, level, message, values)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)
        self.errors_since_report, self.watchdog_trips_since_report = [], 0

    def destroy_node(self) -> None:
        """The last act is a hold (run_node destroys the node before the context goes)."""
        with self.lock:
            self._hold(now_sec(self))
            self.closing = True
        self.pub.wait_for_all_acked(Duration(seconds=0.5))  # let the hold leave before the process does
        self.estop_executor.shutdown(timeout_sec=1.0)
        self.estop_node.destroy_node()
        self.estop_context.try_shutdown()
        super().destroy_node()


def _make_node() -> SafetyFilterNode:
    node = SafetyFilterNode()
    sys.setswitchinterval(0.001)  # the e-stop thread gets the GIL within 1 ms of a busy chunk thread, not 5
    return node


def main(args: list[str] | None = None) -> None:
    common.run_node(_make_node, args)


if __name__ == "__main__":
    main()
