"""Recorder node: writes the robot's contract topics into one MCAP file per episode.

CDR bytes are written unchanged with ROS 2 schemas (dexstack.mcap_io), so `ros2 bag info`,
Foxglove and `mcap_ros2` read the files. Like rosbag2, a topic is subscribed once a publisher
appears, with QoS matching its publishers (reliable with a deep queue, best-effort, latched).
Services: ~/start_episode, ~/stop_episode (message = file path), ~/end_episode (SetBool: stop
and label success, for a robot without a sim), ~/cancel_episode. An episode not ended by a stop
(shutdown, or stopped while the sim episode runs) is saved as `<name>.incomplete.mcap`, metadata
`complete: false`. A disk error (ENOSPC) loses that episode only: its file is deleted, diagnostics
say ERROR, the node lives on. docs/DATASET.md has the details.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from dexstack import contract
from dexstack.files import dexstack_home
from dexstack.hardware.profiles import get_profile
from dexstack.mcap_io import EpisodeWriteError, EpisodeWriter, episode_record, header_stamp_ns, new_episode_path
from dexstack.ros_nodes.common import diagnostic_status, message_class, qos_dict, with_controller

RELIABLE_DEPTH = 1000  # deep enough for a burst of camera frames while the disk catches up
BEST_EFFORT_DEPTH = 100
DISCOVERY_PERIOD_S = 0.5


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        self.declare_parameter("profile", "panda")
        self.declare_parameter("task", "pick_lift")
        self.declare_parameter("output_dir", str(dexstack_home() / "recordings"))
        self.declare_parameter("topics", Parameter.Type.STRING_ARRAY)
        self.profile_name = self.get_parameter("profile").value
        self.task = self.get_parameter("task").value
        self.output_dir = Path(self.get_parameter("output_dir").value).expanduser()
        try:
            override = list(self.get_parameter("topics").value)
        except ParameterUninitializedException:  # not given: record the profile's topics
            override = []
        known = with_controller(self, get_profile(self.profile_name)).recorded_topics()
        # Topics outside the contract get their type from their publishers when they appear.
        self.wanted: dict[str, str | None] = {t: known.get(t) for t in override} if override else known

        self._subs: dict[str, object] = {}
        self._types: dict[str, str] = {}
        self._offered: dict[str, list[dict]] = {}  # publishers' QoS per topic, for the file
        self._has_header: dict[str, bool] = {}
        self._latched: dict[str, bytes] = {}  # latest message of each transient-local topic
        self._warned: set[str] = set()
        self._task_text: str | None = None
        self._sim_episode: dict | None = None
        self._writer: EpisodeWriter | None = None
        self._episode_start_ns = 0
        self._episode_start_wall = ""
        self._counts: dict[str, int] = {}
        self._episodes_done = 0
        self._label: bool | None = None  # success given by ~/end_episode
        self._error: str | None = None  # why the current (or, when idle, the last) episode was lost

        self.create_service(Trigger, "~/start_episode", self._start)
        self.create_service(Trigger, "~/stop_episode", self._stop)
        self.create_service(SetBool, "~/end_episode", self._end)
        self.create_service(Trigger, "~/cancel_episode", self._cancel)
        self._diag_pub = self.create_publisher(DiagnosticArray, contract.DIAGNOSTICS, 10)
        # Discovery and diagnostics run on the steady clock: under use_sim_time they must
        # keep working before /clock starts or while the sim is paused.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(DISCOVERY_PERIOD_S, self._discover, clock=steady)
        self.create_timer(1.0 / contract.DIAGNOSTICS_HZ, self._publish_diagnostics, clock=steady)
        self._discover()
        self.get_logger().info(f"idle: call ~/start_episode to record {len(self.wanted)} topics into {self.output_dir}")

    # --- subscriptions --------------------------------------------------------------------
    def _discover(self) -> None:
        for topic, type_name in self.wanted.items():
            if topic in self._subs:
                continue
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            offered = {i.topic_type for i in infos}
            if offered != {type_name or next(iter(offered))}:
                expected = f", expected {type_name}" if type_name else ""
                self._warn_once(topic, f"{topic}: publishers offer {sorted(offered)}{expected}; not recorded")
                continue
            type_name = type_name or offered.pop()
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=RELIABLE_DEPTH if reliable else BEST_EFFORT_DEPTH,
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
            )
            self._offered[topic] = [qos_dict(i.qos_profile) for i in infos]
            msg_class = message_class(type_name)
            fields = list(msg_class.get_fields_and_field_types().items())
            self._has_header[topic] = bool(fields) and fields[0][1] == "std_msgs/Header"
            self._types[topic] = type_name
            self._subs[topic] = self.create_subscription(
                msg_class, topic, lambda data, t=topic, lt=latched: self._on_message(t, data, lt), qos, raw=True
            )
            if self._writer is not None:
                self._writer.add_channel(topic, type_name, self._offered[topic])
            self.get_logger().info(
                f"subscribed {topic} [{type_name}] "
                f"{'reliable' if reliable else 'best-effort'}{', latched' if latched else ''}"
            )

    def _warn_once(self, topic: str, text: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            self.get_logger().warning(text)

    def _on_message(self, topic: str, data: bytes, latched: bool) -> None:
        if topic == contract.TASK_INSTRUCTION:
            self._task_text = deserialize_message(data, String).data
        elif topic == contract.SIM_EPISODE:
            try:
                info = json.loads(deserialize_message(data, String).data)
                if not isinstance(info, dict):  # a list or a number would break the metadata at ~/stop_episode
                    raise ValueError(type(info).__name__)
                self._sim_episode = info
            except ValueError:  # JSONDecodeError is one
                self.get_logger().warning(f"{topic}: not a JSON object, ignored for episode metadata")
        if latched:
            self._latched[topic] = data
        if self._writer is not None:
            self._write(topic, data, self.get_clock().now().nanoseconds)

    def _write(self, topic: str, data: bytes, log_ns: int) -> None:  # a no-op once the file failed
        try:
            publish_ns = max(header_stamp_ns(data), 0) if self._has_header[topic] else log_ns  # MCAP's is unsigned
        except ValueError:  # a message too short for its header: keep it, stamped on arrival
            publish_ns = log_ns
        channel = self._writer.add_channel(topic, self._types[topic], self._offered[topic])
        self._writer.write(channel, data, log_ns, publish_ns)
        if self._writer_ok():
            self._counts[topic] = self._counts.get(topic, 0) + 1

    def _writer_ok(self) -> bool:
        """False (and an ERROR, once) when the episode's file failed: the writer deleted it and
        drops the rest of the episode."""
        if self._writer.error is not None and self._error is None:
            self._lost(f"writing failed, episode lost: {self._writer.error}")
        return self._writer.error is None

    def _lost(self, text: str) -> None:
        self._error = text
        self.get_logger().error(text)

    # --- episode services -----------------------------------------------------------------
    def _start(self, _request, response):
        if self._writer is not None:
            response.success = False
            response.message = f"already recording {self._writer.path}; stop or cancel it first"
            return response
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._writer = EpisodeWriter(new_episode_path(self.output_dir, self.task, self._episodes_done))
        except OSError as exc:
            self._lost(f"cannot open an episode file in {self.output_dir}: {exc}")
            response.success, response.message = False, self._error
            return response
        self._counts, self._error, self._label = {}, None, None
        self._episode_start_ns = self.get_clock().now().nanoseconds
        self._episode_start_wall = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        for topic, type_name in self._types.items():
            self._writer.add_channel(topic, type_name, self._offered[topic])
        # Latched state (task text, e-stop) was published before the episode; carry it in
        # so each file is self-contained.
        for topic, data in self._latched.items():
            self._write(topic, data, self._episode_start_ns)
        if not self._writer_ok():
            self._writer = None
            response.success, response.message = False, self._error
            return response
        response.success = True
        response.message = f"recording {self._writer.path}"
        self.get_logger().info(response.message)
        return response

    def _metadata(self, end_reason: str) -> dict[str, str]:
        sim = self._sim_episode or {}
        return episode_record(
            sim,
            self._label,
            # Operator's text first, then the sim task's own instruction, then the task name.
            task=self._task_text or sim.get("instruction") or self.task,
            task_name=self.task,
            profile=self.profile_name,
            start_time_ns=self._episode_start_ns,
            stop_time_ns=self.get_clock().now().nanoseconds,
            start_wall=self._episode_start_wall,
            use_sim_time=str(self.get_parameter("use_sim_time").value).lower(),
            message_count=sum(self._counts.values()),
            end_reason=end_reason,
        )

    def _finalise(self, end_reason: str, complete: bool) -> Path | None:
        """Close the episode file; None (and ERROR) if it could not be saved."""
        writer, self._writer = self._writer, None
        try:
            path = writer.close(self._metadata(end_reason), complete=complete)
        except EpisodeWriteError as exc:
            self._lost(str(exc))
            return None
        self._episodes_done += 1
        self._error = None
        self.get_logger().info(f"episode saved: {path} ({sum(self._counts.values())} messages)")
        return path

    def _stop(self, _request, response):
        if self._writer is None:
            response.success, response.message = False, "not recording; call ~/start_episode first"
            return response
        if not self._writer_ok():
            self._writer = None
            response.success, response.message = False, self._error
            return response
        # Stopped while the sim still runs the episode: cut short, so not a normal episode file.
        running = (self._sim_episode or {}).get("status") == "running" and self._label is None
        path = self._finalise("stop before the sim episode ended" if running else "stop", complete=not running)
        response.success, response.message = path is not None, str(path or self._error)
        return response

    def _end(self, request, response):  # SetBool's response has Trigger's fields
        self._label = bool(request.data)  # the operator's verdict; ~/start_episode clears it
        return self._stop(request, response)

    def _cancel(self, _request, response):
        if self._writer is None:
            response.success, response.message = False, "not recording; nothing to cancel"
            return response
        path = self._writer.path
        self._writer.discard()  # never raises, even on a full disk
        self._writer = None
        response.success, response.message = True, f"cancelled {path}"
        self.get_logger().info(response.message)
        return response

    # --- diagnostics ----------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        missing = sorted(set(self.wanted) - set(self._subs))
        values = {
            "episodes_saved": self._episodes_done,
            "topics_subscribed": len(self._subs),
            "topics_without_publisher": ",".join(missing),
            "output_dir": self.output_dir,
        }
        if self._writer is not None:
            message = f"recording {self._writer.path.name}"
            values |= {"messages": sum(self._counts.values())} | {
                f"count {t}": c for t, c in sorted(self._counts.items())
            }
        else:
            message = "idle"
        level, message = ("ERROR", f"{message}; {self._error}") if self._error else ("OK", message)
        array = DiagnosticArray(status=[diagnostic_status(self, level, message, values)])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def destroy_node(self) -> None:
        # Shut down mid-episode (Ctrl-C on `dexstack up`): keep what was recorded, like rosbag2,
        # but as an incomplete episode that `dataset build` skips.
        if getattr(self, "_writer", None) is not None:
            if self._writer.error is None:
                self._finalise("shutdown", complete=False)
            self._writer = None
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    from dexstack.ros_nodes.common import run_node

    run_node(RecorderNode, args)


if __name__ == "__main__":
    main()
