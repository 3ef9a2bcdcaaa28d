"""Policy node: observations in, the policy runtime's action chunk out (BRIEF §2, §4, §5).

Subscriptions come from the active policy manifest's `inputs` alone: each input's kind fixes its
message type, QoS and conversion (`ros_nodes/inputs.py`); `dexstack.observation` decides whether
an observation may be acted on (staleness, NaN, lockstep matching, latched inputs). Every answer
is a JointTrajectory on the profile's policy output topic, stamped with the stamp of the
observation it answers: a chunk (points at (i + 1) * dt), or a hold (joint names and ZERO points)
when the input is missing, stale or garbage or the policy output is unusable (WARN or ERROR:
an ObservationError from the runtime holds at its `level`).

Triggers: `timer` acts at `rate` Hz on the node's clock (sim time with use_sim_time) on the
latest message of each input; `observation` (lockstep sim) acts once per stamp as soon as every
streamed input with that same stamp has arrived.

Hot-swap (`policy` parameter or `~/reload`): the new version is loaded, verified and built (family registry)
before the swap; latched inputs carry over; a failure keeps the old policy. `~/enable` (SetBool) gates acting.
`/sim/episode` resets the runtime and drops latched inputs stamped before it. Diagnostics: steady clock.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.hardware.profiles import get_profile
from dexstack.observation import NS, Assembly, HoldReason, check_action
from dexstack.ros_nodes import common, inputs
from dexstack.runtime import ObservationError
from dexstack.serving import ActivePolicy, ServingStats, load_policy, policy_identity
from dexstack.trajectory import ActionChunk

K = contract.QoSKind
TRIGGERS = ("timer", "observation")
LOG_THROTTLE_S = 2.0


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy")
        fixed = ParameterDescriptor(read_only=True)
        self.declare_parameter("profile", "panda", fixed)
        self.declare_parameter("policy", "", ParameterDescriptor(description="NAME or NAME@VERSION in the store"))
        # `-p rate:=50` arrives as an integer: accept any number.
        self.declare_parameter("rate", contract.POLICY_HZ, ParameterDescriptor(read_only=True, dynamic_typing=True))
        self.declare_parameter("trigger", "timer", fixed)
        self.declare_parameter("start_enabled", True, fixed)
        self.profile = common.with_controller(self, get_profile(self.get_parameter("profile").value))
        self.rate = float(self.get_parameter("rate").value)
        self.trigger = self.get_parameter("trigger").value
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger {self.trigger!r} is not one of {TRIGGERS}")
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0 Hz, got {self.rate}")
        self.enabled = bool(self.get_parameter("start_enabled").value)

        self.active: ActivePolicy | None = None
        self.subs: dict[str, tuple[Any, tuple]] = {}  # source topic -> (subscription, (message class, QoS))
        self.episode_key: tuple | None = None
        self.last_answer: JointTrajectory | None = None
        self.stats = ServingStats(self.rate)
        self.worst: HoldReason | None = None  # worst problem since the last diagnostics message
        self.load_error = ""

        self.pub = self.create_publisher(JointTrajectory, self.profile.policy_output_topic, common.QOS[K.COMMAND])
        self.pub_diag = self.create_publisher(DiagnosticArray, contract.DIAGNOSTICS, common.QOS[K.DEFAULT])
        self.pub_active = self.create_publisher(String, contract.POLICY_ACTIVE, common.QOS[K.LATCHED])
        self.create_subscription(String, contract.SIM_EPISODE, self._on_episode, common.QOS[K.LATCHED])
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_service(Trigger, "~/reload", self._on_reload)
        ref = self.get_parameter("policy").value
        if ref:
            self.swap(ref)  # on failure: logged, ERROR in diagnostics, a later set/reload may fix it
        else:
            self.load_error = "parameter 'policy' is empty"
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self.trigger == "timer":
            self.create_timer(1.0 / self.rate, self._on_tick)  # node clock: sim time in sim
        self.create_timer(
            1.0 / contract.DIAGNOSTICS_HZ, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )

    # --- policy loading / hot-swap --------------------------------------------------------
    def swap(self, ref: str) -> tuple[bool, str]:
        """Load `ref` fully, then swap it in. On failure the current policy stays; returns
        (ok, message)."""
        try:
            new = load_policy(ref, self.profile, self.rate)
        except Exception as exc:  # noqa: BLE001 - store, manifest and onnxruntime errors all refuse the swap
            self.load_error = f"refused {ref}: {type(exc).__name__}: {exc}"
            self._note(HoldReason("ERROR", self.load_error))
            kept = f"; still serving {self.active.ref}" if self.active else ""
            self.get_logger().error(self.load_error + kept)
            return False, self.load_error + kept
        if self.active is not None:
            new.assembler.carry_over_from(self.active.assembler)
        previous = self.active.ref if self.active else None
        self.active, self.load_error = new, ""
        self._rewire()
        self.pub_active.publish(String(data=json.dumps(policy_identity(new))))
        sha, sources = new.manifest_sha256[:12], list(new.assembler.sources())
        self.get_logger().info(f"serving {new.ref} (sha256 {sha}, inputs {sources}) replacing {previous}")
        return True, f"serving {new.ref}"

    def _rewire(self) -> None:
        """Subscribe to the active manifest's sources, keeping unchanged subscriptions (no
        rediscovery) and dropping ones the new policy does not read."""
        wanted = self.active.assembler.sources()
        # Inputs sharing a topic share its message type: the first one's kind says how to subscribe.
        wiring = {source: inputs.input_subscription(specs[0]) for source, specs in wanted.items()}
        for source in [s for s in self.subs if wiring.get(s) != self.subs[s][1]]:
            self.destroy_subscription(self.subs.pop(source)[0])
        for source, (msg_type, qos) in wiring.items():
            if source not in self.subs:
                sub = self.create_subscription(msg_type, source, functools.partial(self._on_input, source), qos)
                self.subs[source] = (sub, (msg_type, qos))

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name == "policy":
                if param.type_ != Parameter.Type.STRING or not param.value:
                    return SetParametersResult(successful=False, reason="policy must be a non-empty NAME[@VERSION]")
                ok, message = self.swap(param.value)
                return SetParametersResult(successful=ok, reason=message)
        return SetParametersResult(successful=True)

    def _on_reload(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        # Re-resolve the current ref: "NAME" picks up a newly promoted version.
        response.success, response.message = self.swap(self.get_parameter("policy").value)
        return response

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data and not self.enabled and self.active is not None:
            self.active.runtime.reset()  # history from before the pause says nothing now
        if not request.data and self.enabled and self.active is not None:
            now_ns = self.get_clock().now().nanoseconds
            self.pub.publish(self._hold_msg(now_ns))  # stop the chunk being executed
        self.enabled = bool(request.data)
        response.success, response.message = True, "enabled" if self.enabled else "disabled"
        self.get_logger().info(f"policy {response.message}")
        return response

    def _on_episode(self, msg: String) -> None:
        try:
            info = json.loads(msg.data)
            key, stamp = (info.get("episode"), info.get("seed")), info.get("stamp")
            start_ns = round(float(stamp) * NS) if isinstance(stamp, int | float) else None  # NaN, inf raise
        except (ValueError, AttributeError, OverflowError):
            self.get_logger().warning(
                f"ignoring {contract.SIM_EPISODE}: not a JSON object with a finite stamp: {msg.data!r}"
            )
            return
        if key != self.episode_key:
            self.episode_key = key
            if self.trigger == "observation":
                self.stats.last_tick_ns = None  # the gap between two episodes is not loop jitter
            if self.active is not None:
                self.active.runtime.reset()
                if start_ns is not None:  # drops the last scene's latched inputs
                    self.active.assembler.episode_started(start_ns)

    # --- acting -----------------------------------------------------------------------------
    def _on_input(self, source: str, msg: Any) -> None:
        started = time.perf_counter()
        active = self.active
        if active is None:
            return
        stamp_ns = common.stamp_ns(msg.header.stamp)
        jumps = active.assembler.time_jumps
        for spec in active.assembler.sources().get(source, []):
            try:
                active.assembler.add(spec["name"], stamp_ns, inputs.convert_input(spec, msg))
            except (KeyError, ValueError) as exc:
                active.assembler.add_invalid(spec["name"], stamp_ns, str(exc).strip("\"'"))
        if active.assembler.time_jumps != jumps:
            active.runtime.reset()  # the clock went back: a new episode
        if self.trigger != "observation" or not self.enabled:
            return
        now_ns = self.get_clock().now().nanoseconds
        result = active.assembler.take_matched(now_ns)
        if result is not None:
            self.stats.tick(result.stamp_ns)  # lockstep: the loop is one answer per observation
            self._answer(active, result, started)
        elif (
            stamp_ns == active.assembler.answered_ns
            and source == contract.JOINT_STATES
            and self.last_answer is not None
            and common.stamp_ns(self.last_answer.header.stamp) == stamp_ns
        ):
            # The lockstep sim re-sent an observation we answered: our answer was lost. Send
            # the same answer again; the stamp is still computed on only once.
            self.pub.publish(self.last_answer)

    def _on_tick(self) -> None:
        started = time.perf_counter()
        now_ns = self.get_clock().now().nanoseconds
        self.stats.tick(now_ns)
        if not self.enabled or self.active is None:
            return
        self._answer(self.active, self.active.assembler.latest(now_ns), started)

    def _answer(self, active: ActivePolicy, result: Assembly, started: float) -> None:
        """Publish a chunk for `result`, or a hold. `started`: perf_counter at the trigger."""
        if result.age_s is not None:
            self.stats.age_ms.add(result.age_s * 1e3)
        if result.hold is not None:
            self._hold(result.stamp_ns, result.hold)
            return
        start = time.perf_counter()
        try:
            action = np.asarray(active.runtime.act(result.observation))
        except ObservationError as exc:
            what = "policy waits" if exc.level == "WARN" else "policy refused the observation"
            self._hold(result.stamp_ns, HoldReason(exc.level, f"{what}: {exc}"))
            return
        except Exception as exc:  # noqa: BLE001 - a failing runtime must hold, not kill the control node
            self._hold(result.stamp_ns, HoldReason("ERROR", f"policy runtime failed: {type(exc).__name__}: {exc}"))
            return
        self.stats.inference_ms.add((time.perf_counter() - start) * 1e3)
        bad = check_action(action, active.manifest["outputs"])
        if bad is not None:
            self._hold(result.stamp_ns, bad)
            return
        outputs = active.manifest["outputs"]
        msg = common.chunk_to_msg(
            ActionChunk.uniform(outputs["joint_names"], action, float(outputs["dt"]), result.stamp_ns / NS)
        )
        msg.header.stamp = common.time_msg(result.stamp_ns)
        self._publish(msg)
        self.stats.chunks += 1
        self.stats.compute_ms.add((time.perf_counter() - started) * 1e3)
        self.stats.e2e_ms.add((self.get_clock().now().nanoseconds - result.stamp_ns) / 1e6)

    def _hold_msg(self, stamp_ns: int) -> JointTrajectory:
        msg = JointTrajectory()
        msg.header.stamp = common.time_msg(stamp_ns)
        msg.joint_names = self.active.joint_names if self.active else list(self.profile.joint_names)
        return msg  # zero points: the controller holds its current command

    def _hold(self, stamp_ns: int, reason: HoldReason) -> None:
        self._publish(self._hold_msg(stamp_ns))
        self.stats.holds += 1
        self.stats.last_hold_reason = reason.message
        self._note(reason)
        # rclpy ties a throttled log to its call site and severity: one call site per level.
        if reason.level == "ERROR":
            self.get_logger().error(f"hold: {reason.message}", throttle_duration_sec=LOG_THROTTLE_S)
        else:
            self.get_logger().warning(f"hold: {reason.message}", throttle_duration_sec=LOG_THROTTLE_S)

    def _note(self, problem: HoldReason) -> None:
        if self.worst is None or (problem.level == "ERROR" and self.worst.level != "ERROR"):
            self.worst = problem

    def _publish(self, msg: JointTrajectory) -> None:
        self.pub.publish(msg)
        self.last_answer = msg

    # --- diagnostics --------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        active = self.active
        values: dict[str, object] = {
            **policy_identity(active),
            "enabled": self.enabled,
            "trigger": self.trigger,
            "rate_hz": self.rate,
            **self.stats.values(),
            "load_error": self.load_error,
        }
        if active is None:
            level, message = "ERROR", f"no policy loaded: {self.load_error}"
        elif self.worst is not None:
            level, message = self.worst.level, self.worst.message
        else:
            level, message = "OK", f"serving {active.ref}" if self.enabled else f"{active.ref} loaded, disabled"
        self.worst = None
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [common.diagnostic_status(self, level, message, values)]
        self.pub_diag.publish(array)


def main(args: list[str] | None = None) -> None:
    common.run_node(PolicyNode, args)


if __name__ == "__main__":
    main()
