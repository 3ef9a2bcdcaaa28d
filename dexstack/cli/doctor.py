"""`dexstack doctor`: check a running graph (robot or sim) against the contract, the robot profile
and a policy's manifest, the way ros2doctor checks a graph, but against what dexstack needs.

Every fact comes from where it is defined: topic names, types and QoS from `dexstack.contract`,
joints, cameras and rates from `dexstack.hardware.profiles`, node names from `dexstack.graph`,
what a policy reads from its manifest, and whether a message can feed that policy from the policy
node's own conversion (`ros_nodes/inputs.py`) and observation checks (`dexstack.observation`),
so that a camera the runtime can resize passes here exactly when it passes in the node.

Checks (area: what fails):
- topics: a contract, profile or manifest-input topic with no publisher (or, for the controller
  topic and the e-stop, no subscriber), or with another message type;
- qos: on any topic of the graph, a publisher that reaches none of a subscribing node's
  subscriptions on that topic. Like ros2doctor's QoSCompatibilityCheck (ros2cli
  `ros2doctor/api/qos_compatibility.py`) the pairs are judged by `rclpy.qos.qos_check_compatible`;
  unlike it, a node that subscribes to one topic several times (to accept several QoS) is
  compatible when ONE of its subscriptions matches. A publisher weaker than the contract's QoS
  for its topic is a warning;
- safety: a publisher other than the safety filter on the controller's topic, or a filter that
  does not subscribe to the e-stop; the QoS the filter's e-stop subscriptions accept is read from
  the graph and shown (a robot with no e-stop relay publishing warns); in heartbeat mode (the
  filter's `estop_heartbeat_timeout` > 0) a relay must beat at least twice per timeout;
- joints: /joint_states names missing, duplicated or in another order than the profile's (our
  nodes map by name, but another order means the profile does not describe this robot);
- cameras: a resolution smaller than the profile's (a larger one warns: the runtime center-crops
  and resizes it), an encoding the policy node cannot convert, camera_info disagreeing with its
  image. Whether a policy can use the
  camera's resolution (cropped and resized to what its manifest asks) is the inputs check;
- inputs (with a policy): a message on an input's topic that the policy node would refuse;
- rates: measured from header stamps (so sim time under a real-time factor counts right) below
  half the nominal rate of the contract/profile (for the policy's chunks and the filter's
  answers: the loop rate the enabled policy node reports), or so slow that a policy input goes
  stale;
- clock: nodes on use_sim_time with no /clock publisher, nodes on wall time while /clock is
  published, or two clocks;
- diagnostics: a node reporting ERROR all the time we listen (at times only: a warning).
Exit status 1 when any check fails (warnings alone exit 0); 2 when the doctor cannot start (an
unknown policy or profile, or no --profile and no safety filter to ask). `--json` prints one
object: {ok, domain, profile, policy, checks: [{area, subject, status (ok|warn|fail), detail}]}.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

if TYPE_CHECKING:
    from dexstack.hardware.profiles import RobotProfile
    from dexstack.ros_nodes.client import RosClient

OK, WARN, FAIL = "ok", "warn", "fail"
AREAS = ("nodes", "topics", "qos", "safety", "joints", "cameras", "inputs", "rates", "clock", "diagnostics")
SLOW_FAIL = 0.5  # a topic slower than this fraction of its nominal rate fails...
SLOW_WARN = 0.8  # ... and slower than this one warns (faster is fine: the contract allows 100-500 Hz states)
MIN_SAMPLES = 3
SAMPLE_DEPTH = 500  # messages a sampling subscription queues (5 s of joint states at 100 Hz)
LIMIT_SLACK = 0.05  # rad or m: a measured position this far past a limit is overshoot or noise, not a fault
PARAM_TIMEOUT_S = 3.0
SERVED_GRACE_S = 3.0  # how long after the safety filter a policy node may still show up in discovery
NODE_NAME = "dexstack_doctor"
# The safety filter's heartbeat-mode parameter (issue 12 row 2); a filter without it is not checked.
HEARTBEAT_PARAM = "estop_heartbeat_timeout"
ROS_INTERNAL_TOPICS = ("/parameter_events", "/rosout")  # ros2doctor's TopicCheck skips these too


@dataclass(frozen=True)
class Check:
    area: str
    subject: str  # a topic or node name
    status: str  # ok | warn | fail
    detail: str


@dataclass
class Report:
    domain: str
    profile: str
    policy: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def add(self, area: str, subject: str, status: str, detail: str) -> None:
        self.checks.append(Check(area, subject, status, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "domain": self.domain,
            "profile": self.profile,
            "policy": self.policy,
            "checks": [asdict(c) for c in self.checks],
        }


@dataclass
class Samples:
    """What arrived on one topic: stamps (s; header stamp, /clock's time, else receipt) and the
    latest message of each variant (resolution + encoding, joint-name list, ...)."""

    stamps: list[float] = field(default_factory=list)
    variants: dict[Hashable, Any] = field(default_factory=dict)

    def rate_hz(self) -> float | None:
        """1 / median period: robust to a dropped best-effort message or a scheduling hiccup."""
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False) if b > a]
        return 1.0 / statistics.median(gaps) if len(gaps) >= MIN_SAMPLES - 1 else None


def _variant(msg: Any) -> Hashable:
    kind = type(msg).__name__
    if kind == "Image":
        return (msg.width, msg.height, msg.encoding)
    if kind == "CameraInfo":
        return (msg.width, msg.height)
    if kind == "JointState":
        return (tuple(msg.name), len(msg.position))
    return None


def _stamp(msg: Any) -> float:
    from dexstack.ros_nodes.common import to_sec

    if hasattr(msg, "clock"):  # rosgraph_msgs/Clock
        return to_sec(msg.clock)
    stamp = to_sec(msg.header.stamp) if hasattr(msg, "header") else 0.0
    return stamp if stamp > 0.0 else time.monotonic()


def _who(endpoint: Any) -> str:
    """The fully qualified node name of a publisher or subscription info."""
    return f"{endpoint.node_namespace.rstrip('/')}/{endpoint.node_name}"


def _qos_text(qos: Any) -> str:
    return f"{qos.reliability.name.lower()}/{qos.durability.name.lower()}"


# --- what the graph should have -------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One topic the graph must carry: its type, the contract's publisher QoS kind (None: any),
    whether it needs a publisher / a subscriber, and its nominal rate (None: not measured)."""

    topic: str
    msg_type: str
    qos: Any = None
    needs_publisher: bool = True
    needs_subscriber: bool = False
    nominal_hz: float | None = None
    why: str = ""


def expected_topics(profile: RobotProfile, manifest: dict[str, Any] | None) -> dict[str, Expected]:
    """The topics to check, from the contract, the profile and (if given) the manifest's inputs."""
    from dexstack import contract
    from dexstack.manifest import INPUT_KINDS

    K = contract.QoSKind
    out: dict[str, Expected] = {}
    rates = {contract.JOINT_STATES: contract.JOINT_STATE_HZ}
    for cam in profile.cameras:
        for topic in (
            contract.camera_color_topic(cam.name),
            contract.camera_depth_topic(cam.name),
            contract.camera_info_topic(cam.name),
        ):
            rates[topic] = cam.hz
    rates |= {contract.tactile_topic(pad): contract.TACTILE_HZ for pad in profile.tactile_pads}
    for spec in profile.topics():
        command = spec.name == profile.trajectory_topic
        out[spec.name] = Expected(
            spec.name,
            spec.msg_type,
            spec.qos,
            needs_subscriber=command,
            nominal_hz=rates.get(spec.name),
            why="the controller's command topic (published by the safety filter)" if command else "robot profile",
        )
    out[profile.policy_output_topic] = Expected(
        profile.policy_output_topic,
        "trajectory_msgs/msg/JointTrajectory",
        K.COMMAND,
        needs_publisher=False,
        needs_subscriber=True,
        why="policy output, relayed by the safety filter",
    )
    for spec in contract.OPERATOR_TOPICS:
        if spec.name == contract.ESTOP:
            out[spec.name] = Expected(
                spec.name, spec.msg_type, spec.qos, needs_publisher=False, needs_subscriber=True, why="e-stop"
            )
        elif spec.name == contract.DIAGNOSTICS:
            out[spec.name] = Expected(spec.name, spec.msg_type, spec.qos, why="every node reports here")
    for spec in (manifest or {}).get("inputs", []):
        previous = out.get(spec["source"])
        out[spec["source"]] = Expected(
            spec["source"],
            INPUT_KINDS[spec["kind"]],
            previous.qos if previous else None,
            needs_subscriber=previous.needs_subscriber if previous else False,
            nominal_hz=previous.nominal_hz if previous else None,
            why=f"policy input {spec['name']!r}",
        )
    return out


# --- talking to the graph -------------------------------------------------------------------


class GraphProbe:
    """A plain rclpy node that discovers the graph, samples topics and reads node parameters."""

    def __init__(self, client: RosClient) -> None:
        self.client = client
        self.node = client.node
        self.samples: dict[str, Samples] = {}
        self.statuses: dict[str, list[Any]] = {}  # node -> every DiagnosticStatus it sent while we listened

    def watch_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        from dexstack import contract
        from dexstack.ros_nodes.common import QOS

        def on_diagnostics(msg: Any) -> None:
            for status in msg.status:
                self.statuses.setdefault(status.name, []).append(status)

        self.node.create_subscription(
            DiagnosticArray, contract.DIAGNOSTICS, on_diagnostics, QOS[contract.QoSKind.DEFAULT]
        )

    def sample(self, topic: str, msg_class: type, qos: Any) -> None:
        samples = self.samples.setdefault(topic, Samples())

        def on_message(msg: Any) -> None:
            samples.stamps.append(_stamp(msg))
            samples.variants[_variant(msg)] = msg

        self.node.create_subscription(msg_class, topic, on_message, qos)

    def types(self) -> dict[str, list[str]]:
        return dict(self.node.get_topic_names_and_types())

    def others(self, infos: list[Any]) -> list[Any]:
        """Endpoint infos of every node but this probe."""
        me = (self.node.get_name(), self.node.get_namespace())
        return [i for i in infos if (i.node_name, i.node_namespace) != me]

    def publishers(self, topic: str) -> list[Any]:
        return self.others(self.node.get_publishers_info_by_topic(topic))

    def subscriptions(self, topic: str) -> list[Any]:
        return self.others(self.node.get_subscriptions_info_by_topic(topic))

    def nodes(self) -> list[str]:
        me = self.node.get_fully_qualified_name()
        names = [(ns.rstrip("/") + "/" + name) for name, ns in self.node.get_node_names_and_namespaces()]
        return sorted(n for n in set(names) if n != me)

    def parameters(self, wanted: list[tuple[str, str]], timeout_s: float) -> dict[tuple[str, str], Any]:
        """{(node, name): value} for the (node, parameter name) pairs answered within `timeout_s`,
        all asked at once; a node without parameter services, or without that parameter, is
        absent. (One name per request: rclpy answers a request naming any undeclared parameter
        with no values at all.)"""
        from rcl_interfaces.msg import ParameterType
        from rcl_interfaces.srv import GetParameters

        field_of = {
            ParameterType.PARAMETER_BOOL: "bool_value",
            ParameterType.PARAMETER_STRING: "string_value",
            ParameterType.PARAMETER_INTEGER: "integer_value",
            ParameterType.PARAMETER_DOUBLE: "double_value",
        }
        clients = {n: self.node.create_client(GetParameters, f"{n}/get_parameters") for n, _ in wanted}
        deadline = time.monotonic() + timeout_s
        futures: dict[tuple[str, str], Any] = {}
        try:
            while time.monotonic() < deadline:
                for n, name in wanted:
                    if (n, name) not in futures and clients[n].service_is_ready():
                        futures[n, name] = clients[n].call_async(GetParameters.Request(names=[name]))
                if len(futures) == len(wanted) and all(f.done() for f in futures.values()):
                    break
                self.client.executor.spin_once(timeout_sec=0.05)
        finally:
            for c in clients.values():
                self.node.destroy_client(c)
        out: dict[tuple[str, str], Any] = {}
        for key, f in futures.items():
            values = f.result().values if f.done() and f.result() is not None else []
            if values and values[0].type in field_of:
                out[key] = getattr(values[0], field_of[values[0].type])
        return out


# --- the checks -------------------------------------------------------------------------------


def check_topics(report: Report, probe: GraphProbe, expected: dict[str, Expected]) -> None:
    types = probe.types()
    for topic, exp in expected.items():
        pubs, subs = probe.publishers(topic), probe.subscriptions(topic)
        seen = sorted({t for t in types.get(topic, [])})
        problems = []
        if exp.needs_publisher and not pubs:
            problems.append("no publisher")
        if exp.needs_subscriber and not subs:
            problems.append("no subscriber")
        if seen and seen != [exp.msg_type]:
            problems.append(f"type {', '.join(seen)}, expected {exp.msg_type}")
        if problems:
            report.add("topics", topic, FAIL, f"{'; '.join(problems)} ({exp.why})")
        elif not pubs:
            report.add("topics", topic, OK, f"{exp.msg_type}, no publisher ({exp.why})")
        else:
            report.add("topics", topic, OK, f"{exp.msg_type}, {len(pubs)} publisher(s), {len(subs)} subscriber(s)")


def check_qos(report: Report, probe: GraphProbe, expected: dict[str, Expected]) -> None:
    from rclpy.qos import QoSCompatibility, qos_check_compatible

    from dexstack.ros_nodes.common import QOS

    # Every topic of the graph, as ros2doctor does (less its own logging topics); only the checked
    # ones get a row when all is well.
    topics = sorted((set(probe.types()) | set(expected)) - set(ROS_INTERNAL_TOPICS))
    for topic in topics:
        exp = expected.get(topic)
        subs_by_node: dict[str, list[Any]] = {}
        for sub in probe.subscriptions(topic):
            subs_by_node.setdefault(_who(sub), []).append(sub)
        bad = []
        for pub in probe.publishers(topic):
            who = _who(pub)
            for node, subs in subs_by_node.items():
                verdicts = [qos_check_compatible(pub.qos_profile, s.qos_profile) for s in subs]
                if any(c == QoSCompatibility.OK for c, _ in verdicts):
                    continue
                level = WARN if any(c == QoSCompatibility.WARNING for c, _ in verdicts) else FAIL
                reason = verdicts[0][1].split(": ", 1)[-1]
                bad.append(
                    (
                        level,
                        f"publisher {who} ({_qos_text(pub.qos_profile)}) reaches no subscription of {node} "
                        f"({', '.join(_qos_text(s.qos_profile) for s in subs)}): {reason}",
                    )
                )
            if exp is not None and exp.qos is not None and _weaker(pub.qos_profile, QOS[exp.qos]):
                bad.append(
                    (
                        WARN,
                        f"publisher {who} offers {_qos_text(pub.qos_profile)}; the contract says {_qos_text(QOS[exp.qos])}",
                    )
                )
        for level, detail in bad:
            report.add("qos", topic, level, detail)
        if exp is not None and not bad and probe.publishers(topic) and subs_by_node:
            report.add("qos", topic, OK, "every publisher reaches every subscribing node")


def _weaker(offered: Any, contract_qos: Any) -> bool:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    return (
        contract_qos.reliability == ReliabilityPolicy.RELIABLE and offered.reliability != ReliabilityPolicy.RELIABLE
    ) or (
        contract_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
        and offered.durability != DurabilityPolicy.TRANSIENT_LOCAL
    )


def check_safety_path(report: Report, probe: GraphProbe, profile: RobotProfile, filter_node: str) -> None:
    from dexstack import contract

    topic = profile.trajectory_topic
    others = sorted({_who(p) for p in probe.publishers(topic)} - {filter_node})
    if others:
        report.add("safety", topic, FAIL, f"{', '.join(others)} also publish(es) here, bypassing the safety filter")
    elif probe.publishers(topic):
        report.add("safety", topic, OK, f"only {filter_node} commands the controller")
    # What the filter accepts is read from its subscriptions in the graph, not assumed: a relay
    # must offer a QoS that one of them matches (the qos rows check the relays present).
    readers = {filter_node, filter_node + contract.ESTOP_NODE_SUFFIX}  # the filter reads it on a node of its own
    accepts = sorted({_qos_text(s.qos_profile) for s in probe.subscriptions(contract.ESTOP) if _who(s) in readers})
    relays = sorted({_who(p) for p in probe.publishers(contract.ESTOP)})
    if not accepts:
        report.add("safety", contract.ESTOP, FAIL, f"{filter_node} does not subscribe to the e-stop")
    elif relays:
        report.add(
            "safety", contract.ESTOP, OK, f"{filter_node} accepts {', '.join(accepts)}; relays: {', '.join(relays)}"
        )
    elif probe.publishers(contract.CLOCK):
        report.add("safety", contract.ESTOP, OK, f"{filter_node} accepts {', '.join(accepts)}; no relay (sim)")
    else:  # a robot: its (mandatory) hardware e-stop does not reach the stack
        report.add(
            "safety",
            contract.ESTOP,
            WARN,
            f"no e-stop relay publishes (the filter accepts {', '.join(accepts)}): the stack does not hear the "
            "robot's e-stop",
        )


def check_heartbeat(report: Report, samples: Samples, timeout_s: float, relays: list[str]) -> None:
    """The safety filter latches the e-stop when no fresh `false` came for `timeout_s` (its
    heartbeat mode, like an industrial e-stop relay): a relay must be there and beat at least twice
    per timeout, so that one lost message does not stop the robot."""
    from dexstack import contract

    rate = samples.rate_hz()
    if not relays:
        report.add("safety", contract.ESTOP, FAIL, f"heartbeat mode ({timeout_s:g} s) but no relay publishes")
    elif rate is None:
        report.add(
            "safety", contract.ESTOP, FAIL, f"heartbeat mode ({timeout_s:g} s): {len(samples.stamps)} beat(s) seen"
        )
    elif 1.0 / rate > timeout_s / 2:
        report.add(
            "safety",
            contract.ESTOP,
            FAIL,
            f"heartbeat every {1e3 / rate:.0f} ms leaves no margin in the filter's {timeout_s:g} s timeout "
            "(beat at least twice per timeout)",
        )
    else:
        report.add("safety", contract.ESTOP, OK, f"heartbeat every {1e3 / rate:.0f} ms, timeout {timeout_s:g} s")


def check_joints(report: Report, probe: GraphProbe, profile: RobotProfile) -> None:
    import numpy as np

    from dexstack import contract

    samples = probe.samples.get(contract.JOINT_STATES)
    if samples is None or not samples.variants:
        return  # no message: the rates check says so
    want = list(profile.joint_names)
    for (names, n_positions), msg in samples.variants.items():
        names = list(names)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        missing = [n for n in want if n not in names]
        order = [n for n in names if n in want]
        extra = [n for n in names if n not in want]
        if duplicates:
            report.add("joints", contract.JOINT_STATES, FAIL, f"duplicate joint names {duplicates}")
        elif missing:
            report.add("joints", contract.JOINT_STATES, FAIL, f"lacks joints {missing} of profile {profile.name}")
        elif n_positions != len(names):
            report.add("joints", contract.JOINT_STATES, FAIL, f"{len(names)} names but {n_positions} positions")
        elif order != want:
            at = next(i for i, (a, b) in enumerate(zip(order, want, strict=True)) if a != b)
            report.add(
                "joints",
                contract.JOINT_STATES,
                FAIL,
                f"joint order {order} differs from profile {profile.name} at index {at}: "
                f"{order[at]!r} where the profile has {want[at]!r}",
            )
        else:
            q = np.array([msg.position[names.index(n)] for n in want], dtype=np.float64)
            outside = [
                n
                for n, v, lo, hi in zip(want, q, profile.lower, profile.upper, strict=True)
                if not lo - LIMIT_SLACK <= v <= hi + LIMIT_SLACK
            ]
            if not np.all(np.isfinite(q)):
                report.add("joints", contract.JOINT_STATES, FAIL, "non-finite joint positions")
            elif outside:
                report.add("joints", contract.JOINT_STATES, WARN, f"joints {outside} outside the profile's limits")
            else:
                note = f" (+ {len(extra)} joint(s) the profile does not know, ignored: {extra})" if extra else ""
                report.add(
                    "joints",
                    contract.JOINT_STATES,
                    WARN if extra else OK,
                    f"names and order match {profile.name}{note}",
                )


def check_cameras(report: Report, probe: GraphProbe, profile: RobotProfile) -> None:
    """Each profile camera's images: the profile's resolution (a larger one is a warning: the runtime
    fits it; a smaller one fails), an encoding the policy node's converter for the kind accepts, and
    camera_info matching the colour image."""
    from dexstack import contract
    from dexstack.ros_nodes import inputs

    for cam in profile.cameras:
        info = probe.samples.get(contract.camera_info_topic(cam.name))
        for topic, kind in (
            (contract.camera_color_topic(cam.name), "rgb"),
            (contract.camera_depth_topic(cam.name), "depth"),
        ):
            samples = probe.samples.get(topic)
            for (width, height, encoding), msg in samples.variants.items() if samples else []:
                problems, notes = [], []
                if (width, height) != (cam.width, cam.height):
                    text = f"{width}x{height} (WxH), profile {profile.name} says {cam.width}x{cam.height}"
                    # Larger: the runtime center-crops and resizes it (dexstack.images); smaller: refused.
                    larger = width >= cam.width and height >= cam.height
                    (notes if larger else problems).append(text + ("; fitted by crop + resize" if larger else ""))
                try:
                    inputs.convert_input({"kind": kind, "shape": [height, width]}, msg)
                except (KeyError, ValueError) as exc:
                    problems.append(str(exc))
                if kind == "rgb" and info is not None:
                    sizes = [s for s in info.variants if s != (width, height)]
                    if sizes:
                        problems.append(f"camera_info says {sizes[0][0]}x{sizes[0][1]}")
                status = FAIL if problems else WARN if notes else OK
                report.add("cameras", topic, status, "; ".join(problems + notes) or f"{width}x{height} {encoding}")


def check_inputs(report: Report, probe: GraphProbe, manifest: dict[str, Any]) -> None:
    """Feed the latest message of each variant seen on every input's topic through the policy
    node's conversion and the observation checks (shape after preprocessing, dtype, finiteness)."""
    from dexstack.observation import ObservationAssembler
    from dexstack.ros_nodes import inputs

    for spec in manifest["inputs"]:
        samples = probe.samples.get(spec["source"])
        if samples is None or not samples.variants:
            what = "no message (latched: nothing was published yet)" if spec.get("latched") else "no message"
            report.add("inputs", spec["source"], FAIL, f"{spec['name']}: {what}")
            continue
        for msg in samples.variants.values():
            assembler = ObservationAssembler([spec])
            stamp_ns = 1  # "now" = the stamp: this check is about content, the rates check about age
            try:
                assembler.add(spec["name"], stamp_ns, inputs.convert_input(spec, msg))
            except (KeyError, ValueError) as exc:
                assembler.add_invalid(spec["name"], stamp_ns, str(exc).strip("\"'"))
            result = assembler.latest(stamp_ns)
            got = _describe(msg)
            if result.hold is not None:
                report.add("inputs", spec["source"], FAIL, f"{spec['name']}: {got}: {result.hold.message}")
            else:
                value = result.observation[spec["name"]]
                served = f"shape {tuple(value.shape)}" if hasattr(value, "shape") else "a string"
                report.add("inputs", spec["source"], OK, f"{spec['name']}: {got} -> {served}")


def _describe(msg: Any) -> str:
    variant = _variant(msg)
    if type(msg).__name__ == "Image":
        return f"{variant[0]}x{variant[1]} {variant[2]}"
    if type(msg).__name__ == "JointState":
        return f"{len(variant[0])} joints"
    return type(msg).__name__


def check_rates(
    report: Report, probe: GraphProbe, expected: dict[str, Expected], manifest: dict[str, Any] | None, lockstep: bool
) -> None:
    max_age = {}
    for spec in (manifest or {}).get("inputs", []):
        if "max_age_s" in spec:
            max_age[spec["source"]] = min(max_age.get(spec["source"], float("inf")), float(spec["max_age_s"]))
    for topic, exp in expected.items():
        if exp.nominal_hz is None and topic not in max_age:
            continue
        samples = probe.samples.get(topic)
        rate = samples.rate_hz() if samples else None
        if rate is None:
            if probe.publishers(topic):
                count = len(samples.stamps) if samples else 0
                report.add("rates", topic, FAIL, f"{count} message(s) while sampling: publisher silent")
            continue
        problems, status = [], OK
        if topic in max_age and 1.0 / rate > max_age[topic]:
            problems.append(f"period {1e3 / rate:.0f} ms exceeds the policy's max_age_s {max_age[topic]:g} s")
            status = FAIL
        if exp.nominal_hz is not None and not lockstep:
            if rate < SLOW_FAIL * exp.nominal_hz:
                problems.append(f"below half the nominal {exp.nominal_hz:g} Hz")
                status = FAIL
            elif rate < SLOW_WARN * exp.nominal_hz:
                problems.append(f"below the nominal {exp.nominal_hz:g} Hz")
                status = WARN if status == OK else status
        nominal = f" (nominal {exp.nominal_hz:g} Hz)" if exp.nominal_hz is not None else ""
        note = "; lockstep pacing: rates follow the policy" if lockstep else ""
        report.add(
            "rates", topic, status, f"{rate:.1f} Hz{nominal}" + ("; " + "; ".join(problems) if problems else "") + note
        )


def served_rate(probe: GraphProbe, policy_node: str) -> float | None:
    """The policy node's loop rate (Hz) from its latest diagnostics while it acts on a timer;
    None when it is disabled, acts per observation (lockstep), or did not report."""
    statuses = probe.statuses.get(policy_node)
    if not statuses:
        return None
    values = {kv.key: kv.value for kv in statuses[-1].values}
    if values.get("enabled") != "True" or values.get("trigger") != "timer":
        return None
    try:
        return float(values["rate_hz"])
    except (KeyError, ValueError):
        return None


def check_clock(
    report: Report, probe: GraphProbe, expected: dict[str, Expected], use_sim_time: dict[str, Any], nodes: list[str]
) -> None:
    """`use_sim_time`: {node: its parameter} for the nodes that answered. Only nodes on the
    control path (an endpoint of a checked topic other than /diagnostics and the e-stop) must
    agree with the clock source; a tool (a monitor, this doctor, an e-stop relay) may use wall time."""
    from dexstack import contract

    clocks = sorted({_who(p) for p in probe.publishers(contract.CLOCK)})
    control = {
        _who(e)
        for topic in expected
        if topic not in (contract.DIAGNOSTICS, contract.ESTOP)
        for e in probe.publishers(topic) + probe.subscriptions(topic)
    }
    sim_time = sorted(n for n, v in use_sim_time.items() if v is True and n not in clocks)
    wall = sorted(n for n, v in use_sim_time.items() if v is False and n not in clocks)
    unknown = sorted(n for n in nodes if n not in use_sim_time and n not in clocks)
    wall_control = [n for n in wall if n in control]
    if len(clocks) > 1:
        report.add("clock", contract.CLOCK, FAIL, f"{len(clocks)} clocks: {clocks}")
    if clocks and wall_control:
        report.add(
            "clock",
            contract.CLOCK,
            FAIL,
            f"{', '.join(wall_control)} run(s) on wall time while {clocks[0]} publishes /clock",
        )
    if not clocks and sim_time:
        report.add("clock", contract.CLOCK, FAIL, f"{', '.join(sim_time)} use(s) sim time but nothing publishes /clock")
    if clocks:
        samples = probe.samples.get(contract.CLOCK)
        if samples is None or len(samples.stamps) < 2 or samples.stamps[-1] <= samples.stamps[0]:
            report.add("clock", contract.CLOCK, WARN, "/clock does not advance (paused sim?)")
    if unknown:
        report.add("clock", "use_sim_time", WARN, f"could not read use_sim_time of {', '.join(unknown)}")
    if not any(c.area == "clock" and c.status == FAIL for c in report.checks):
        agree = sim_time if clocks else wall
        source = f"sim time from {clocks[0]}" if clocks else "wall time (no /clock)"
        tools = [n for n in wall if n not in control] if clocks else []
        note = f"; on wall time, off the control path: {', '.join(tools)}" if tools else ""
        report.add("clock", contract.CLOCK, OK, f"{source}; {len(agree)} node(s) agree{note}")


def check_diagnostics(report: Report, probe: GraphProbe) -> None:
    """A node that reported ERROR in every status while we listened fails (no policy loaded, a
    latched e-stop); one that reported it only at times (a hold now and then) warns."""
    from dexstack.ros_nodes.common import LEVEL

    names = {level: text for text, level in LEVEL.items()}
    for name, statuses in sorted(probe.statuses.items()):
        levels = [names.get(s.level, "?") for s in statuses]
        errors = [s for s, level in zip(statuses, levels, strict=True) if level == "ERROR"]
        if errors and len(errors) == len(statuses):
            report.add("diagnostics", name, FAIL, f"ERROR in all {len(statuses)} reports: {errors[-1].message}")
        elif errors:
            report.add(
                "diagnostics", name, WARN, f"ERROR in {len(errors)} of {len(statuses)} reports: {errors[-1].message}"
            )
        else:
            verdict = OK if levels[-1] == "OK" else WARN
            report.add("diagnostics", name, verdict, f"{levels[-1]}: {statuses[-1].message}")


# --- the command --------------------------------------------------------------------------------


def _verified_manifest(ref: str) -> dict[str, Any]:
    """The store's verified manifest of `ref` (checksums and schema); ValueError saying why not."""
    from dexstack.manifest import ManifestError
    from dexstack.store import PolicyRejected, PolicyStore

    try:
        return PolicyStore().verify(ref).manifest
    except (ManifestError, PolicyRejected) as exc:
        raise ValueError(str(exc)) from None


def run_doctor(
    profile_name: str | None,
    policy: str | None,
    domain: int | None,
    timeout_s: float,
    window_s: float,
    filter_node: str,
    policy_node: str,
) -> Report:
    """Discover the graph (up to `timeout_s` for the expected topics to appear), sample it for
    `window_s`, read the nodes' use_sim_time, and judge. Without `policy`, the one `policy_node`
    serves is checked (if it runs and the store here has it); without `profile_name`, the policy's
    robot, else the safety filter's. ValueError for a bad policy or profile."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from dexstack import contract
    from dexstack.hardware.profiles import get_profile
    from dexstack.manifest import ManifestError, check_against_profile
    from dexstack.ros_nodes import inputs
    from dexstack.ros_nodes.common import message_class

    manifest = _verified_manifest(policy) if policy is not None else None
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from dexstack.ros_nodes.client import RosClient

    client = RosClient(NODE_NAME, domain_id=domain)
    try:
        probe = GraphProbe(client)
        deadline = time.monotonic() + timeout_s  # for discovery as a whole
        served_problem = None
        if policy is None or (profile_name is None and manifest is None):
            # The running nodes know which policy is served and which robot is guarded. Nodes
            # started together are discovered one by one: give the policy node a moment more.
            client.spin_until(lambda: filter_node in probe.nodes(), deadline - time.monotonic())
            if policy is None:
                client.spin_until(
                    lambda: policy_node in probe.nodes(), min(SERVED_GRACE_S, deadline - time.monotonic())
                )
            present = probe.nodes()
            asked = [(filter_node, "profile")] + ([(policy_node, "policy")] if policy is None else [])
            known = probe.parameters([(n, name) for n, name in asked if n in present], PARAM_TIMEOUT_S)
            served = known.get((policy_node, "policy")) if policy is None else None
            if served:
                try:
                    manifest, policy = _verified_manifest(served), served
                except ValueError as exc:  # e.g. another store: check the graph without it
                    served_problem = f"{policy_node} serves {served!r}, which this store cannot check: {exc}"
            if profile_name is None and manifest is None:
                profile_name = known.get((filter_node, "profile"))
        if profile_name is None and manifest is not None:
            profile_name = manifest["robot_profile"]
        if profile_name is None:
            raise ValueError(f"no --profile given and {filter_node} did not say its profile (is the graph up?)")
        try:
            profile = get_profile(profile_name)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        if manifest is not None:
            try:
                check_against_profile(manifest, profile)
            except ManifestError as exc:
                raise ValueError(f"policy {policy}: {exc}") from None
        report = Report(
            str(domain) if domain is not None else os.environ.get("ROS_DOMAIN_ID", "0"), profile.name, policy
        )
        if served_problem is not None:
            report.add("inputs", policy_node, WARN, served_problem)
        expected = expected_topics(profile, manifest)

        # Subscribe first, so messages accumulate while discovery completes. Best-effort volatile
        # accepts every publisher, and a deep queue keeps a busy doctor from dropping messages
        # (which would read as a slow topic). A latched input is read as the policy node reads it
        # (reliable, transient-local), so that the value published before we joined arrives.
        sampling = QoSProfile(depth=SAMPLE_DEPTH, reliability=ReliabilityPolicy.BEST_EFFORT)
        wiring: dict[str, tuple[type, Any]] = {}
        for topic, exp in expected.items():
            if exp.nominal_hz is not None or topic in (profile.policy_output_topic, profile.trajectory_topic):
                wiring[topic] = (message_class(exp.msg_type), sampling)
        for spec in (manifest or {}).get("inputs", []):
            msg_class, qos = inputs.input_subscription(spec)
            wiring[spec["source"]] = (msg_class, qos if spec.get("latched") is True else sampling)
        wiring[contract.CLOCK] = (message_class("rosgraph_msgs/msg/Clock"), sampling)
        wiring[contract.ESTOP] = (message_class(expected[contract.ESTOP].msg_type), sampling)  # heartbeats
        for topic, (msg_class, qos) in wiring.items():
            probe.sample(topic, msg_class, qos)
        probe.watch_diagnostics()

        def discovered() -> bool:
            return all(
                (not e.needs_publisher or probe.publishers(t)) and (not e.needs_subscriber or probe.subscriptions(t))
                for t, e in expected.items()
            )

        client.spin_until(discovered, max(0.0, deadline - time.monotonic()))
        client.spin_for(window_s)
        nodes = probe.nodes()
        clocks = sorted({_who(p) for p in probe.publishers(contract.CLOCK)})
        asked = [(n, "use_sim_time") for n in nodes] + [(n, "pacing") for n in clocks if n in nodes]
        asked += [(filter_node, HEARTBEAT_PARAM)] if filter_node in nodes else []
        known = probe.parameters(asked, PARAM_TIMEOUT_S)
        sim_time = {n: v for (n, name), v in known.items() if name == "use_sim_time"}
        lockstep = any(v == "lockstep" for (_, name), v in known.items() if name == "pacing")

        report.add("nodes", "graph", OK if nodes else FAIL, ", ".join(nodes) or "no other node on this domain")
        check_topics(report, probe, expected)
        check_qos(report, probe, expected)
        check_safety_path(report, probe, profile, filter_node)
        heartbeat = known.get((filter_node, HEARTBEAT_PARAM))
        if isinstance(heartbeat, int | float) and heartbeat > 0:
            relays = sorted({_who(p) for p in probe.publishers(contract.ESTOP)})
            check_heartbeat(report, probe.samples.get(contract.ESTOP, Samples()), float(heartbeat), relays)
        check_joints(report, probe, profile)
        check_cameras(report, probe, profile)
        if manifest is not None:
            check_inputs(report, probe, manifest)
        loop_hz = served_rate(probe, policy_node)
        if loop_hz is not None:  # chunks (and the filter's answers) come at the policy's loop rate
            for topic in (profile.policy_output_topic, profile.trajectory_topic):
                expected[topic] = replace(expected[topic], nominal_hz=loop_hz)
        check_rates(report, probe, expected, manifest, lockstep)
        check_clock(report, probe, expected, sim_time, nodes)
        check_diagnostics(report, probe)
        return report
    finally:
        client.close()


def print_report(report: Report) -> None:
    # A log or pipe gets the whole table at a readable width, not rich's 80-column default.
    console = Console(width=None if sys.stdout.isatty() else 160)
    style = {OK: "green", WARN: "yellow", FAIL: "bold red"}
    table = Table(
        "check",
        Column("subject", overflow="fold"),
        "status",
        Column("detail", overflow="fold"),
        title=f"dexstack doctor: domain {report.domain}, profile {report.profile}, policy {report.policy or '-'}",
    )
    for c in sorted(report.checks, key=lambda c: AREAS.index(c.area)):
        table.add_row(c.area, escape(c.subject), f"[{style[c.status]}]{c.status}[/]", escape(c.detail))
    console.print(table)
    failed = [c for c in report.checks if c.status == FAIL]
    warned = sum(c.status == WARN for c in report.checks)
    if failed:
        console.print(f"[bold red]{len(failed)} check(s) failed[/], {warned} warning(s)")
    else:
        console.print(f"[green]all checks passed[/], {warned} warning(s)")


def doctor(
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy", help="Check the graph feeds this store policy, NAME or NAME@VERSION (default: the served one)"
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="Robot profile (default: the policy's, else the running safety filter's)"),
    ] = None,
    domain: Annotated[
        int | None,
        typer.Option("--domain", "--domain-id", help="ROS_DOMAIN_ID of the graph (default: $ROS_DOMAIN_ID, else 0)"),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.5, help="Seconds to wait for the expected topics to appear")
    ] = 10.0,
    window: Annotated[float, typer.Option("--window", min=0.5, help="Seconds to measure rates after that")] = 3.0,
    filter_node: Annotated[str, typer.Option("--filter-node", help="Name of the safety filter node")] = "",
    policy_node: Annotated[str, typer.Option("--policy-node", help="Name of the policy node")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object")] = False,
) -> None:
    """Check a running graph (robot or sim) against the contract, its robot profile and a policy.

    Exit status 1 on any failed check, 2 when it cannot start; takes at most about TIMEOUT + WINDOW + 6 s.
    """
    from dexstack.graph import node_list

    names = {s.executable: s.name for s in node_list({})}  # the bringup's node names
    filter_node, policy_node = (
        name if name.startswith("/") else f"/{name}"
        for name in (filter_node or names["safety_filter"], policy_node or names["policy_node"])
    )
    try:
        report = run_doctor(profile, policy, domain, timeout, window, filter_node, policy_node)
    except ValueError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        import json

        typer.echo(json.dumps(report.as_dict()))
    else:
        print_report(report)
    raise typer.Exit(0 if report.ok else 1)
