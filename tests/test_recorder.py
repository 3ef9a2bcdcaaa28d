"""Recorder node as a real process over DDS: every message of an episode lands in the MCAP
file unchanged, readable by the standard mcap_ros2 reader; start/stop/cancel behave."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack import contract
from dexstack.graph import NodeSpec
from dexstack.hardware.profiles import PANDA

pytestmark = pytest.mark.ros

N = 25
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _call(client, name: str) -> Trigger.Response:
    cli = client.node.create_client(Trigger, f"/recorder/{name}")
    assert client.spin_until(cli.service_is_ready, 20.0), f"/recorder/{name} never appeared"
    future = cli.call_async(Trigger.Request())
    assert client.spin_until(future.done, 10.0), f"/recorder/{name} did not answer"
    return future.result()


def _start_recorder(launch_nodes, out_dir, **params):
    (proc,) = launch_nodes(
        [NodeSpec("recorder", "recorder", {"output_dir": str(out_dir), "task": "pick_lift", **params})]
    )
    return proc


def _joint_state(i: int) -> JointState:
    msg = JointState(
        name=list(PANDA.joint_names),
        position=[0.01 * i + j for j in range(PANDA.n_joints)],
        velocity=[float(i)] * PANDA.n_joints,
    )
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + i, 7
    return msg


def _trajectory(i: int) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(PANDA.joint_names))
    msg.header.stamp.sec = 2000 + i
    for k in range(3):
        pt = JointTrajectoryPoint(positions=[i + 0.1 * k] * PANDA.n_joints)
        pt.time_from_start.nanosec = 100_000_000 * (k + 1)
        msg.points.append(pt)
    return msg


def _image(i: int) -> Image:
    msg = Image(height=96, width=96, encoding="rgb8", step=96 * 3)
    msg.header.stamp.sec, msg.header.frame_id = 3000 + i, "wrist_camera"
    msg.data = np.random.default_rng(i).integers(0, 255, 96 * 96 * 3, dtype=np.uint8).tobytes()
    return msg


def _camera_info(i: int) -> CameraInfo:
    msg = CameraInfo(width=96, height=96, distortion_model="plumb_bob")
    msg.header.stamp.sec = 4000 + i
    msg.k = [50.0 + i, 0.0, 48.0, 0.0, 50.0, 48.0, 0.0, 0.0, 1.0]
    return msg


def test_round_trip_keeps_every_message(ros_client, launch_nodes, tmp_path):
    out_dir = tmp_path / "recordings"
    _start_recorder(launch_nodes, out_dir)
    node = ros_client.node
    topics = {
        contract.JOINT_STATES: (JointState, _joint_state, N),
        PANDA.trajectory_topic: (JointTrajectory, _trajectory, N),
        contract.camera_color_topic("wrist"): (Image, _image, 6),
        contract.camera_info_topic("wrist"): (CameraInfo, _camera_info, 6),
    }
    pubs = {t: node.create_publisher(cls, t, RELIABLE) for t, (cls, _, _) in topics.items()}
    task_pub = node.create_publisher(String, contract.TASK_INSTRUCTION, LATCHED)
    task_pub.publish(String(data="lift the red can"))  # latched, published before the episode
    # The recorder subscribes once it discovers each publisher; wait for every match.
    all_pubs = [*pubs.values(), task_pub]
    assert ros_client.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in all_pubs), 30.0), {
        t: p.get_subscription_count() for t, p in pubs.items()
    }

    started = _call(ros_client, "start_episode")
    assert started.success, started.message
    sent: dict[str, list] = {t: [] for t in topics}
    for i in range(N):
        for topic, (_, make, count) in topics.items():
            if i < count:
                msg = make(i)
                pubs[topic].publish(msg)
                sent[topic].append(msg)
        ros_client.spin_for(0.01)
    for p in pubs.values():
        assert p.wait_for_all_acked(Duration(seconds=10))  # reliable: the recorder has them all
    stopped = _call(ros_client, "stop_episode")
    assert stopped.success, stopped.message
    path = stopped.message
    assert path.startswith(str(out_dir / "pick_lift_")) and path.endswith("_0.mcap")
    assert [p.name for p in out_dir.iterdir()] == [path.rsplit("/", 1)[1]]  # no leftover partial file

    received: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        schemas = {ch.topic: summary.schemas[ch.schema_id] for ch in summary.channels.values()}
        for _schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            received.setdefault(channel.topic, []).append((message, decoded))
            assert channel.message_encoding == "cdr"
        metadata = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        assert reader.get_header().profile == "ros2"
    assert schemas[contract.JOINT_STATES].name == "sensor_msgs/msg/JointState"
    assert schemas[PANDA.trajectory_topic].name == "trajectory_msgs/msg/JointTrajectory"
    assert schemas[contract.camera_color_topic("wrist")].name == "sensor_msgs/msg/Image"
    assert schemas[contract.camera_info_topic("wrist")].name == "sensor_msgs/msg/CameraInfo"
    assert all(s.encoding == "ros2msg" for s in schemas.values())
    assert b"MSG: std_msgs/Header" in schemas[contract.JOINT_STATES].data
    qos = {ch.topic: ch.metadata["offered_qos_profiles"] for ch in summary.channels.values()}
    assert "reliability: reliable" in qos[contract.JOINT_STATES]  # (DDS discovery does not carry depth)
    assert "durability: transient_local" in qos[contract.TASK_INSTRUCTION]

    for topic, msgs in sent.items():
        got = received.get(topic, [])
        assert len(got) == len(msgs), f"{topic}: sent {len(msgs)}, recorded {len(got)}"
        for original, (record, decoded) in zip(msgs, got, strict=True):
            stamp_ns = original.header.stamp.sec * 1_000_000_000 + original.header.stamp.nanosec
            assert record.publish_time == stamp_ns  # publish_time = header stamp
            assert decoded.header.stamp.sec == original.header.stamp.sec
        first, last = got[0][1], got[-1][1]
        if topic == contract.JOINT_STATES:
            assert list(last.name) == list(PANDA.joint_names)
            assert list(last.position) == list(msgs[-1].position) and list(first.velocity) == [0.0] * PANDA.n_joints
        elif topic == PANDA.trajectory_topic:
            assert [list(p.positions) for p in last.points] == [list(p.positions) for p in msgs[-1].points]
            assert last.points[2].time_from_start.nanosec == 300_000_000
        elif topic.endswith("image_raw"):
            assert bytes(last.data) == bytes(msgs[-1].data) and last.encoding == "rgb8"
            assert last.header.frame_id == "wrist_camera"
        else:
            assert list(last.k) == list(msgs[-1].k)

    # The latched task text was carried into the episode and into its metadata.
    assert [d.data for _, d in received[contract.TASK_INSTRUCTION]] == ["lift the red can"]
    episode = metadata["dexstack.episode"]
    assert episode["task"] == "lift the red can" and episode["profile"] == "panda"
    assert int(episode["stop_time_ns"]) >= int(episode["start_time_ns"]) > 0
    assert episode["message_count"] == str(2 * N + 12 + 1)


def test_start_twice_fails_and_cancel_deletes(ros_client, launch_nodes, tmp_path):
    out_dir = tmp_path / "recordings"
    _start_recorder(launch_nodes, out_dir, task="stack cubes")
    episode_pub = ros_client.node.create_publisher(String, contract.SIM_EPISODE, LATCHED)
    episode_pub.publish(
        String(
            data=json.dumps(
                {"seed": 42, "task": "pick_lift", "status": "done", "success": True, "instruction": "stack the cubes"}
            )
        )
    )
    diagnostics: list[DiagnosticArray] = []
    ros_client.node.create_subscription(DiagnosticArray, contract.DIAGNOSTICS, diagnostics.append, 10)

    idle_stop = _call(ros_client, "stop_episode")
    assert not idle_stop.success and "not recording" in idle_stop.message
    first = _call(ros_client, "start_episode")
    assert first.success, first.message
    second = _call(ros_client, "start_episode")
    assert not second.success and "already recording" in second.message
    files = list(out_dir.iterdir())
    assert len(files) == 1 and files[0].name.endswith(".mcap.part")  # not complete yet, and says so
    assert files[0].name.startswith("stack_cubes_")

    def recording_reported() -> bool:
        return any(
            s.message.startswith("recording stack_cubes_") and s.name.endswith("recorder")
            for a in diagnostics
            for s in a.status
        )

    assert ros_client.spin_until(recording_reported, 15.0), [s.message for a in diagnostics for s in a.status]
    cancelled = _call(ros_client, "cancel_episode")
    assert cancelled.success, cancelled.message
    assert list(out_dir.iterdir()) == []

    # A new episode after a cancel works and carries the sim's episode facts.
    assert ros_client.spin_until(lambda: episode_pub.get_subscription_count() >= 1, 20.0)
    assert _call(ros_client, "start_episode").success
    stopped = _call(ros_client, "stop_episode")
    assert stopped.success
    with open(stopped.message, "rb") as f:
        meta = {m.name: dict(m.metadata) for m in make_reader(f).iter_metadata()}["dexstack.episode"]
    assert meta["seed"] == "42" and meta["success"] == "true" and meta["task"] == "stack the cubes"


def test_episodes_that_do_not_end_normally_are_marked_incomplete(ros_client, launch_nodes, tmp_path):
    """Stopped while the sim episode still runs, or shut down mid-episode: saved as
    `.incomplete.mcap` with `complete: false`, and `dataset build` skips them saying why. An
    operator's ~/end_episode (SetBool) ends a robot episode with its success label."""
    from std_srvs.srv import SetBool

    from dexstack.launcher import stop_nodes
    from dexstack.mcap_io import build_from_mcap, episode_metadata

    out_dir = tmp_path / "recordings"
    proc = _start_recorder(launch_nodes, out_dir)
    node = ros_client.node
    joints = node.create_publisher(JointState, contract.JOINT_STATES, RELIABLE)
    commands = node.create_publisher(JointTrajectory, PANDA.trajectory_topic, RELIABLE)
    sim = node.create_publisher(String, contract.SIM_EPISODE, LATCHED)
    assert ros_client.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in (joints, commands)), 30.0), (
        "recorder never subscribed"
    )

    def record_some() -> None:
        for i in range(N):
            joints.publish(_joint_state(i))
            if i % 5 == 0:
                commands.publish(_trajectory(i))
            ros_client.spin_for(0.02)  # half a second: a few frames at 10 Hz
        assert joints.wait_for_all_acked(Duration(seconds=10)) and commands.wait_for_all_acked(Duration(seconds=10))

    # A robot episode labelled by the operator: complete, success recorded.
    assert _call(ros_client, "start_episode").success
    record_some()
    ended = ros_client.call(SetBool, "/recorder/end_episode", SetBool.Request(data=False))
    assert ended.success and ended.message.endswith("_0.mcap"), ended.message
    meta = episode_metadata(ended.message)
    assert meta["complete"] == "true" and meta["success"] == "false" and meta["end_reason"] == "stop"

    # The sim says its episode is still running: stopping now cuts it short.
    sim.publish(String(data=json.dumps({"episode": 4, "seed": 4, "status": "running", "success": False})))
    assert ros_client.spin_until(lambda: sim.get_subscription_count() >= 1, 20.0)
    assert sim.wait_for_all_acked(Duration(seconds=10))
    assert _call(ros_client, "start_episode").success
    record_some()
    cut = _call(ros_client, "stop_episode")
    assert cut.success and cut.message.endswith("_1.incomplete.mcap"), cut.message
    meta = episode_metadata(cut.message)
    assert meta["complete"] == "false" and meta["end_reason"] == "stop before the sim episode ended"

    # Shut down mid-episode (Ctrl-C): kept, but as incomplete.
    assert _call(ros_client, "start_episode").success
    record_some()
    assert stop_nodes([proc]) == [0]
    (left,) = [p for p in out_dir.iterdir() if p.name.endswith("_2.incomplete.mcap")]
    assert episode_metadata(left)["end_reason"] == "shutdown"
    assert sorted(p.name.split("_", 3)[-1] for p in out_dir.iterdir()) == [
        "0.mcap",
        "1.incomplete.mcap",
        "2.incomplete.mcap",
    ]

    skipped: list[str] = []
    ds = build_from_mcap(out_dir, tmp_path / "ds", PANDA, cameras=[], on_skip=skipped.append)
    assert len(ds) == 1 and ds.meta["episodes"][0]["success"] is False
    assert len(skipped) == 2 and all("incomplete episode" in line for line in skipped), skipped
