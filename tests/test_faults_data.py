"""Faults on the data path: the recorder on a real full disk (ENOSPC), over DDS.

The recorder runs as a real process inside its own user + mount namespace with a 512 KiB tmpfs
mounted on its output directory, so every ENOSPC comes from the kernel through the node's own
write path (no monkeypatching). The test reads that tmpfs through /proc/<pid>/root. Where user
namespaces are not allowed (some CI kernels), the test is skipped; `test_writer_on_dev_full`
covers the same writer code path everywhere with /dev/full (every write fails with ENOSPC).
"""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from mcap.reader import make_reader
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dexstack import contract
from dexstack.graph import NodeSpec
from dexstack.hardware.profiles import PANDA
from dexstack.launcher import node_environment, stop_nodes
from dexstack.mcap_io import EpisodeWriteError, EpisodeWriter

pytestmark = [pytest.mark.ros, pytest.mark.fault]

TMPFS_SIZE = "512k"
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def _userns_tmpfs_works(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _call(client, name: str) -> Trigger.Response:
    return client.call(Trigger, f"/recorder/{name}", Trigger.Request(), timeout_s=30.0)


def _image(i: int) -> Image:
    """96x96 random rgb8: incompressible, so 27 KiB of the disk per frame."""
    msg = Image(height=96, width=96, encoding="rgb8", step=96 * 3)
    msg.header.stamp.sec = 100 + i
    msg.data = np.random.default_rng(i).integers(0, 256, 96 * 96 * 3, dtype=np.uint8).tobytes()
    return msg


def test_recorder_on_a_full_disk_reports_error_stays_alive_and_leaves_no_partial_file(ros_client, tmp_path):
    if not _userns_tmpfs_works(tmp_path):
        pytest.skip("user namespaces with a tmpfs mount are not allowed here (see test_writer_on_dev_full)")
    out = tmp_path / "recordings"
    out.mkdir()
    node = NodeSpec("recorder", "recorder", {"output_dir": str(out), "task": "pick_lift"}).command()
    script = f"mount -t tmpfs -o size={TMPFS_SIZE} tmpfs {shlex.quote(str(out))} && exec {shlex.join(node)}"
    log = open(tmp_path / "recorder.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env=node_environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    disk = Path(f"/proc/{proc.pid}/root") / out.relative_to("/")  # the recorder's view of its tmpfs
    diagnostics: list = []
    ros_client.node.create_subscription(
        DiagnosticArray,
        contract.DIAGNOSTICS,
        lambda m: diagnostics.extend(s for s in m.status if s.name.endswith("recorder")),
        10,
    )
    images = ros_client.node.create_publisher(Image, contract.camera_color_topic("wrist"), RELIABLE)
    joints = ros_client.node.create_publisher(JointState, contract.JOINT_STATES, RELIABLE)

    def joint_states(n: int) -> None:
        for i in range(n):
            joints.publish(JointState(name=list(PANDA.joint_names), position=[0.1 * i] * PANDA.n_joints))
        assert joints.wait_for_all_acked(Duration(seconds=30))

    def last_status(prefix: str):
        seen = [s for s in diagnostics if s.message.startswith(prefix)]
        return seen[-1] if seen else None

    try:
        assert ros_client.spin_until(
            lambda: images.get_subscription_count() >= 1 and joints.get_subscription_count() >= 1, 30.0
        )
        # 1. The disk fills mid-episode (a 1 MiB chunk cannot be written to a 512 KiB disk).
        started = _call(ros_client, "start_episode")
        assert started.success, started.message
        for i in range(60):
            images.publish(_image(i))
            ros_client.spin_for(0.005)
        assert images.wait_for_all_acked(Duration(seconds=60))
        assert ros_client.spin_until(
            lambda: (s := last_status("recording")) is not None and "No space left on device" in s.message, 30.0
        ), [s.message for s in diagnostics[-3:]]
        assert last_status("recording").level == DiagnosticStatus.ERROR  # ERROR
        assert os.listdir(disk) == []  # the partial file is gone and its space freed
        stopped = _call(ros_client, "stop_episode")
        assert not stopped.success and "No space left on device" in stopped.message, stopped.message
        assert proc.poll() is None
        assert ros_client.spin_until(
            lambda: (
                (s := last_status("idle")) is not None and s.level == DiagnosticStatus.ERROR and "No space" in s.message
            ),
            30.0,
        )

        # 2. The disk is already full when the episode is closed (what killed the node before).
        with open(disk / "filler", "wb") as f:
            with pytest.raises(OSError) as full:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        assert full.value.errno == errno.ENOSPC
        started = _call(ros_client, "start_episode")
        assert started.success, started.message
        joint_states(5)
        stopped = _call(ros_client, "stop_episode")
        assert not stopped.success and "episode not saved" in stopped.message, stopped.message
        assert os.listdir(disk) == ["filler"] and proc.poll() is None
        # Cancelling on a full disk cannot flush either; it must still succeed.
        assert _call(ros_client, "start_episode").success
        joint_states(5)
        cancelled = _call(ros_client, "cancel_episode")
        assert cancelled.success, cancelled.message
        assert os.listdir(disk) == ["filler"] and proc.poll() is None

        # 3. Space comes back: the next episode is saved, complete and readable.
        (disk / "filler").unlink()
        assert _call(ros_client, "start_episode").success
        joint_states(5)
        stopped = _call(ros_client, "stop_episode")
        assert stopped.success, stopped.message
        saved = disk / Path(stopped.message).name
        with open(saved, "rb") as f:
            reader = make_reader(f)
            meta = {m.name: dict(m.metadata) for m in reader.iter_metadata()}["dexstack.episode"]
            assert reader.get_summary().statistics.message_count == 5
        assert meta["complete"] == "true" and meta["end_reason"] == "stop"
        assert ros_client.spin_until(
            lambda: (s := last_status("idle")) is not None and s.level == DiagnosticStatus.OK, 30.0
        )
        assert proc.poll() is None
    finally:
        codes = stop_nodes([proc])
        log.close()
        text = (tmp_path / "recorder.log").read_text(errors="replace")
        print(text[-3000:])
    assert codes == [0] and "Traceback" not in text
    assert "No space left on device" in text  # the ERROR went to the log too


def test_writer_on_dev_full(tmp_path):
    """The same writer code path with a descriptor onto /dev/full, where every write(2) fails with
    ENOSPC: no method raises OSError, the partial file is removed, close says why."""
    w = EpisodeWriter(tmp_path / "ep.mcap")
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, w._file.fileno())  # the file object now writes to /dev/full
    os.close(full)
    channel = w.add_channel(contract.TASK_INSTRUCTION, "std_msgs/msg/String")
    for i in range(2000):  # enough to overflow the buffers
        w.write(channel, serialize_message(String(data="x" * i)), i, i)
    assert w.error is not None and "No space left on device" in w.error
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(EpisodeWriteError, match="episode not saved: .*ep.mcap.part: No space left on device"):
        w.close({"task": "t"})
    w.discard()  # harmless after a failure
    assert list(tmp_path.iterdir()) == []

    # Full at close time only: the buffered tail cannot be written; nothing is left behind.
    w = EpisodeWriter(tmp_path / "ep2.mcap")
    channel = w.add_channel(contract.TASK_INSTRUCTION, "std_msgs/msg/String")
    w.write(channel, serialize_message(String(data="short")), 1, 1)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, w._file.fileno())
    os.close(full)
    with pytest.raises(EpisodeWriteError, match="No space left on device"):
        w.close({"task": "t"})
    assert list(tmp_path.iterdir()) == []
    # discard on a full disk (nothing can be flushed) does not raise either
    w = EpisodeWriter(tmp_path / "ep3.mcap")
    w.write(w.add_channel(contract.TASK_INSTRUCTION, "std_msgs/msg/String"), serialize_message(String(data="x")), 1, 1)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, w._file.fileno())
    os.close(full)
    w.discard()
    assert list(tmp_path.iterdir()) == []
