"""MCAP episode files with ROS 2 schemas: writing (for the recorder) and converting to datasets.

An episode file follows the MCAP `ros2` profile exactly as rosbag2 writes it: one schema per
message type (`ros2msg` encoding, the type's `.msg` text followed by every dependency after a
`====...\\nMSG: pkg/Type` separator), one channel per topic (`cdr` encoding), messages as the
serialized CDR bytes received from DDS. `ros2 bag info`, Foxglove and `mcap_ros2.reader`
read it. Episode facts (task, seed, success, times) are a metadata record `dexstack.episode`.

No rclpy here: the writer takes bytes, the converter decodes with `mcap_ros2`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer
from mcap_ros2.decoder import DecoderFactory

if TYPE_CHECKING:  # core does not import hardware/ (BRIEF §1); the caller passes the profile
    from dexstack.hardware.profiles import RobotProfile

from dexstack import contract
from dexstack.dataset import ACTION, Dataset, DatasetError, DatasetWriter
from dexstack.files import fsync_dir
from dexstack.trajectory import ActionChunk, TrajectoryExecutor, TrajectoryPoint, trajectory_rejection

EPISODE_METADATA = "dexstack.episode"
PARTIAL_SUFFIX = ".part"  # an episode being written; renamed to .mcap only when complete
SEPARATOR = "=" * 80

_PRIMITIVES = {
    "bool",
    "byte",
    "char",
    "float32",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "string",
    "wstring",
}


# --- message definitions ----------------------------------------------------------------
def _share_dirs(package: str) -> list[Path]:
    """Where `<package>`'s interface files may be: the ament index when sourced, else the
    install prefix of its Python package (the pip wheels put them under <prefix>/share)."""
    dirs: list[Path] = []
    if os.environ.get("AMENT_PREFIX_PATH"):
        try:
            from ament_index_python.packages import get_package_share_directory

            dirs.append(Path(get_package_share_directory(package)))
        except (ImportError, LookupError, ValueError):
            pass
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for parent in Path(next(iter(spec.submodule_search_locations))).parents:
            if (parent / "share" / package).is_dir():
                dirs.append(parent / "share" / package)
                break
    dirs.append(Path(sys.prefix) / "share" / package)
    return dirs


def _msg_text(package: str, name: str) -> str:
    for share in _share_dirs(package):
        path = share / "msg" / f"{name}.msg"
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError(
        f"no definition file for {package}/msg/{name}: looked in "
        f"{[str(d / 'msg') for d in _share_dirs(package)]}; is the interface package installed?"
    )


def _dependencies(package: str, text: str) -> list[tuple[str, str]]:
    """(package, Type) of every non-primitive field type in a .msg text, in order."""
    deps = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        base = re.sub(r"\[[^\]]*\]$", "", line.split()[0])  # strip [] / [N] / [<=N]
        base = re.sub(r"<=\d+$", "", base)  # bounded string
        if base in _PRIMITIVES:
            continue
        if base == "Header":
            deps.append(("std_msgs", "Header"))
        elif "/" in base:
            parts = base.split("/")
            deps.append((parts[0], parts[-1]))
        else:
            deps.append((package, base))
    return deps


def split_type(type_name: str) -> tuple[str, str]:
    """'sensor_msgs/msg/JointState' (or 'sensor_msgs/JointState') -> ('sensor_msgs', 'JointState')."""
    parts = type_name.split("/")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[1] != "msg"):
        raise ValueError(f"not a ROS 2 message type name: {type_name!r} (expected pkg/msg/Type)")
    return parts[0], parts[-1]


@cache
def message_definition(type_name: str) -> str:
    """Full `ros2msg` definition text of a type and all its dependencies, as rosbag2 writes it."""
    package, name = split_type(type_name)
    root = _msg_text(package, name)
    sections = [root.rstrip("\n")]
    seen = {(package, name)}
    queue = _dependencies(package, root)
    while queue:
        dep = queue.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        text = _msg_text(*dep)
        sections.append(f"{SEPARATOR}\nMSG: {dep[0]}/{dep[1]}\n{text.rstrip(chr(10))}")
        queue.extend(_dependencies(dep[0], text))
    return "\n".join(sections) + "\n"


def header_stamp_ns(cdr: bytes) -> int:
    """Stamp (ns) of a serialized message whose first field is std_msgs/Header: a Header
    starts with builtin_interfaces/Time {int32 sec, uint32 nanosec} right after the 4-byte
    CDR encapsulation, so no deserialisation is needed."""
    if len(cdr) < 12:
        raise ValueError("message too short to hold a header")
    endian = "<" if cdr[1] & 1 else ">"  # encapsulation 0x0001 = CDR little endian
    sec, nanosec = struct.unpack_from(endian + "iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec


# --- writing ----------------------------------------------------------------------------
_INFINITE = "\n    sec: 9223372036\n    nsec: 854775807"  # RMW_DURATION_INFINITE


def offered_qos_yaml(profiles: Sequence[dict]) -> str:
    """The ros2 MCAP profile's `offered_qos_profiles` channel metadata, in rosbag2's current
    (metadata version >= 9) YAML form. Each profile: history, depth, reliability, durability
    as rmw names ("keep_last", "reliable", "transient_local", ...). Empty list -> ""."""
    out = []
    for p in profiles:
        out.append(
            f"- history: {p.get('history', 'keep_last')}\n  depth: {int(p.get('depth', 10))}\n"
            f"  reliability: {p.get('reliability', 'reliable')}\n  durability: {p.get('durability', 'volatile')}\n"
            f"  deadline:{_INFINITE}\n  lifespan:{_INFINITE}\n  liveliness: automatic\n"
            f"  liveliness_lease_duration:{_INFINITE}\n  avoid_ros_namespace_conventions: false"
        )
    return "\n".join(out)


class EpisodeWriter:
    """One episode as one MCAP file, written to `<path>.part` and renamed to `<path>` on close.

    A crash (or `discard`) therefore never leaves a file named `.mcap`: every `.mcap` file in a
    recordings directory is complete and indexed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} already exists")
        self.partial_path = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self._file = open(self.partial_path, "xb")  # noqa: SIM115 - lives until close/discard
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="dexstack recorder")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self.message_count = 0
        self.closed = False

    def add_channel(self, topic: str, type_name: str, offered_qos: Sequence[dict] = ()) -> int:
        """Register `topic` (once) with the ROS 2 schema of `type_name`; returns the channel id.
        `offered_qos`: the publishers' QoS (see `offered_qos_yaml`), kept for `ros2 bag play`."""
        if topic in self._channels:
            return self._channels[topic]
        if type_name not in self._schemas:
            self._schemas[type_name] = self._writer.register_schema(
                name=type_name, encoding="ros2msg", data=message_definition(type_name).encode()
            )
        self._channels[topic] = self._writer.register_channel(
            topic=topic,
            message_encoding="cdr",
            schema_id=self._schemas[type_name],
            metadata={"offered_qos_profiles": offered_qos_yaml(offered_qos)},
        )
        return self._channels[topic]

    def write(self, channel_id: int, cdr: bytes, log_time_ns: int, publish_time_ns: int) -> None:
        self._writer.add_message(
            channel_id=channel_id,
            log_time=log_time_ns,
            data=cdr,
            publish_time=publish_time_ns,
            sequence=self.message_count,
        )
        self.message_count += 1

    def close(self, metadata: dict[str, str] | None = None) -> Path:
        """Write `metadata` as the `dexstack.episode` record, finish the index, fsync, rename."""
        if metadata is not None:
            self._writer.add_metadata(EPISODE_METADATA, {k: str(v) for k, v in metadata.items()})
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial_path, self.path)
        fsync_dir(self.path.parent)
        self.closed = True
        return self.path

    def abandon(self) -> Path:
        """Stop writing but keep the partial file (e.g. after a write error) for inspection."""
        self._file.close()
        self.closed = True
        return self.partial_path

    def discard(self) -> None:
        """Close and delete the partial file."""
        self._file.close()
        self.partial_path.unlink(missing_ok=True)
        self.closed = True


# --- reading ----------------------------------------------------------------------------
def episode_metadata(path: str | Path) -> dict[str, str]:
    """The `dexstack.episode` metadata record of an episode file ({} if absent)."""
    with open(path, "rb") as f:
        for record in make_reader(f).iter_metadata():
            if record.name == EPISODE_METADATA:
                return dict(record.metadata)
    return {}


def find_episode_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their `*.mcap` files (sorted); files are taken as given."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(p.glob("*.mcap"))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    if not found:
        raise FileNotFoundError(f"no .mcap files in {[str(p) for p in paths]}")
    return found


def _image_array(msg, path: Path, topic: str) -> np.ndarray:
    """rgb8/bgr8 -> (H, W, 3) uint8; 16UC1 (mm) / 32FC1 (m) -> (H, W) float32 metres."""
    h, w, enc = msg.height, msg.width, msg.encoding
    raw = bytes(msg.data)
    if enc in ("rgb8", "bgr8"):
        img = np.frombuffer(raw, np.uint8).reshape(h, msg.step)[:, : w * 3].reshape(h, w, 3)
        return np.ascontiguousarray(img[..., ::-1] if enc == "bgr8" else img)
    if enc in ("16UC1", "mono16"):
        dt = ">u2" if msg.is_bigendian else "<u2"
        return np.frombuffer(raw, dt).reshape(h, msg.step // 2)[:, :w].astype(np.float32) / 1000.0
    if enc == "32FC1":
        dt = ">f4" if msg.is_bigendian else "<f4"
        return np.frombuffer(raw, dt).reshape(h, msg.step // 4)[:, :w].astype(np.float32)
    raise DatasetError(f"{path}: {topic} has unsupported image encoding {enc!r}")


def _recorded_trajectory(msg) -> tuple[tuple[str, ...], float | None, list[TrajectoryPoint]]:
    """A recorded JointTrajectory as (joint names, start stamp or None for "now", points)."""
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    points = [
        TrajectoryPoint(
            p.time_from_start.sec + p.time_from_start.nanosec * 1e-9,
            list(p.positions),
            list(p.velocities),
            list(p.accelerations),
            list(p.effort),
        )
        for p in msg.points
    ]
    return tuple(msg.joint_names), (stamp if stamp != 0.0 else None), points


def convert_episode(
    path: str | Path, fps: float, profile: RobotProfile, cameras: Sequence[str], depth: bool = False
) -> tuple[dict[str, np.ndarray], dict]:
    """Sample one episode file at `fps` ticks; returns (frames, episode info).

    Ticks start at the first log time at which every required topic (joint states and each
    camera's color, and depth when asked) has a message, and run while `t + 1/fps` is not
    after the last message of the first required topic to end. Observations are the latest message at or before the tick. `action[k]`
    is the command for `t_k + 1/fps`, from replaying the controller-topic trajectories
    through `TrajectoryExecutor` with each message's log time as its arrival time: exactly what
    a JointTrajectoryController did with them, so one it refused (empty, ends in the past, ...)
    changed nothing (info["refused_trajectories"] counts them).
    """
    path = Path(path)
    dt = 1.0 / fps
    obs_topics = {contract.JOINT_STATES: contract.JOINT_POSITIONS}
    for cam in cameras:
        obs_topics[contract.camera_color_topic(cam)] = contract.rgb_key(cam)
        if depth:
            obs_topics[contract.camera_depth_topic(cam)] = contract.depth_key(cam)
    traj_topic = profile.trajectory_topic
    wanted = [*obs_topics, traj_topic, contract.TASK_INSTRUCTION, contract.SIM_EPISODE]

    series: dict[str, tuple[list[float], list]] = {t: ([], []) for t in obs_topics}
    trajectories: list[tuple[float, tuple[str, ...], float | None, list[TrajectoryPoint]]] = []
    last_task = last_episode_json = None
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, message, msg in reader.iter_decoded_messages(topics=wanted, log_time_order=True):
            t = message.log_time * 1e-9
            topic = channel.topic
            if topic == contract.JOINT_STATES:
                index = {n: i for i, n in enumerate(msg.name)}
                missing = [n for n in profile.joint_names if n not in index]
                if missing:
                    raise DatasetError(f"{path}: /joint_states lacks joints {missing}")
                value = np.array([msg.position[index[n]] for n in profile.joint_names], dtype=np.float64)
            elif topic in obs_topics:
                value = _image_array(msg, path, topic)
            elif topic == traj_topic:
                trajectories.append((t, *_recorded_trajectory(msg)))
                continue
            elif topic == contract.TASK_INSTRUCTION:
                last_task = msg.data
                continue
            else:
                last_episode_json = msg.data
                continue
            series[topic][0].append(t)
            series[topic][1].append(value)

    empty = [t for t, (times, _) in series.items() if not times]
    if empty:
        raise DatasetError(f"{path}: no messages on required topic(s) {empty}")
    t0 = max(times[0] for times, _ in series.values())
    # End where the first required topic ends, so no frame pairs fresh data with a stale stream.
    t_end = min(times[-1] for times, _ in series.values())
    n = int(np.floor((t_end - t0) / dt + 1e-9))
    if n < 1:
        raise DatasetError(f"{path}: recording is shorter than one frame at {fps} Hz after all topics started")
    ticks = t0 + dt * np.arange(n)

    frames: dict[str, np.ndarray] = {}
    for topic, (times, values) in series.items():
        idx = np.searchsorted(np.asarray(times), ticks + 1e-9, side="right") - 1  # latest at or before tick
        frames[obs_topics[topic]] = np.stack([values[i] for i in idx])

    # Replay commands in arrival order; the controller starts out holding the measured position.
    js_times, js_values = series[contract.JOINT_STATES]
    first_cmd = trajectories[0][0] if trajectories else t0
    js_t = np.asarray(js_times)
    i0 = max(0, int(np.searchsorted(js_t, first_cmd, side="right")) - 1)
    executor = TrajectoryExecutor(
        profile.joint_names, js_values[i0], interpolate_from_desired_state=profile.jtc_interpolate_from_desired_state
    )
    actions = np.empty((n, profile.n_joints), dtype=np.float64)
    refused = j = 0
    for k, tk in enumerate(ticks + dt):
        while j < len(trajectories) and trajectories[j][0] <= tk + 1e-9:
            arrival, names, start, points = trajectories[j]
            j += 1
            if trajectory_rejection(names, start, points, profile.joint_names, arrival) is not None:
                refused += 1  # the controller refused it: the previous trajectory went on
                continue
            positions = np.array([p.positions for p in points], dtype=np.float64)
            chunk = ActionChunk(names, positions, np.array([p.time_from_start for p in points]), start)
            latest = max(0, int(np.searchsorted(js_t, arrival, side="right")) - 1)
            executor.set_chunk(chunk, arrival, measured=js_values[latest])
        actions[k] = executor.sample(tk)
    frames[ACTION] = actions
    frames[contract.JOINT_POSITIONS] = frames[contract.JOINT_POSITIONS].astype(np.float32)
    frames["timestamp"] = ticks - t0

    meta = episode_metadata(path)
    sim_episode = {}
    if last_episode_json:
        try:
            sim_episode = json.loads(last_episode_json)
        except json.JSONDecodeError:
            sim_episode = {}
    success: bool | None = None
    if meta.get("success") in ("true", "false"):
        success = meta["success"] == "true"
    elif isinstance(sim_episode.get("success"), bool) and sim_episode.get("status", "done") == "done":
        success = sim_episode["success"]
    task = meta.get("task") or last_task or sim_episode.get("task") or ""
    return frames, {"task": task, "success": success, "source": str(path), "refused_trajectories": refused}


def _features(frames: dict[str, np.ndarray]) -> dict[str, dict]:
    feats = {}
    for key, arr in frames.items():
        if key == "timestamp":
            continue
        dtype = "uint8" if arr.dtype == np.uint8 else "float32"
        feats[key] = {"shape": list(arr.shape[1:]), "dtype": dtype}
    return feats


def build_from_mcap(
    mcap_paths: Iterable[str | Path] | str | Path,
    out_root: str | Path,
    profile: RobotProfile,
    fps: float | None = None,
    cameras: Sequence[str] | None = None,
    depth: bool = False,
    on_episode: Callable[[int, int, Path], None] | None = None,
) -> Dataset:
    """Build a dataset at `out_root` from MCAP episode files (or directories of them).

    `profile`: the robot that was recorded (its joint names and cameras; `hardware/profiles.py`);
    `fps` defaults to the policy rate, `cameras` to all the profile's cameras. Every file must convert; a bad file raises naming it, and the output
    directory then holds only the episodes before it (each complete).
    `on_episode(done, total, path)` is called after each file (progress bars).
    """
    fps = float(fps or contract.POLICY_HZ)
    cameras = list(profile.camera_names if cameras is None else cameras)
    for cam in cameras:
        profile.camera(cam)  # raises naming the profile's cameras
    if isinstance(mcap_paths, str | Path):
        mcap_paths = [mcap_paths]
    files = find_episode_files(mcap_paths)
    writer: DatasetWriter | None = None
    for i, path in enumerate(files):
        frames, info = convert_episode(path, fps, profile, cameras, depth=depth)
        if writer is None:
            writer = DatasetWriter(out_root, fps, profile.joint_names, _features(frames), robot_profile=profile.name)
        writer.add_episode(frames, task=info["task"], success=info["success"], source=info["source"])
        if on_episode:
            on_episode(i + 1, len(files), path)
    assert writer is not None
    writer.close()
    return Dataset(out_root)
