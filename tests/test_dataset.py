"""Dataset format and the MCAP -> dataset converter, on real files.

The converter test writes a synthetic episode with real CDR bytes (rclpy serialisation) and
the same MCAP writer the recorder uses, then checks frames and actions against values worked
out by hand from JointTrajectoryController semantics.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack import contract
from dexstack.dataset import Dataset, DatasetError, DatasetWriter
from dexstack.hardware.profiles import PANDA
from dexstack.mcap_io import EpisodeWriter, build_from_mcap, message_definition

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


def write_synthetic_episode(path, success: bool = True) -> None:
    """3 s episode: joint states at 100 Hz (from T0+5 ms), wrist/scene rgb + depth at 15 Hz,
    and three commands: a 1-point chunk at T0+0.5 (1 s to Q1), an empty trajectory at T0+1.0
    (which a JointTrajectoryController refuses), and a latency-compensated chunk arriving T0+2.0
    stamped T0+1.8 whose first point (HOME, due T0+1.9) is already past and whose second point Q3
    is due at T0+2.5."""
    w = EpisodeWriter(path)
    js = w.add_channel(contract.JOINT_STATES, "sensor_msgs/msg/JointState")
    traj = w.add_channel(PANDA.trajectory_topic, "trajectory_msgs/msg/JointTrajectory")
    task = w.add_channel(contract.TASK_INSTRUCTION, "std_msgs/msg/String")
    rgb = {c: w.add_channel(contract.camera_color_topic(c), "sensor_msgs/msg/Image") for c in ("wrist", "scene")}
    depth = {c: w.add_channel(contract.camera_depth_topic(c), "sensor_msgs/msg/Image") for c in ("wrist", "scene")}
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
    for t, channel, msg in sorted(events, key=lambda e: e[0]):
        ns = int(round(t * NS))
        w.write(channel, serialize_message(msg), ns, ns)
    w.close({"task": "lift the red can", "success": str(success).lower(), "profile": "panda"})


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
    for i in range(20):
        msg = JointState(name=list(PANDA.joint_names), position=list(HOME))
        w.write(ch, serialize_message(msg), i * 10_000_000, 0)
    w.close()
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
