"""Recorder node: writes the robot's contract topics into one MCAP file per episode.

Messages are taken as serialized CDR bytes (`raw=True`) and written unchanged with ROS 2
schemas, so `ros2 bag info`, Foxglove and `mcap_ros2` read the files (see dexstack.mcap_io).
Like rosbag2, each topic is subscribed once a publisher appears, with QoS matching the
publishers: reliable publishers get a reliable subscription with a deep queue (nothing is
dropped), best-effort (sensor-data) publishers a best-effort one, latched topics a
transient-local one.

Parameters: profile, task, output_dir, topics (override list), use_sim_time.
Services: ~/start_episode, ~/stop_episode (response message = file path), ~/cancel_episode.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dexstack import contract
from dexstack.files import dexstack_home
from dexstack.hardware.profiles import get_profile
from dexstack.mcap_io import EpisodeWriter, header_stamp_ns
from dexstack.ros_nodes.common import diagnostic_status, message_class

RELIABLE_DEPTH = 1000  # deep enough for a burst of camera frames while the disk catches up
BEST_EFFORT_DEPTH = 100
DISCOVERY_PERIOD_S = 0.5


def _qos_dict(qos: QoSProfile) -> dict:
    return {
        "history": qos.history.name.lower(),
        "depth": qos.depth,
        "reliability": qos.reliability.name.lower(),
        "durability": qos.durability.name.lower(),
    }


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
        known = get_profile(self.profile_name).recorded_topics()
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
        self._write_error: str | None = None

        self.create_service(Trigger, "~/start_episode", self._start)
        self.create_service(Trigger, "~/stop_episode", self._stop)
        self.create_service(Trigger, "~/cancel_episode", self._cancel)
        self._diag_pub = self.create_publisher(DiagnosticArray, contract.DIAGNOSTICS, 10)
        # Discovery and diagnostics run on the steady clock: under use_sim_time they must
        # keep working before /clock starts or while the sim is paused.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(DISCOVERY_PERIOD_S, self._discover, clock=steady)
        self.create_timer(1.0 / contract.DIAGNOSTICS_HZ, self._publish_diagnostics, clock=steady)
        self._discover()
        self.get_logger().info(f"recording {len(self.wanted)} topics into {self.output_dir}")

    # --- subscriptions --------------------------------------------------------------------
    def _discover(self) -> None:
        for topic, type_name in self.wanted.items():
            if topic in self._subs:
                continue
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            offered = {i.topic_type for i in infos}
            if type_name is None:
                if len(offered) != 1:
                    self._warn_once(topic, f"{topic}: publishers disagree on the type {sorted(offered)}; not recorded")
                    continue
                type_name = offered.pop()
            elif offered != {type_name}:
                self._warn_once(
                    topic, f"{topic}: publishers offer {sorted(offered)}, expected {type_name}; not recorded"
                )
                continue
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=RELIABLE_DEPTH if reliable else BEST_EFFORT_DEPTH,
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
            )
            self._offered[topic] = [_qos_dict(i.qos_profile) for i in infos]
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

    def _write(self, topic: str, data: bytes, log_ns: int) -> None:
        try:
            channel = self._writer.add_channel(topic, self._types[topic], self._offered[topic])
            publish_ns = max(header_stamp_ns(data), 0) if self._has_header[topic] else log_ns  # MCAP's is unsigned
            self._writer.write(channel, data, log_ns, publish_ns)
            self._counts[topic] = self._counts.get(topic, 0) + 1
        except Exception as exc:  # noqa: BLE001 - a disk error must not kill the node mid-episode
            if self._write_error is None:
                self._write_error = f"{topic}: {exc}"
                self.get_logger().error(f"write failed, episode will not be finalised: {self._write_error}")

    # --- episode services -----------------------------------------------------------------
    def _episode_path(self) -> Path:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.task) or "episode"
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        n = self._episodes_done
        while True:
            path = self.output_dir / f"{stem}_{stamp}_{n}.mcap"
            if not path.exists() and not path.with_name(path.name + ".part").exists():
                return path
            n += 1

    def _start(self, _request, response):
        if self._writer is not None:
            response.success = False
            response.message = f"already recording {self._writer.path}; stop or cancel it first"
            return response
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._writer = EpisodeWriter(self._episode_path())
        except OSError as exc:
            response.success = False
            response.message = f"cannot open an episode file in {self.output_dir}: {exc}"
            return response
        self._counts, self._write_error = {}, None
        self._episode_start_ns = self.get_clock().now().nanoseconds
        self._episode_start_wall = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        for topic, type_name in self._types.items():
            self._writer.add_channel(topic, type_name, self._offered[topic])
        # Latched state (task text, e-stop) was published before the episode; carry it in
        # so each file is self-contained.
        for topic, data in self._latched.items():
            self._write(topic, data, self._episode_start_ns)
        response.success = True
        response.message = f"recording {self._writer.path}"
        self.get_logger().info(response.message)
        return response

    def _metadata(self, end_reason: str) -> dict[str, str]:
        sim = self._sim_episode or {}
        # Success is only known once the sim says the episode is done; "running" means unknown.
        success = sim.get("success") if sim.get("status", "done") == "done" else None
        return {
            # Operator's text first, then the sim task's own instruction, then the task name.
            "task": self._task_text or sim.get("instruction") or self.task,
            "task_name": self.task,
            "profile": self.profile_name,
            "start_time_ns": str(self._episode_start_ns),
            "stop_time_ns": str(self.get_clock().now().nanoseconds),
            "start_wall": self._episode_start_wall,
            "use_sim_time": str(self.get_parameter("use_sim_time").value).lower(),
            "seed": str(sim.get("seed", "")),
            "success": "" if not isinstance(success, bool) else str(success).lower(),
            "sim_episode": json.dumps(sim) if sim else "",
            "message_count": str(sum(self._counts.values())),
            "end_reason": end_reason,
        }

    def _finalise(self, end_reason: str) -> Path:
        writer, self._writer = self._writer, None
        path = writer.close(self._metadata(end_reason))
        self._episodes_done += 1
        return path

    def _stop(self, _request, response):
        if self._writer is None:
            response.success, response.message = False, "not recording; call ~/start_episode first"
            return response
        if self._write_error is not None:
            partial = self._writer.abandon()
            self._writer = None
            response.success = False
            response.message = f"episode not finalised, writing failed ({self._write_error}); partial file {partial}"
            return response
        path = self._finalise("stop")
        response.success, response.message = True, str(path)
        self.get_logger().info(f"episode saved: {path} ({sum(self._counts.values())} messages)")
        return response

    def _cancel(self, _request, response):
        if self._writer is None:
            response.success, response.message = False, "not recording; nothing to cancel"
            return response
        path = self._writer.path
        self._writer.discard()
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
            level = "ERROR" if self._write_error else "OK"
            message = f"recording {self._writer.path.name}"
            values |= {"messages": sum(self._counts.values())} | {
                f"count {t}": c for t, c in sorted(self._counts.items())
            }
        else:
            level, message = "OK", "idle"
        array = DiagnosticArray(status=[diagnostic_status(self, level, message, values)])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def destroy_node(self) -> None:
        # Shut down mid-episode (Ctrl-C on `dexstack up`): keep what was recorded, like rosbag2.
        if getattr(self, "_writer", None) is not None:
            if self._write_error is None:
                path = self._finalise("shutdown")
                self.get_logger().info(f"episode saved on shutdown: {path}")
            else:
                self._writer.abandon()
                self._writer = None
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    from dexstack.ros_nodes.common import run_node

    run_node(RecorderNode, args)


if __name__ == "__main__":
    main()
