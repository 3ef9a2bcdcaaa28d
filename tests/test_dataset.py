"""Dataset format and the MCAP -> dataset converter, on real files.

The converter test writes a synthetic episode with real CDR bytes (rclpy serialisation) and
the same MCAP writer the recorder uses, then checks frames and actions against values worked
out by hand from JointTrajectoryController semantics.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack import contract
from dexstack.dataset import Dataset, DatasetError, DatasetWriter
from dexstack.hardware.profiles import PANDA
from dexstack.mcap_io import EpisodeWriter, build_from_mcap, incomplete_name, message_definition

J = PANDA.n_joints
HOME = np.array(PANDA.home)
Q1 = HOME + np.linspace(0.1, 0.8, J) * np.array([1, 1, 1, 1, 1, 1, 1, 0.01])
Q3 = HOME - 0.2 * np.array([1, 1, 1, 0, 1, 0, 1, 0])
T0 = 100.0  # sim time at the start of the recording (s)
NS = 1_000_000_000


def _stamp(msg, t: float) -> None:
    ns = int(round(t * NS))
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns // NS, ns % NS


def _trajectory(stamp: float, points: list[tuple[float, np.ndarray]]) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(PANDA.joint_names))
    _stamp(msg, stamp)
    for tfs, q in points:
        pt = JointTrajectoryPoint(positions=[float(x) for x in q])
        pt.time_from_start.sec, pt.time_from_start.nanosec = int(tfs), int(round((tfs % 1) * NS))
        msg.points.append(pt)
    return msg


def _joint_positions_at(t: float) -> np.ndarray:
    return HOME + 0.01 * (t - T0)


def write_synthetic_episode(
    path, success: bool | None = True, meta: dict | None = None, edit=None, complete: bool = True
) -> None:
    """3 s episode: joint states at 100 Hz (from T0+5 ms), wrist/scene rgb + depth at 15 Hz,
    and three commands: a 1-point chunk at T0+0.5 (1 s to Q1), an empty trajectory at T0+1.0
    (which a JointTrajectoryController refuses), and a latency-compensated chunk arriving T0+2.0
    stamped T0+1.8 whose first point (HOME, due T0+1.9) is already past and whose second point Q3
    is due at T0+2.5.
    `meta` overrides metadata; `edit(events, channels)` may change the (t, channel, msg) list
    (channels: name -> id, including "sim" for /sim/episode) before it is written."""
    w = EpisodeWriter(path)
    js = w.add_channel(contract.JOINT_STATES, "sensor_msgs/msg/JointState")
    traj = w.add_channel(PANDA.trajectory_topic, "trajectory_msgs/msg/JointTrajectory")
    task = w.add_channel(contract.TASK_INSTRUCTION, "std_msgs/msg/String")
    rgb = {c: w.add_channel(contract.camera_color_topic(c), "sensor_msgs/msg/Image") for c in ("wrist", "scene")}
    depth = {c: w.add_channel(contract.camera_depth_topic(c), "sensor_msgs/msg/Image") for c in ("wrist", "scene")}
    sim = w.add_channel(contract.SIM_EPISODE, "std_msgs/msg/String")
    events = []  # (t, channel, msg)
    events.append((T0, task, String(data="lift the red can")))
    order = list(reversed(PANDA.joint_names))  # the converter must reorder by name
    for i in range(300):
        t = T0 + 0.005 + 0.01 * i
        q = _joint_positions_at(t)
        msg = JointState(name=order, position=[float(q[PANDA.joint_names.index(n)]) for n in order])
        _stamp(msg, t)
        events.append((t, js, msg))
    for cam, start in (("wrist", 0.05), ("scene", 0.12)):
        for i in range(45):
            t = T0 + start + i / 15.0
            img = Image(height=96, width=96, encoding="rgb8", step=96 * 3)
            img.data = np.full((96, 96, 3), i, np.uint8).tobytes()
            _stamp(img, t)
            events.append((t, rgb[cam], img))
            d = Image(height=96, width=96, encoding="16UC1", step=96 * 2)
            d.data = np.full((96, 96), 500 + i, np.uint16).tobytes()
            _stamp(d, t)
            events.append((t, depth[cam], d))
    events.append((T0 + 0.5, traj, _trajectory(T0 + 0.5, [(1.0, Q1)])))
    events.append((T0 + 1.0, traj, JointTrajectory(joint_names=list(PANDA.joint_names))))
    events.append((T0 + 2.0, traj, _trajectory(T0 + 1.8, [(0.1, HOME), (0.7, Q3)])))
    events.sort(key=lambda e: e[0])
    if edit:
        edit(events, {"js": js, "traj": traj, "sim": sim, "task": task})
    for t, channel, msg in events:
        ns = int(round(t * NS))
        w.write(channel, serialize_message(msg), ns, ns)
    label = "" if success is None else str(success).lower()
    w.close({"task": "lift the red can", "success": label, "profile": "panda", **(meta or {})}, complete=complete)


def expected_action(t: float) -> np.ndarray:
    """The command at time t, worked out by hand for the synthetic episode with JTC's rules. Before
    the first command the controller holds; the best record of what it held is the measured
    position when that command arrived (latest joint state at T0+0.495). The empty trajectory is
    refused, so the first chunk runs on to Q1; the late chunk's first point is past, so the command
    joins its HOME -> Q3 segment where it is at T0+2.0 (JTC's Trajectory::sample)."""
    start = _joint_positions_at(T0 + 0.495)
    if t < T0 + 0.5:
        return start
    if t < T0 + 1.5:
        return start + (t - T0 - 0.5) / 1.0 * (Q1 - start)
    if t < T0 + 2.0:
        return Q1
    if t < T0 + 2.5:
        return HOME + (t - T0 - 1.9) / 0.6 * (Q3 - HOME)
    return Q3


def test_converter_frames_and_actions_follow_the_replayed_trajectories(tmp_path):
    (tmp_path / "rec").mkdir()
    write_synthetic_episode(tmp_path / "rec" / "ep.mcap")
    ds = build_from_mcap(tmp_path / "rec", tmp_path / "ds", PANDA, fps=10.0, cameras=["wrist", "scene"], depth=True)
    assert len(ds) == 1
    ep = ds.episode(0)
    # All topics have a message from the first scene image (T0+0.12); the first topic to end is
    # the wrist camera (T0+0.05+44/15); a frame needs its action target t+0.1 before that.
    t_first, t_last = T0 + 0.12, T0 + 0.05 + 44 / 15
    n = int(np.floor((t_last - t_first) / 0.1))
    assert n == 28
    assert ep["timestamp"].shape == (n,)
    np.testing.assert_allclose(ep["timestamp"], 0.1 * np.arange(n), atol=1e-9)
    ticks = t_first + 0.1 * np.arange(n)
    assert set(ep) == {"timestamp", "joint_positions", "action", "wrist_rgb", "scene_rgb", "wrist_depth", "scene_depth"}
    assert ep["wrist_rgb"].shape == (n, 96, 96, 3) and ep["wrist_rgb"].dtype == np.uint8
    assert ep["wrist_depth"].dtype == np.float32
    for k, t in enumerate(ticks):
        js_t = T0 + 0.005 + 0.01 * np.floor((t - T0 - 0.005) / 0.01 + 1e-6)  # latest joint state <= t
        np.testing.assert_allclose(ep["joint_positions"][k], _joint_positions_at(js_t), atol=1e-6)
        scene_i = int(np.floor((t - T0 - 0.12) * 15 + 1e-6))
        wrist_i = int(np.floor((t - T0 - 0.05) * 15 + 1e-6))
        assert ep["scene_rgb"][k, 0, 0, 0] == scene_i and ep["wrist_rgb"][k, 5, 5, 2] == wrist_i
        assert ep["wrist_depth"][k, 0, 0] == pytest.approx((500 + wrist_i) / 1000.0)
        np.testing.assert_allclose(
            ep["action"][k], expected_action(t + 0.1), atol=1e-5, err_msg=f"frame {k} at t={t - T0:.2f}"
        )
    # The command is not the measured state: the chunk moved the target ahead of the arm.
    assert not np.allclose(ep["action"][10], ep["joint_positions"][10], atol=1e-3)
    entry = ds.meta["episodes"][0]
    assert entry["task"] == "lift the red can" and entry["success"] is True
    assert entry["source"].endswith("ep.mcap") and entry["length"] == n
    assert ds.meta["features"]["action"] == {"shape": [J], "dtype": "float32"}
    assert ds.joint_names == list(PANDA.joint_names)


def test_converter_counts_the_trajectories_the_controller_refused(tmp_path):
    from dexstack.mcap_io import convert_episode

    write_synthetic_episode(tmp_path / "ep.mcap")
    _, info = convert_episode(tmp_path / "ep.mcap", 10.0, PANDA, ["wrist", "scene"])
    assert info["refused_trajectories"] == 1  # the empty one


def test_converter_rejects_an_episode_without_camera_frames(tmp_path):
    w = EpisodeWriter(tmp_path / "no_cam.mcap")
    ch = w.add_channel(contract.JOINT_STATES, "sensor_msgs/msg/JointState")
    traj = w.add_channel(PANDA.trajectory_topic, "trajectory_msgs/msg/JointTrajectory")
    for i in range(20):
        msg = JointState(name=list(PANDA.joint_names), position=list(HOME))
        w.write(ch, serialize_message(msg), i * 10_000_000, 0)
        if i == 1:  # a one-point hold at the measured position: the label is HOME throughout
            w.write(traj, serialize_message(_trajectory(0.0, [(0.1, HOME)])), i * 10_000_000, 0)
    w.close({"success": "true"})
    with pytest.raises(DatasetError, match="camera/wrist/color/image_raw"):
        build_from_mcap(tmp_path / "no_cam.mcap", tmp_path / "ds", PANDA, cameras=["wrist"])
    # Joint states alone are enough when no camera is asked for.
    ds = build_from_mcap(tmp_path / "no_cam.mcap", tmp_path / "ds2", PANDA, cameras=[])
    assert len(ds) == 1 and set(ds.features) == {"joint_positions", "action"}
    np.testing.assert_allclose(ds.episode(0)["action"], np.tile(HOME, (len(ds.episode(0)["action"]), 1)), atol=1e-6)


def test_episode_writer_is_atomic_and_schemas_carry_dependencies(tmp_path):
    path = tmp_path / "ep.mcap"
    w = EpisodeWriter(path)
    w.add_channel(contract.TASK_INSTRUCTION, "std_msgs/msg/String")
    assert not path.exists() and (tmp_path / "ep.mcap.part").exists()  # incomplete never looks complete
    w.discard()
    assert list(tmp_path.iterdir()) == []
    text = message_definition("trajectory_msgs/msg/JointTrajectory")
    assert "JointTrajectoryPoint[] points" in text
    for dep in (
        "std_msgs/Header",
        "builtin_interfaces/Time",
        "trajectory_msgs/JointTrajectoryPoint",
        "builtin_interfaces/Duration",
    ):
        assert f"\nMSG: {dep}\n" in text
    with pytest.raises(FileNotFoundError, match="no_such_msgs/msg/Thing"):
        message_definition("no_such_msgs/msg/Thing")


# --- DatasetWriter / Dataset --------------------------------------------------------------
FEATURES = {
    "joint_positions": {"shape": [J], "dtype": "float32"},
    "wrist_rgb": {"shape": [8, 8, 3], "dtype": "uint8"},
    "action": {"shape": [J], "dtype": "float32"},
}


def _frames(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "joint_positions": rng.normal(size=(n, J)).astype(np.float32),
        "wrist_rgb": rng.integers(0, 255, size=(n, 8, 8, 3), dtype=np.uint8),
        "action": rng.normal(size=(n, J)),
    }  # float64 is accepted into a float32 feature


def test_writer_reader_round_trip(tmp_path):
    frames = [_frames(5, 0), _frames(7, 1)]
    with DatasetWriter(tmp_path / "ds", 10.0, PANDA.joint_names, FEATURES) as w:
        assert w.add_episode(frames[0], task="a", success=True) == 0
        assert w.add_episode(frames[1], task="b", success=None, source="x.mcap") == 1
    ds = Dataset(tmp_path / "ds")
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["format"] == "dexstack-dataset" and meta["version"] == 1 and meta["fps"] == 10.0
    assert [e["length"] for e in meta["episodes"]] == [5, 7]
    assert meta["episodes"][1] == {
        "index": 1,
        "file": "episode_000001.npz",
        "length": 7,
        "task": "b",
        "success": None,
        "source": "x.mcap",
    }
    assert len(ds) == 2 and ds.num_frames == 12
    for i, f in enumerate(frames):
        ep = ds.episode(i)
        np.testing.assert_array_equal(ep["wrist_rgb"], f["wrist_rgb"])
        np.testing.assert_array_equal(ep["action"], f["action"].astype(np.float32))
        assert ep["action"].dtype == np.float32
        np.testing.assert_allclose(ep["timestamp"], np.arange(len(f["action"])) / 10.0)
    with pytest.raises(IndexError, match="2 episodes"):
        ds.episode(2)
    h = ds.content_hash()
    assert h == Dataset(tmp_path / "ds").content_hash()
    data = dict(np.load(tmp_path / "ds" / "episode_000001.npz"))
    data["action"][0, 0] += 1.0
    np.savez(tmp_path / "ds" / "episode_000001.npz", **data)
    assert Dataset(tmp_path / "ds").content_hash() != h


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda f: f.update(action=f["action"][:, :3]), "'action': frames have shape"),
        (lambda f: f["joint_positions"].__setitem__((2, 1), np.nan), "'joint_positions': 1 frame"),
        (lambda f: f.update(wrist_rgb=f["wrist_rgb"].astype(np.float32)), "'wrist_rgb': dtype float32, expected uint8"),
        (lambda f: f.update(action=f["action"][:4]), "different frame counts"),
        (lambda f: f.pop("wrist_rgb"), "missing \\['wrist_rgb'\\]"),
        (lambda f: f.update(extra=np.zeros(5)), "unexpected \\['extra'\\]"),
        (lambda f: f.update(timestamp=np.zeros(5)), "strictly increasing"),
    ],
)
def test_writer_rejects_bad_episodes_and_keeps_good_ones(tmp_path, break_it, message):
    w = DatasetWriter(tmp_path / "ds", 10.0, PANDA.joint_names, FEATURES)
    w.add_episode(_frames(5), task="good")
    bad = _frames(5, 1)
    break_it(bad)
    with pytest.raises(DatasetError, match=message):
        w.add_episode(bad, task="bad")
    w.close()
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 1 and ds.meta["episodes"][0]["task"] == "good"
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["episode_000000.npz", "meta.json"]


def test_writer_refuses_an_existing_dataset_and_reader_refuses_foreign_dirs(tmp_path):
    DatasetWriter(tmp_path / "ds", 10.0, PANDA.joint_names, FEATURES).close()
    with pytest.raises(DatasetError, match="already holds a dataset"):
        DatasetWriter(tmp_path / "ds", 10.0, PANDA.joint_names, FEATURES)
    with pytest.raises(DatasetError, match="shape \\[8\\] does not match 3 joint names"):
        DatasetWriter(tmp_path / "ds2", 10.0, PANDA.joint_names[:3], FEATURES)
    with pytest.raises(DatasetError, match="not a dataset"):
        Dataset(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"format": "lerobot", "version": 3}')
    with pytest.raises(DatasetError, match="is not 'dexstack-dataset' version 1"):
        Dataset(tmp_path / "other")


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at the terminal width


def test_cli_build_and_info(tmp_path):
    from typer.testing import CliRunner

    from dexstack.cli.data import app

    (tmp_path / "rec").mkdir()
    write_synthetic_episode(tmp_path / "rec" / "a.mcap", success=True)
    write_synthetic_episode(tmp_path / "rec" / "b.mcap", success=False)
    runner = CliRunner()
    result = runner.invoke(app, ["build", str(tmp_path / "rec"), "--out", str(tmp_path / "ds"), "--cameras", "wrist"])
    assert result.exit_code == 0, result.output
    # wrist only: frames from T0+0.05 while t+0.1 <= T0+0.05+44/15 -> 29 per episode
    assert "wrote 2 episodes, 58 frames at 10 Hz" in _flat(result.output)
    ds = Dataset(tmp_path / "ds")
    assert [e["success"] for e in ds.meta["episodes"]] == [True, False]
    assert "scene_rgb" not in ds.features and "wrist_rgb" in ds.features
    again = runner.invoke(app, ["build", str(tmp_path / "rec"), "--out", str(tmp_path / "ds")])
    assert again.exit_code == 2 and "already holds a dataset" in _flat(again.output)
    bad_cam = runner.invoke(app, ["build", str(tmp_path / "rec"), "--out", str(tmp_path / "x"), "--cameras", "top"])
    assert bad_cam.exit_code == 2 and "no camera 'top'" in _flat(bad_cam.output)
    info = runner.invoke(app, ["info", str(tmp_path / "ds")])
    assert info.exit_code == 0 and "2 episodes, 58 frames" in _flat(info.output) and "success 1/2" in _flat(info.output)


# --- validation: what `dataset build` leaves out, and why ---------------------------------
def _sim(episode: int, seed: int, status: str, stamp: float, success: bool = False) -> String:
    announcement = {"episode": episode, "seed": seed, "status": status, "success": success, "stamp": stamp}
    return String(data=json.dumps(announcement))


def _announce(*msgs: tuple[float, String]):
    """An `edit` adding /sim/episode announcements at the given times."""

    def edit(events, ch):
        events.extend((t, ch["sim"], m) for t, m in msgs)
        events.sort(key=lambda e: e[0])

    return edit


def _second_publisher(events, ch):
    """Another graph's joint states (stamps 50 s behind) interleaved with ours."""
    for i in range(5):
        t = T0 + 1.0 + 0.1 * i
        msg = JointState(name=list(PANDA.joint_names), position=list(HOME))
        _stamp(msg, t - 50.0)
        events.append((t + 0.0001, ch["js"], msg))
    events.sort(key=lambda e: e[0])


def _drop_commands(events, ch):
    events[:] = [e for e in events if e[1] != ch["traj"]]


def _clock_jumps_back(events, ch):
    """A message written after the rest but logged at the start (the recorder's clock went back)."""
    events.append((T0 + 0.2, ch["task"], String(data="late")))


BAD_EPISODES = {
    "incomplete": (dict(complete=False, meta={"end_reason": "shutdown"}), "incomplete episode (ended by shutdown"),
    "two_sim_episodes": (
        dict(
            edit=_announce(
                (T0 + 0.01, _sim(3, 3, "running", T0)),
                (T0 + 1.0, _sim(9, 40, "running", 700.0)),  # another sim, its own clock
                (T0 + 2.9, _sim(3, 3, "done", T0 + 2.9, True)),
            )
        ),
        "holds 2 sim episodes",
    ),
    "two_joint_state_publishers": (dict(edit=_second_publisher), "header stamps go back"),
    "log_time_back": (dict(edit=_clock_jumps_back), "log time goes back"),
    "no_commands": (dict(edit=_drop_commands), f"no commands on {PANDA.trajectory_topic}"),
    "success_unknown": (dict(success=None, edit=_announce((T0 + 0.01, _sim(3, 3, "running", T0)))), "success not"),
    "other_robot": (dict(meta={"profile": "ur5e"}), "recorded with robot profile 'ur5e'"),
}


def _write_bad(path, kind: str) -> tuple[Path, str]:
    """Write a bad episode of `kind` at `path`; returns (the file as named, the skip reason)."""
    if kind == "truncated":
        write_synthetic_episode(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, "truncated MCAP file"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
        return path, "not an MCAP file"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty file"
    if kind == "old_recorder_shutdown":  # before `complete` existed, end_reason said it
        write_synthetic_episode(path, meta={"end_reason": "shutdown"})
        _drop_metadata_key(path, "complete")
        return path, "incomplete episode (ended by shutdown"
    kwargs, reason = BAD_EPISODES[kind]
    write_synthetic_episode(path, **kwargs)
    return (path if kwargs.get("complete", True) else incomplete_name(path)), reason


def _drop_metadata_key(path, key: str) -> None:
    """Rewrite an episode file without one metadata key (a file from an older recorder)."""
    from mcap.reader import make_reader
    from mcap.writer import Writer

    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        messages = [
            (m.channel_id, m.log_time, m.publish_time, m.sequence, m.data) for _, _, m in reader.iter_messages()
        ]
        records = [(r.name, {k: v for k, v in r.metadata.items() if k != key}) for r in reader.iter_metadata()]
    with open(path, "wb") as f:
        w = Writer(f)
        w.start(profile="ros2", library="older dexstack recorder")
        for schema in summary.schemas.values():
            w.register_schema(schema.name, schema.encoding, schema.data)
        for ch in summary.channels.values():
            w.register_channel(ch.topic, ch.message_encoding, ch.schema_id, ch.metadata)
        for channel, log, pub, seq, data in messages:
            w.add_message(channel, log, data, pub, seq)
        for name, meta in records:
            w.add_metadata(name, meta)
        w.finish()


@pytest.mark.parametrize("kind", [*BAD_EPISODES, "old_recorder_shutdown", "truncated", "random", "empty"])
def test_build_skips_an_invalid_episode_naming_file_and_reason(tmp_path, kind):
    rec = tmp_path / "rec"
    rec.mkdir()
    write_synthetic_episode(rec / "a_good.mcap")
    bad, reason = _write_bad(rec / f"b_{kind}.mcap", kind)
    skipped: list[str] = []
    ds = build_from_mcap(rec, tmp_path / "ds", PANDA, cameras=["wrist"], on_skip=skipped.append)
    assert len(ds) == 1 and ds.meta["episodes"][0]["source"].endswith("a_good.mcap")
    assert len(skipped) == 1 and "\n" not in skipped[0], skipped
    assert skipped[0].startswith(f"{bad}: ") and reason in skipped[0], skipped[0]
    # Alone, the same file is an error naming it, and no dataset (or temp dir) is left behind.
    with pytest.raises(DatasetError, match=f"{re.escape(bad.name)}: .*{re.escape(reason)}.*no dataset written"):
        build_from_mcap(bad, tmp_path / "ds2", PANDA, cameras=["wrist"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "rec"]


def test_announcements_of_earlier_episodes_are_prior_state_and_their_data_is_dropped(tmp_path):
    """What record-demos files hold: the previous episode's latched "done" copied in first, the
    recorder's queue backlog of that episode's joint states, then the new episode announced and
    run. The backlog (stamped before the new episode's start) is not part of the episode."""
    start = T0 + 1.0

    def edit(events, ch):
        events.insert(0, (T0, ch["sim"], _sim(6, 6, "done", T0 - 0.1, True)))
        events.append((T0 + 0.01, ch["sim"], _sim(0, 7, "running", T0 - 5.0)))  # a paused sim's, delivered late
        events.append((start, ch["sim"], _sim(7, 17, "running", start)))
        events.append((T0 + 2.9, ch["sim"], _sim(7, 17, "done", T0 + 2.9, True)))
        events.sort(key=lambda e: e[0])

    write_synthetic_episode(tmp_path / "ep.mcap", success=None, edit=edit)
    ds = build_from_mcap(tmp_path / "ep.mcap", tmp_path / "ds", PANDA, cameras=["wrist"])
    entry, ep = ds.meta["episodes"][0], ds.episode(0)
    assert entry["success"] is True  # from the sim's "done" announcement
    # Frames start once every topic has a message stamped at or after the episode's start: the
    # wrist frame of T0+1.05; its joint state is the one of T0+1.045, not a backlog one.
    t_first, t_last = T0 + 0.05 + 15 / 15, T0 + 0.05 + 44 / 15
    assert len(ep["timestamp"]) == int(np.floor((t_last - t_first) / 0.1 + 1e-9))
    np.testing.assert_allclose(ep["joint_positions"][0], _joint_positions_at(T0 + 1.045), atol=1e-6)

    def spanning(events, ch):  # a recording left running across the end of an episode
        events.append((T0 + 0.01, ch["sim"], _sim(6, 6, "running", T0)))
        events.append((T0 + 0.9, ch["sim"], _sim(6, 6, "done", T0 + 0.9, True)))
        events.append((start, ch["sim"], _sim(7, 17, "running", start)))
        events.sort(key=lambda e: e[0])

    write_synthetic_episode(tmp_path / "span.mcap", edit=spanning)
    with pytest.raises(DatasetError, match="holds 2 sim episodes \\(episode 6 seed 6, episode 7 seed 17\\)"):
        build_from_mcap(tmp_path / "span.mcap", tmp_path / "ds2", PANDA, cameras=["wrist"])


def test_never_finalised_part_file_is_reported(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    write_synthetic_episode(rec / "a.mcap")
    w = EpisodeWriter(rec / "b.mcap")  # left open, as by a recorder killed with SIGKILL
    w.add_channel(contract.JOINT_STATES, "sensor_msgs/msg/JointState")
    skipped: list[str] = []
    assert len(build_from_mcap(rec, tmp_path / "ds", PANDA, cameras=[], on_skip=skipped.append)) == 1
    assert skipped == [f"{rec / 'b.mcap.part'}: never finalised (the recorder was killed mid-episode)"]
    w.discard()


def test_interrupted_or_failed_build_leaves_no_partial_dataset_and_keeps_the_old_one(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    for name in ("a", "b", "c"):
        write_synthetic_episode(rec / f"{name}.mcap")

    def interrupt(done, _total, _path):
        if done == 2:
            raise KeyboardInterrupt  # Ctrl-C after two episodes were written

    with pytest.raises(KeyboardInterrupt):
        build_from_mcap(rec, tmp_path / "ds", PANDA, cameras=[], on_episode=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]

    old = build_from_mcap(rec / "a.mcap", tmp_path / "ds", PANDA, cameras=[])
    old_hash = old.content_hash()
    with pytest.raises(KeyboardInterrupt):
        build_from_mcap(rec, tmp_path / "ds", PANDA, cameras=[], overwrite=True, on_episode=interrupt)
    assert Dataset(tmp_path / "ds").content_hash() == old_hash and len(Dataset(tmp_path / "ds")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "rec"]
    with pytest.raises(DatasetError, match="already holds a dataset"):
        build_from_mcap(rec, tmp_path / "ds", PANDA, cameras=[])
    assert len(build_from_mcap(rec, tmp_path / "ds", PANDA, cameras=[], overwrite=True)) == 3
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty and is not a dataset"):
        build_from_mcap(rec, tmp_path / "notes", PANDA, cameras=[], overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_cli_reports_skips_and_bad_files_in_one_line_without_traceback(tmp_path):
    from typer.testing import CliRunner

    from dexstack.cli.data import app

    rec = tmp_path / "rec"
    rec.mkdir()
    write_synthetic_episode(rec / "a.mcap")
    _write_bad(rec / "b.mcap", "truncated")
    _write_bad(rec / "c.mcap", "incomplete")
    runner = CliRunner()
    result = runner.invoke(app, ["build", str(rec), "--out", str(tmp_path / "ds"), "--cameras", "wrist"])
    out = result.output
    assert result.exit_code == 0 and "Traceback" not in out, out
    assert "wrote 1 episodes" in _flat(out) and "skipped 2 of 3 files" in _flat(out), out
    lines = [ln for ln in out.splitlines() if ln.startswith("skipped /")]
    assert len(lines) == 2 and "b.mcap: truncated MCAP file" in lines[0], out
    assert "c.incomplete.mcap: incomplete episode" in lines[1], out

    for kind in ("truncated", "random"):
        bad = tmp_path / f"{kind}.mcap"
        _write_bad(bad, kind)
        for args in (["build", str(bad), "--out", str(tmp_path / "x")], ["info", str(bad)]):
            result = runner.invoke(app, args)
            assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
            assert len(errors) == 1 and str(bad) in errors[0], result.output
    assert not (tmp_path / "x").exists()
    info = runner.invoke(app, ["info", str(rec / "a.mcap"), str(rec / "c.incomplete.mcap")])
    assert info.exit_code == 0 and "a.mcap" in info.output and "shutdown" in info.output, info.output


# --- any bytes in a .mcap: a one-line error naming the file, never a traceback ------------
@pytest.fixture(scope="module")
def good_episode(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "ep.mcap"
    write_synthetic_episode(path)
    return path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_files_give_one_line_errors_naming_the_file(tmp_path, good_episode, data):
    """Truncations and flipped bytes anywhere in a real episode file: `dataset build` and
    `episode_metadata` either work or raise DatasetError in one line that names the file."""
    from dexstack.mcap_io import episode_metadata

    raw = bytearray(good_episode.read_bytes())
    cut = data.draw(st.one_of(st.just(len(raw)), st.integers(0, len(raw))), label="keep bytes")
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), max_size=8))
    for at, mask in flips:
        raw[at] ^= mask
    here = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example
    path = here / "damaged.mcap"
    path.write_bytes(bytes(raw[:cut]))
    out = here / "ds"
    for read in (lambda: episode_metadata(path), lambda: build_from_mcap(path, out, PANDA, cameras=["wrist"])):
        try:
            read()
        except DatasetError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc), str(exc)
    assert not any(p.name.startswith(".ds.") for p in here.iterdir())  # no temp dirs left
