"""Policy node: observations in, the policy runtime's action chunk out (BRIEF §2, §4, §5).

Subscriptions come from the active policy manifest's `inputs` (their `source` topics);
`dexstack.observation` decides whether an observation may be acted on. Every answer is a
JointTrajectory on the profile's policy output topic, stamped with the stamp of the
observation it answers: a chunk (points at (i + 1) * dt), or a hold (joint names and ZERO
points) when the input is missing, stale or garbage or the policy output is unusable.

Triggers: `timer` acts at `rate` Hz on the node's clock (sim time with use_sim_time) on the
latest message of each input; `observation` (lockstep sim) acts once per stamp as soon as
joint_states and every image with that same stamp have arrived.

Hot-swap: setting the `policy` parameter or calling `~/reload` loads and verifies the new
version through the store and builds its runtime before swapping; any failure is refused
with the reason and the previous policy keeps running. `~/enable` (SetBool) gates acting.
Diagnostics at contract.DIAGNOSTICS_HZ on the steady clock, so they keep coming while a
lockstep sim's clock stands still. No per-tick logging: timings go into rolling windows.

Family "gpayn" (an actor whose 11-D action moves the Adroit palm and fingers) is served through
`policies/gpayn/serving.py`'s ServingPolicy, which looks like any runtime to this node: its raw
inputs (the whole joint state, each tactile pad's normal force, the camera) go through the same
assembler (staleness, NaN, lockstep matching), the latched grasp target pose reaches it through
`set_pose`, and `act` returns a one-point chunk (IK of the integrated palm target), published
dt ahead. Missing grasp pose: WARN hold; IK failure: ERROR hold.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.hardware.profiles import RobotProfile, get_profile
from dexstack.observation import (
    DEPTH_KIND,
    JOINT_POSITIONS_KIND,
    NS,
    RGB_KIND,
    Assembly,
    HoldReason,
    ObservationAssembler,
    check_action,
    check_outputs_for_profile,
)
from dexstack.ros_nodes import common
from dexstack.runtime import ObservationError, PolicyRuntime, load_runtime
from dexstack.trajectory import ActionChunk

K = contract.QoSKind
TRIGGERS = ("timer", "observation")
GPAYN_FAMILY = "gpayn"
STATS_WINDOW = 1000  # ticks kept for percentiles (100 s at 10 Hz)
LOG_THROTTLE_S = 2.0


@dataclass
class ActivePolicy:
    """A verified policy version with its runtime and observation assembler."""

    name: str
    version: str
    manifest_sha256: str
    manifest: dict[str, Any]
    runtime: PolicyRuntime
    assembler: ObservationAssembler

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def joint_names(self) -> list[str]:
        return list(self.manifest["outputs"]["joint_names"])


class Window:
    """Rolling window of float samples with percentiles (None while empty)."""

    def __init__(self, size: int = STATS_WINDOW) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    def pct(self, q: float) -> float | None:
        return float(np.percentile(np.fromiter(self.values, float), q)) if self.values else None


def load_policy(ref: str, profile: RobotProfile, rate_hz: float | None = None) -> ActivePolicy:
    """Resolve `ref` ("NAME" or "NAME@VERSION") in the store (DEXSTACK_HOME), verify it
    against `profile`, and build its runtime. `rate_hz`: how often it will act (gpayn actions
    are scaled to it). Raises on any failure, with the reason."""
    from dexstack.store import PolicyStore  # the store reads DEXSTACK_HOME when constructed

    loaded = PolicyStore().load(ref, profile)
    manifest = loaded.manifest
    inputs, runtime = manifest["inputs"], None
    if manifest["family"] == GPAYN_FAMILY:
        from dexstack.policies.gpayn.serving import ServingPolicy  # mujoco IK model: loaded only for gpayn

        runtime = ServingPolicy(loaded.path, manifest, profile, None if rate_hz is None else 1.0 / rate_hz)
        manifest, inputs = runtime.node_manifest, runtime.raw_inputs
    check_outputs_for_profile(manifest["outputs"], profile.joint_names)
    assembler = ObservationAssembler(inputs)
    if runtime is None:
        runtime = load_runtime(loaded.path, manifest)
    return ActivePolicy(loaded.name, str(loaded.version), loaded.manifest_sha256, manifest, runtime, assembler)


def _stamp_ns(stamp: Time) -> int:
    return stamp.sec * NS + stamp.nanosec


def _time_msg(ns: int) -> Time:
    # Exact integer split: a float round trip would move wall-clock stamps by ~100 ns and the
    # lockstep sim matches answers to observations by exact stamp.
    return Time(sec=ns // NS, nanosec=ns % NS)


def convert_input(spec: dict[str, Any], msg: JointState | Image) -> np.ndarray:
    """Message -> array for one manifest input. Raises KeyError/ValueError with the reason."""
    if spec.get("message") == contract.TACTILE_MSG_TYPE:  # a pad's normal force (gpayn raw input)
        return np.array([msg.wrench.force.z], dtype=np.float64)
    kind = spec["kind"]
    if kind == JOINT_POSITIONS_KIND:
        return common.joint_positions(msg, spec["names"])
    want = "rgb8" if kind == RGB_KIND else "16UC1"
    if msg.encoding != want:
        raise ValueError(f"image encoding {msg.encoding!r}, expected {want!r}")
    if len(msg.data) != msg.height * msg.step or msg.step != msg.width * (3 if kind == RGB_KIND else 2):
        raise ValueError(f"image {msg.width}x{msg.height} step {msg.step} does not match its {len(msg.data)} bytes")
    if kind == DEPTH_KIND and spec.get("dtype") == "uint16":  # the graph wants raw millimetres
        value = np.frombuffer(bytes(msg.data), dtype=np.uint16).reshape(msg.height, msg.width)
    else:
        value = common.image_to_array(msg)
    if kind == DEPTH_KIND and len(spec["shape"]) == 3:
        value = value[..., None]
    return value


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
        self.profile = get_profile(self.get_parameter("profile").value)
        self.rate = float(self.get_parameter("rate").value)
        self.trigger = self.get_parameter("trigger").value
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger {self.trigger!r} is not one of {TRIGGERS}")
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0 Hz, got {self.rate}")
        self.enabled = bool(self.get_parameter("start_enabled").value)

        self.active: ActivePolicy | None = None
        self.subs: dict[str, Any] = {}  # source topic -> subscription
        self.episode_key: tuple | None = None
        self.last_answer: JointTrajectory | None = None
        # Rolling stats (ms) and counters for diagnostics and benchmarks.
        self.inference_ms, self.e2e_ms, self.age_ms, self.jitter_ms = Window(), Window(), Window(), Window()
        self.period_ms, self.compute_ms = Window(), Window()  # compute: trigger -> chunk published (steady)
        self.last_tick_ns: int | None = None
        self.chunks = self.holds = 0
        self.last_hold: HoldReason | None = None
        self.worst: HoldReason | None = None  # worst problem since the last diagnostics message
        self.load_error = ""

        self.pub = self.create_publisher(JointTrajectory, self.profile.policy_output_topic, common.QOS[K.COMMAND])
        self.pub_diag = self.create_publisher(DiagnosticArray, contract.DIAGNOSTICS, common.QOS[K.DEFAULT])
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
        self.create_timer(1.0 / contract.DIAGNOSTICS_HZ, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

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
            carry_over = getattr(new.runtime, "carry_over_from", None)  # latched context (gpayn's grasp pose)
            if carry_over is not None:
                carry_over(self.active.runtime)
        previous = self.active.ref if self.active else None
        self.active = new
        self.load_error = ""
        self._rewire()
        self.get_logger().info(f"serving {new.ref} (sha256 {new.manifest_sha256[:12]}, "
                               f"inputs {list(new.assembler.sources())}) replacing {previous}")
        return True, f"serving {new.ref}"

    def _rewire(self) -> None:
        """Subscribe to the active manifest's sources, keeping unchanged subscriptions (no
        rediscovery) and dropping ones the new policy does not read."""
        wanted = self.active.assembler.sources()
        poses = getattr(self.active.runtime, "pose_sources", ())  # latched poses, not assembled
        for source in [s for s in self.subs if s not in wanted and s not in poses]:
            self.destroy_subscription(self.subs.pop(source))
        for source in poses:
            if source not in self.subs:
                self.subs[source] = self.create_subscription(
                    PoseStamped, source, lambda msg, source=source: self._on_pose(source, msg), common.QOS[K.LATCHED])
        for source, specs in wanted.items():
            if source in self.subs:
                continue
            if "message" in specs[0]:
                msg_type, qos = common.message_class(specs[0]["message"]), common.QOS[K.SENSOR_DATA]
            elif specs[0]["kind"] == JOINT_POSITIONS_KIND:
                msg_type, qos = JointState, common.QOS[K.STATE_SUB]
            else:
                msg_type, qos = Image, common.QOS[K.SENSOR_DATA]
            self.subs[source] = self.create_subscription(
                msg_type, source, lambda msg, source=source: self._on_input(source, msg), qos)

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
            key = (info.get("episode"), info.get("seed"))
        except (ValueError, AttributeError):
            self.get_logger().warning(f"ignoring {contract.SIM_EPISODE} message that is not a JSON object: {msg.data!r}")
            return
        if key != self.episode_key:
            self.episode_key = key
            if self.trigger == "observation":
                self.last_tick_ns = None  # the gap between two episodes is not loop jitter
            if self.active is not None:
                self.active.runtime.reset()
                started = getattr(self.active.runtime, "episode_started", None)  # drops the last scene's grasp pose
                if started is not None and isinstance(info.get("stamp"), int | float):
                    started(int(round(float(info["stamp"]) * NS)))

    def _on_pose(self, source: str, msg: PoseStamped) -> None:
        active = self.active
        if active is None or source not in getattr(active.runtime, "pose_sources", ()):
            return
        p, o = msg.pose.position, msg.pose.orientation
        active.runtime.set_pose(source, _stamp_ns(msg.header.stamp), [p.x, p.y, p.z], [o.w, o.x, o.y, o.z])

    # --- acting -----------------------------------------------------------------------------
    def _on_input(self, source: str, msg: JointState | Image) -> None:
        started = time.perf_counter()
        active = self.active
        if active is None:
            return
        stamp_ns = _stamp_ns(msg.header.stamp)
        jumps = active.assembler.time_jumps
        for spec in active.assembler.sources().get(source, []):
            try:
                active.assembler.add(spec["name"], stamp_ns, convert_input(spec, msg))
            except (KeyError, ValueError) as exc:
                active.assembler.add_invalid(spec["name"], stamp_ns, str(exc).strip("\"'"))
        if active.assembler.time_jumps != jumps:
            active.runtime.reset()  # the clock went back: a new episode
        if self.trigger != "observation" or not self.enabled:
            return
        now_ns = self.get_clock().now().nanoseconds
        result = active.assembler.take_matched(now_ns)
        if result is not None:
            self._track_period(result.stamp_ns)  # lockstep: the loop is one answer per observation
            self._answer(active, result, started)
        elif (stamp_ns == active.assembler.answered_ns and source == contract.JOINT_STATES
              and self.last_answer is not None and _stamp_ns(self.last_answer.header.stamp) == stamp_ns):
            # The lockstep sim re-sent an observation we answered: our answer was lost. Send
            # the same answer again; the stamp is still computed on only once.
            self.pub.publish(self.last_answer)

    def _track_period(self, now_ns: int) -> None:
        """Loop period and its jitter against 1/rate, on the node clock."""
        if self.last_tick_ns is not None and now_ns > self.last_tick_ns:
            period_ms = (now_ns - self.last_tick_ns) / 1e6
            self.period_ms.add(period_ms)
            self.jitter_ms.add(abs(period_ms - 1000.0 / self.rate))
        self.last_tick_ns = now_ns

    def _on_tick(self) -> None:
        started = time.perf_counter()
        now_ns = self.get_clock().now().nanoseconds
        self._track_period(now_ns)
        if not self.enabled or self.active is None:
            return
        self._answer(self.active, self.active.assembler.latest(now_ns), started)

    def _answer(self, active: ActivePolicy, result: Assembly, started: float) -> None:
        """Publish a chunk for `result`, or a hold. `started`: perf_counter at the trigger."""
        if result.age_s is not None:
            self.age_ms.add(result.age_s * 1e3)
        if result.hold is not None:
            self._hold(result.stamp_ns, result.hold)
            return
        start = time.perf_counter()
        try:
            action = np.asarray(active.runtime.act(result.observation))
        except ObservationError as exc:
            if getattr(exc, "hold_level", "ERROR") == "WARN":  # an input the policy waits for
                self._hold(result.stamp_ns, HoldReason("WARN", f"policy waits: {exc}"))
            else:
                self._hold(result.stamp_ns, HoldReason("ERROR", f"policy refused the observation: {exc}"))
            return
        except Exception as exc:  # noqa: BLE001 - a failing runtime must hold, not kill the control node
            self._hold(result.stamp_ns, HoldReason("ERROR", f"policy runtime failed: {type(exc).__name__}: {exc}"))
            return
        self.inference_ms.add((time.perf_counter() - start) * 1e3)
        bad = check_action(action, active.manifest["outputs"])
        if bad is not None:
            self._hold(result.stamp_ns, bad)
            return
        outputs = active.manifest["outputs"]
        msg = common.chunk_to_msg(ActionChunk.uniform(outputs["joint_names"], action, float(outputs["dt"]),
                                                      result.stamp_ns / NS))
        msg.header.stamp = _time_msg(result.stamp_ns)
        self._publish(msg)
        self.chunks += 1
        self.compute_ms.add((time.perf_counter() - started) * 1e3)
        self.e2e_ms.add((self.get_clock().now().nanoseconds - result.stamp_ns) / 1e6)

    def _hold_msg(self, stamp_ns: int) -> JointTrajectory:
        msg = JointTrajectory()
        msg.header.stamp = _time_msg(stamp_ns)
        msg.joint_names = self.active.joint_names if self.active else list(self.profile.joint_names)
        return msg  # zero points: the controller holds its current command

    def _hold(self, stamp_ns: int, reason: HoldReason) -> None:
        self._publish(self._hold_msg(stamp_ns))
        self.holds += 1
        self.last_hold = reason
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
        def ms(window: Window, q: float) -> str:
            value = window.pct(q)
            return "" if value is None else f"{value:.3f}"

        active = self.active
        values: dict[str, object] = {
            "policy": active.name if active else "", "version": active.version if active else "",
            "manifest_sha256": active.manifest_sha256 if active else "",
            "family": active.manifest.get("family", "") if active else "",
            "enabled": self.enabled, "trigger": self.trigger, "rate_hz": self.rate,
            "inference_ms_p50": ms(self.inference_ms, 50), "inference_ms_p99": ms(self.inference_ms, 99),
            "e2e_ms_p50": ms(self.e2e_ms, 50), "e2e_ms_p99": ms(self.e2e_ms, 99),
            "compute_ms_p50": ms(self.compute_ms, 50), "compute_ms_p99": ms(self.compute_ms, 99),
            "observation_age_ms": f"{self.age_ms.values[-1]:.3f}" if self.age_ms.values else "",
            "observation_age_ms_p99": ms(self.age_ms, 99),
            "chunks": self.chunks, "hold_count": self.holds,
            "last_hold_reason": self.last_hold.message if self.last_hold else "",
            "load_error": self.load_error,
        }
        values |= {"loop_period_ms_p50": ms(self.period_ms, 50), "loop_jitter_ms_p99": ms(self.jitter_ms, 99)}
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
