"""MCAP episode files with ROS 2 schemas: writing (for the recorder) and converting to datasets.

An episode file follows the MCAP `ros2` profile exactly as rosbag2 writes it: one schema per
message type (`ros2msg` encoding, the type's `.msg` text followed by every dependency after a
`====...\\nMSG: pkg/Type` separator), one channel per topic (`cdr` encoding), messages as the
serialized CDR bytes received from DDS. `ros2 bag info`, Foxglove and `mcap_ros2.reader`
read it. Episode facts (task, seed, success, times) are a metadata record `dexstack.episode`.

No rclpy here: the writer takes bytes, the converter decodes with `mcap_ros2`.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import re
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
from dexstack.dataset import ACTION, Dataset, DatasetError, DatasetWriter, staged_dataset
from dexstack.files import fsync_dir
from dexstack.trajectory import (
    ActionChunk,
    TrajectoryExecutor,
    TrajectoryPoint,
    trajectory_from_msg,
    trajectory_rejection,
)

EPISODE_METADATA = "dexstack.episode"
PARTIAL_SUFFIX = ".part"  # an episode being written; renamed to .mcap only when complete
INCOMPLETE_SUFFIX = ".incomplete.mcap"  # finalised but did not end normally (metadata complete: false)
MCAP_MAGIC = b"\x89MCAP0\r\n"  # first and last 8 bytes of every complete MCAP file
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


def new_episode_path(output_dir: Path, task: str, first_index: int = 0) -> Path:
    """`<output_dir>/<task>_<YYYYmmdd-HHMMSS>_<n>.mcap` with the first n >= `first_index` that no
    file (complete, incomplete or still being written) uses yet."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", task) or "episode"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    n = first_index
    while True:
        path = output_dir / f"{stem}_{stamp}_{n}.mcap"
        if not any(p.exists() for p in (path, path.with_name(path.name + PARTIAL_SUFFIX), incomplete_name(path))):
            return path
        n += 1


def episode_record(sim: dict, label: bool | None, **facts: object) -> dict[str, str]:
    """The `dexstack.episode` metadata: `facts` as strings, plus `seed`, `success` and `sim_episode`
    from the sim's latest /sim/episode announcement `sim` ({} on a robot). Success is known only
    once the sim says the episode is done, or when an operator gives `label` (which wins)."""
    success = sim.get("success") if sim.get("status", "done") == "done" else None
    success = success if label is None else label
    return {k: str(v) for k, v in facts.items()} | {
        "seed": str(sim.get("seed", "")),
        "success": str(success).lower() if isinstance(success, bool) else "",
        "sim_episode": json.dumps(sim) if sim else "",
    }


class EpisodeWriteError(Exception):
    """Writing an episode file failed (full disk, I/O error); the partial file has been removed."""


class EpisodeWriter:
    """One episode as one MCAP file, written to `<path>.part` and renamed on close: to `<path>`
    when complete, to `<stem>.incomplete.mcap` when not (a shutdown mid-episode).

    A crash (or `discard`) therefore never leaves a file named like a complete episode. The
    first I/O error (ENOSPC, EIO) ends the file: it is deleted at once (freeing the space it
    held), later writes are ignored, `error` says why and `close` raises `EpisodeWriteError`.
    No method raises OSError otherwise, so a recorder survives a full disk.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} already exists")
        self.partial_path = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.incomplete_path = incomplete_name(self.path)
        self._file = open(self.partial_path, "xb")  # noqa: SIM115 - lives until close/discard
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self.message_count = 0
        self.closed = False
        self.error: str | None = None
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._guarded(self._writer.start, profile="ros2", library="dexstack recorder")

    def _guarded(self, op: Callable, *args, **kwargs):
        """Run one write step; the first OSError ends the file (see the class docstring)."""
        if self.error is not None or self.closed:
            return None
        try:
            return op(*args, **kwargs)
        except OSError as exc:
            self.error = f"{self.partial_path}: {exc.strerror or exc}"
            self.discard()
            return None

    def add_channel(self, topic: str, type_name: str, offered_qos: Sequence[dict] = ()) -> int:
        """Register `topic` (once) with the ROS 2 schema of `type_name`; returns the channel id
        (-1 once the file has failed). `offered_qos`: the publishers' QoS (see `offered_qos_yaml`)."""
        if topic in self._channels:
            return self._channels[topic]
        if type_name not in self._schemas:
            schema = self._guarded(
                self._writer.register_schema,
                name=type_name,
                encoding="ros2msg",
                data=message_definition(type_name).encode(),
            )
            if schema is None:
                return -1
            self._schemas[type_name] = schema
        channel = self._guarded(
            self._writer.register_channel,
            topic=topic,
            message_encoding="cdr",
            schema_id=self._schemas[type_name],
            metadata={"offered_qos_profiles": offered_qos_yaml(offered_qos)},
        )
        if channel is None:
            return -1
        self._channels[topic] = channel
        return channel

    def write(self, channel_id: int, cdr: bytes, log_time_ns: int, publish_time_ns: int) -> None:
        """Append one message; ignored once the file has failed (see `error`)."""
        self._guarded(
            self._writer.add_message,
            channel_id=channel_id,
            log_time=log_time_ns,
            data=cdr,
            publish_time=publish_time_ns,
            sequence=self.message_count,
        )
        if self.error is None:
            self.message_count += 1

    def close(self, metadata: dict[str, str] | None = None, complete: bool = True) -> Path:
        """Write `metadata` as the `dexstack.episode` record (plus `complete`), finish the index,
        fsync and rename; returns the final path. Raises `EpisodeWriteError` (file removed) if any
        step failed, now or earlier."""
        meta = {k: str(v) for k, v in (metadata or {}).items()} | {"complete": str(complete).lower()}
        final = self.path if complete else self.incomplete_path
        for step in (
            lambda: self._writer.add_metadata(EPISODE_METADATA, meta),
            self._writer.finish,
            self._file.flush,
            lambda: os.fsync(self._file.fileno()),
            self._file.close,
            lambda: os.replace(self.partial_path, final),
        ):
            self._guarded(step)  # each step only runs while none has failed
        if self.error is not None:
            raise EpisodeWriteError(f"episode not saved: {self.error}")
        try:
            fsync_dir(final.parent)
        except OSError:
            pass  # the file itself is complete and fsynced; only the rename's durability is at risk
        self.closed = True
        return final

    def discard(self) -> None:
        """Close and delete the partial file; never raises (a full disk cannot flush the buffer,
        and nothing buffered is wanted)."""
        self.closed = True
        try:
            self._file.close()  # flushes; on ENOSPC it raises but the descriptor is closed
        except OSError:
            pass
        try:
            self.partial_path.unlink(missing_ok=True)
        except OSError:
            pass


# --- reading ----------------------------------------------------------------------------
class EpisodeFileError(DatasetError):
    """An episode file cannot be read (not MCAP, truncated, corrupt); one line naming the file."""


class InvalidEpisode(DatasetError):
    """An episode file reads but is not a usable episode; one line naming the file and why."""


def incomplete_name(path: Path) -> Path:
    """`<stem>.mcap` -> `<stem>.incomplete.mcap`: where an episode that did not end normally goes."""
    return path.with_name(path.name.removesuffix(".mcap") + INCOMPLETE_SUFFIX)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _unreadable(path: Path, exc: BaseException) -> EpisodeFileError:
    """Say what is wrong with a file the MCAP reader choked on: magic bytes first, then the end."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MCAP_MAGIC))
            f.seek(max(0, path.stat().st_size - len(MCAP_MAGIC)))
            tail = f.read()
    except OSError as os_exc:
        return EpisodeFileError(f"{path}: cannot read: {os_exc.strerror or os_exc}")
    if head != MCAP_MAGIC:
        why = "empty file" if not head else "not an MCAP file (wrong magic bytes)"
    elif tail != MCAP_MAGIC:
        why = "truncated MCAP file (no footer: the writer was killed or the copy is incomplete)"
    else:
        why = f"corrupt MCAP file ({type(exc).__name__}: {_one_line(exc)})"
    return EpisodeFileError(f"{path}: {why}")


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Every failure of the MCAP/CDR parsers on a user's file becomes one EpisodeFileError
    naming it; our own validation errors pass through unchanged."""
    try:
        yield
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - the parsers raise many types on corrupt input
        raise _unreadable(path, exc) from None


def episode_metadata(path: str | Path) -> dict[str, str]:
    """The `dexstack.episode` metadata record of an episode file ({} if absent).
    Raises `EpisodeFileError` (one line naming the file) if it is not a readable MCAP file."""
    path = Path(path)
    with _reading(path), open(path, "rb") as f:
        for record in make_reader(f).iter_metadata():
            if record.name == EPISODE_METADATA:
                return dict(record.metadata)
    return {}


def _metadata_problem(meta: dict[str, str], profile: RobotProfile) -> str | None:
    """Why an episode's metadata alone disqualifies it, or None."""
    # Recorders before `complete` existed wrote end_reason "shutdown" for the same case.
    if meta.get("complete") == "false" or ("complete" not in meta and meta.get("end_reason") == "shutdown"):
        return f"incomplete episode (ended by {meta.get('end_reason') or 'unknown'}, not by ~/stop_episode)"
    if meta.get("profile") and meta["profile"] != profile.name:
        return f"recorded with robot profile {meta['profile']!r}, building for {profile.name!r}"
    return None


def find_episode_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their `*.mcap` files and never-finalised `*.mcap.part` files
    (sorted; the converter reports the latter as skipped); files are taken as given."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted([*p.glob("*.mcap"), *p.glob("*.mcap" + PARTIAL_SUFFIX)])
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


@dataclass
class _Streams:
    """What one pass over an episode file collected (see `_read_streams`)."""

    series: dict[str, tuple[list[float], list]]  # observation topic -> (log times s, values)
    stamps: dict[str, list[int]]  # observation topic -> header stamps (ns), parallel to series
    # (arrival = log time s, joint names, start stamp or None for "now", points), replayed with JTC's rules
    trajectories: list[tuple[float, tuple[str, ...], float | None, list[TrajectoryPoint]]]
    last_task: str | None
    sim: list[tuple[dict, bool]]  # /sim/episode announcements, each with "came after observations"


def _read_streams(path: Path, obs_topics: dict[str, str], profile: RobotProfile) -> _Streams:
    """Decode the topics the converter needs, in the order they were written, checking on the way
    that log times and each observation topic's header stamps never go back (two graphs on one
    domain, or a sim clock reset, would make them). Raises InvalidEpisode / EpisodeFileError."""
    traj_topic = profile.trajectory_topic
    wanted = [*obs_topics, traj_topic, contract.TASK_INSTRUCTION, contract.SIM_EPISODE]
    out = _Streams({t: ([], []) for t in obs_topics}, {t: [] for t in obs_topics}, [], None, [])
    last_log, last_stamp = -1, dict.fromkeys(obs_topics, -1)
    with _reading(path), open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, message, msg in reader.iter_decoded_messages(topics=wanted, log_time_order=False):
            t, topic = message.log_time * 1e-9, channel.topic
            if message.log_time < last_log:
                raise InvalidEpisode(f"{path}: log time goes back at {t:.3f} s on {topic} (a clock reset?)")
            last_log = message.log_time
            if topic in obs_topics:
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                if stamp < last_stamp[topic]:
                    raise InvalidEpisode(
                        f"{path}: {topic} header stamps go back at log time {t:.3f} s "
                        "(two publishers, e.g. another graph on the same ROS domain, or a sim reset)"
                    )
                last_stamp[topic] = stamp
            if topic == contract.JOINT_STATES:
                names = list(msg.name)
                if len(set(names)) != len(names) or len(msg.position) != len(names):
                    raise InvalidEpisode(
                        f"{path}: a /joint_states message at {t:.3f} s has duplicate names or "
                        f"{len(msg.position)} positions for {len(names)} names"
                    )
                index = {n: i for i, n in enumerate(names)}
                missing = [n for n in profile.joint_names if n not in index]
                if missing:
                    raise InvalidEpisode(f"{path}: /joint_states lacks joints {missing}")
                value = np.array([msg.position[index[n]] for n in profile.joint_names], dtype=np.float64)
            elif topic in obs_topics:
                try:
                    value = _image_array(msg, path, topic)
                except ValueError as exc:  # a size that does not match height, width and step
                    raise InvalidEpisode(f"{path}: bad {topic} image at log time {t:.3f} s: {exc}") from None
            elif topic == traj_topic:
                out.trajectories.append((t, *trajectory_from_msg(msg)))
                continue
            elif topic == contract.TASK_INSTRUCTION:
                out.last_task = msg.data
                continue
            else:
                try:
                    announcement = json.loads(msg.data)
                except json.JSONDecodeError:
                    announcement = None
                if not isinstance(announcement, dict):
                    raise InvalidEpisode(f"{path}: a {topic} message is not a JSON object")
                out.sim.append((announcement, any(times for times, _ in out.series.values())))
                continue
            out.series[topic][0].append(t)
            out.series[topic][1].append(value)
            out.stamps[topic].append(stamp)
    return out


def _sim_outcome(path: Path, streams: _Streams) -> tuple[dict, int | None]:
    """The sim episode a file holds and its start stamp (ns): (its last announcement, the stamp
    of its "running" one), or ({}, None) without announcements (a robot). The file's episode is
    the one announced last. Announcements of earlier episodes are prior state (the recorder's copy
    of the latched topic, or a latched message delivered late) unless another episode is announced
    after this one began to be (two sims on one domain), or another episode ends after observations
    began (the recording spans an episode end). Either raises InvalidEpisode."""

    def key(e: dict) -> tuple:
        return e.get("episode"), e.get("seed")

    if not streams.sim:
        return {}, None
    episode = key(streams.sim[-1][0])
    first = next(i for i, (e, _) in enumerate(streams.sim) if key(e) == episode)
    others = {key(e) for e, _ in streams.sim[first:] if key(e) != episode}
    others |= {key(e) for e, after in streams.sim if after and key(e) != episode and e.get("status") == "done"}
    if others:
        shown = ", ".join(f"episode {e} seed {s}" for e, s in sorted({episode, *others}, key=str)[:4])
        raise InvalidEpisode(f"{path}: holds {len(others) + 1} sim episodes ({shown}), not exactly one")
    mine = [e for e, _ in streams.sim if key(e) == episode]
    start = [e["stamp"] for e in mine if e.get("status") == "running" and isinstance(e.get("stamp"), int | float)]
    outcome = ([e for e in mine if e.get("status") == "done"] or mine)[-1]
    return outcome, (round(start[0] * 1e9) if start else None)


def convert_episode(
    path: str | Path, fps: float, profile: RobotProfile, cameras: Sequence[str], depth: bool = False
) -> tuple[dict[str, np.ndarray], dict]:
    """Validate one episode file and sample it at `fps` ticks; returns (frames, episode info).

    Validation (docs/DATASET.md): a readable, complete recording of `profile`, with one sim
    episode at most, log times and observation stamps that never go back, every required topic
    and the controller topic present, and success recorded. Failing files raise `InvalidEpisode`
    or `EpisodeFileError`, one line naming the file.

    Ticks start at the first log time at which every required topic (joint states and each
    camera's color, and depth when asked) has a message, and run while `t + 1/fps` is not
    after the last message of the first required topic to end. Observations are the latest message at or before the tick. `action[k]`
    is the command for `t_k + 1/fps`, from replaying the controller-topic trajectories
    through `TrajectoryExecutor` with each message's log time as its arrival time: exactly what
    a JointTrajectoryController did with them, so one it refused (empty, ends in the past, ...)
    changed nothing (info["refused_trajectories"] counts them).
    """
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        raise InvalidEpisode(f"{path}: never finalised (the recorder was killed mid-episode)")
    meta = episode_metadata(path)
    problem = _metadata_problem(meta, profile)
    if problem:
        raise InvalidEpisode(f"{path}: {problem}")
    dt = 1.0 / fps
    obs_topics = {contract.JOINT_STATES: contract.JOINT_POSITIONS}
    for cam in cameras:
        obs_topics[contract.camera_color_topic(cam)] = contract.rgb_key(cam)
        if depth:
            obs_topics[contract.camera_depth_topic(cam)] = contract.depth_key(cam)
    streams = _read_streams(path, obs_topics, profile)
    series, trajectories = streams.series, streams.trajectories
    sim_episode, start_ns = _sim_outcome(path, streams)
    if start_ns is not None:
        # Observations stamped before the episode began belong to what came before it: the
        # recorder's queue backlog from the last episode, a paused sim's state before the reset.
        for topic, (times, values) in list(series.items()):
            keep = [i for i, stamp in enumerate(streams.stamps[topic]) if stamp >= start_ns]
            series[topic] = ([times[i] for i in keep], [values[i] for i in keep])
    success: bool | None = None
    if meta.get("success") in ("true", "false"):
        success = meta["success"] == "true"
    elif isinstance(sim_episode.get("success"), bool) and sim_episode.get("status") == "done":
        success = sim_episode["success"]
    if success is None:
        raise InvalidEpisode(f"{path}: success not recorded (no metadata label and no finished /sim/episode)")

    empty = [t for t, (times, _) in series.items() if not times]
    if empty:
        raise InvalidEpisode(f"{path}: no messages on required topic(s) {empty}")
    if not trajectories:
        raise InvalidEpisode(f"{path}: no commands on {profile.trajectory_topic}, so no action labels")
    t0 = max(times[0] for times, _ in series.values())
    # End where the first required topic ends, so no frame pairs fresh data with a stale stream.
    t_end = min(times[-1] for times, _ in series.values())
    n = int(np.floor((t_end - t0) / dt + 1e-9))
    if n < 1:
        raise InvalidEpisode(f"{path}: recording is shorter than one frame at {fps} Hz after all topics started")
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

    task = meta.get("task") or streams.last_task or sim_episode.get("instruction") or ""
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
    overwrite: bool = False,
    on_episode: Callable[[int, int, Path], None] | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> Dataset:
    """Build a dataset at `out_root` from MCAP episode files (or directories of them).

    `profile`: the robot that was recorded (its joint names and cameras; `hardware/profiles.py`);
    `fps` defaults to the policy rate, `cameras` to all the profile's cameras. Each file is
    validated (`convert_episode`); a file that fails is left out and `on_skip("<path>: <why>")`
    is called (one line per file). The
    dataset is built in a temporary directory and renamed to `out_root` only when complete, so a
    failed build leaves nothing behind (and with `overwrite` the old dataset stays until then).
    Raises DatasetError if no file gives an episode. `on_episode(done, total, path)` is called
    after each file (progress bars).
    """
    fps = float(fps or contract.POLICY_HZ)
    cameras = list(profile.camera_names if cameras is None else cameras)
    for cam in cameras:
        profile.camera(cam)  # raises naming the profile's cameras
    if isinstance(mcap_paths, str | Path):
        mcap_paths = [mcap_paths]
    files = find_episode_files(mcap_paths)
    reasons: list[str] = []
    with staged_dataset(out_root, overwrite=overwrite) as stage:
        writer: DatasetWriter | None = None
        for i, path in enumerate(files):
            try:
                frames, info = convert_episode(path, fps, profile, cameras, depth=depth)
                if writer is None:
                    writer = DatasetWriter(
                        stage, fps, profile.joint_names, _features(frames), robot_profile=profile.name
                    )
                writer.add_episode(frames, task=info["task"], success=info["success"], source=info["source"])
            except DatasetError as exc:
                text = _one_line(exc)
                reasons.append(text if text.startswith(str(path)) else f"{path}: {text}")
                if on_skip:
                    on_skip(reasons[-1])
            if on_episode:
                on_episode(i + 1, len(files), path)
        if writer is None:
            if len(files) == 1:
                raise DatasetError(f"{reasons[0]}; no dataset written")
            raise DatasetError(f"none of the {len(files)} files is a valid episode; no dataset written")
        writer.close()
    return Dataset(out_root)
