"""The G-PAYN hand in the ROS graph, over real DDS: the hand sim node (Adroit profile, tactile pads,
camera + object mask) and the grasp planner node, seen and driven by a plain rclpy client."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack import contract
from dexstack.graph import NodeSpec
from dexstack.hardware.profiles import ADROIT, PANDA

CAMERA = ADROIT.cameras[0]


def trajectory(names, points, times) -> JointTrajectory:
    """Zero stamp: "start now"."""
    msg = JointTrajectory(joint_names=list(names))
    for q, t in zip(points, times, strict=True):
        pt = JointTrajectoryPoint(positions=[float(x) for x in q])
        pt.time_from_start.sec, pt.time_from_start.nanosec = int(t), int(round((t % 1) * 1e9))
        msg.points.append(pt)
    return msg


class Latest:
    """The newest message per topic (and how many came)."""

    def __init__(self, client) -> None:
        self.client, self.msgs, self.counts = client, {}, {}

    def watch(self, msg_type, topic: str, qos) -> None:
        def on(msg):
            self.msgs[topic] = msg
            self.counts[topic] = self.counts.get(topic, 0) + 1

        self.client.node.create_subscription(msg_type, topic, on, qos)


def diagnostics_of(client, node_suffix: str) -> list:
    statuses = []
    client.node.create_subscription(
        DiagnosticArray,
        contract.DIAGNOSTICS,
        lambda m: statuses.extend(s for s in m.status if s.name.endswith(node_suffix)),
        QoSProfile(depth=20),
    )
    return statuses


def values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def positions(msg: JointState) -> np.ndarray:
    index = {n: i for i, n in enumerate(msg.name)}
    return np.array([msg.position[index[n]] for n in ADROIT.joint_names])


@pytest.mark.ros
def test_hand_sim_and_planner_through_ros(launch_nodes, ros_client):
    from dexstack.ros_nodes.common import QOS
    from dexstack.sim.hand_core import HandSim, close_hand_targets

    launch_nodes(
        [
            NodeSpec("sim_node", "sim", {"task": "grasp", "max_episode_s": 120.0, "seed": 3}),
            NodeSpec("grasp_planner_node", "grasp_planner", {}),
        ]
    )
    latest = Latest(ros_client)
    sensor, latched = qos_profile_sensor_data, QOS[contract.QoSKind.LATCHED]
    latest.watch(JointState, contract.JOINT_STATES, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    latest.watch(Image, contract.camera_color_topic(CAMERA.name), sensor)
    latest.watch(Image, contract.camera_depth_topic(CAMERA.name), sensor)
    latest.watch(CameraInfo, contract.camera_info_topic(CAMERA.name), sensor)
    latest.watch(Image, contract.camera_mask_topic(CAMERA.name), sensor)
    latest.watch(PoseStamped, contract.SIM_OBJECT_POSE, QoSProfile(depth=5))
    latest.watch(PoseStamped, contract.GRASP_TARGET_POSE, latched)
    tactile_topics = [contract.tactile_topic(pad) for pad in ADROIT.tactile_pads]
    free_air = {t: [] for t in tactile_topics}
    for topic in tactile_topics:
        latest.watch(WrenchStamped, topic, sensor)
        ros_client.node.create_subscription(WrenchStamped, topic, lambda m, t=topic: free_air[t].append(m), sensor)
    sim_status, planner_status = diagnostics_of(ros_client, "/sim"), diagnostics_of(ros_client, "/grasp_planner")

    assert ros_client.spin_until(
        lambda: len(latest.msgs) == 7 + len(tactile_topics) and min(len(v) for v in free_air.values()) >= 5, 40
    ), set(tactile_topics + [contract.GRASP_TARGET_POSE, contract.JOINT_STATES]) - set(latest.msgs)

    # Robot state and cameras as the ADROIT profile describes them.
    assert list(latest.msgs[contract.JOINT_STATES].name) == list(ADROIT.joint_names)
    color = latest.msgs[contract.camera_color_topic(CAMERA.name)]
    depth = latest.msgs[contract.camera_depth_topic(CAMERA.name)]
    info = latest.msgs[contract.camera_info_topic(CAMERA.name)]
    mask = latest.msgs[contract.camera_mask_topic(CAMERA.name)]
    for image, encoding in ((color, "rgb8"), (depth, "16UC1"), (mask, "mono8")):
        assert (image.width, image.height, image.encoding) == (CAMERA.width, CAMERA.height, encoding)
    assert (info.width, info.height) == (CAMERA.width, CAMERA.height) and info.k[0] > 0
    object_pixels = int((np.frombuffer(bytes(mask.data), np.uint8) == 255).sum())
    assert 100 < object_pixels < CAMERA.width * CAMERA.height // 4, object_pixels

    # Five pads, each in its distal link's frame, all reading zero: the open hand at the
    # pre-grasp is in free air.
    for topic, frame in zip(tactile_topics, ADROIT.tactile_frames, strict=True):
        assert {m.header.frame_id for m in free_air[topic]} == {frame}
        assert max(m.wrench.force.z for m in free_air[topic]) == 0.0, topic

    # The planner's grasp (top grasp of the box) lies on a line through the true centre.
    local = HandSim(render=False)  # same kinematics: ground truth and IK for the scripted grasp
    truth = latest.msgs[contract.SIM_OBJECT_POSE].pose
    q = truth.orientation
    yaw = Rotation.from_quat([q.w, q.x, q.y, q.z], scalar_first=True).as_euler("xyz")[2]
    local.place_object([truth.position.x, truth.position.y, truth.position.z], yaw=yaw)
    centre = local.object_center()
    grasp = latest.msgs[contract.GRASP_TARGET_POSE]
    assert grasp.header.frame_id == "world"
    g_pos = np.array([grasp.pose.position.x, grasp.pose.position.y, grasp.pose.position.z])
    o = grasp.pose.orientation
    g_quat = np.array([o.w, o.x, o.y, o.z])
    approach = Rotation.from_quat(g_quat, scalar_first=True).as_matrix()[:, 2]
    assert approach[2] < -0.95  # from above
    to_centre = centre - g_pos
    off_axis = np.linalg.norm(to_centre - (to_centre @ approach) * approach)
    assert off_axis < 0.02, (g_pos, centre)
    assert ros_client.spin_until(lambda: any(values(s).get("fit_centre") for s in planner_status), 5)
    fitted = [values(s) for s in planner_status if values(s).get("fit_centre")][-1]
    assert np.linalg.norm(np.array(fitted["fit_centre"].split(), dtype=float) - centre) < 0.02, (fitted, centre)

    # Bad commands are refused and the hand does not move: joints of another robot, NaN targets.
    pub = ros_client.node.create_publisher(JointTrajectory, ADROIT.trajectory_topic, QoSProfile(depth=1))
    assert ros_client.spin_until(lambda: pub.get_subscription_count() > 0, 10)
    q0 = positions(latest.msgs[contract.JOINT_STATES])
    pub.publish(trajectory(PANDA.joint_names, [np.full(PANDA.n_joints, 0.5)], [0.5]))
    ros_client.spin_for(0.2)
    nan_target = q0.copy()
    nan_target[1] = np.nan  # ARTy
    pub.publish(trajectory(ADROIT.joint_names, [q0 + 0.1, nan_target], [0.3, 0.6]))
    ros_client.spin_until(lambda: any(int(values(s).get("rejected_trajectories", 0)) >= 2 for s in sim_status), 5)
    assert max(int(values(s)["rejected_trajectories"]) for s in sim_status) == 2
    assert np.abs(positions(latest.msgs[contract.JOINT_STATES]) - q0).max() < 2e-3

    # Scripted grasp from the planner's pose: IK to the grasp pose, move there in 1 s, then
    # close the five fingers over 0.6 s and hold: at least three pads press on the object.
    ik = local.solve_palm_ik(g_pos, g_quat, arm_q0=q0[:6])
    assert ik.success, ik.message
    at_grasp = np.concatenate([ik.arm_q, q0[6:]])
    fractions = np.linspace(0.0, 1.0, 7)[1:]
    points = [at_grasp] + [np.concatenate([ik.arm_q, close_hand_targets(f)]) for f in fractions]
    times = [1.0] + [1.0 + 0.1 * k for k in range(1, len(fractions) + 1)]
    pub.publish(trajectory(ADROIT.joint_names, points + [points[-1]], times + [2.5]))

    def pads_pressed() -> int:
        return sum(latest.msgs[t].wrench.force.z > contract.TACTILE_CONTACT_N for t in tactile_topics)

    assert ros_client.spin_until(lambda: pads_pressed() >= 3, 30), {
        t: latest.msgs[t].wrench.force.z for t in tactile_topics
    }
    local.close()


def _pose_msg(position, rotation: np.ndarray) -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id = "world"
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position)
    q = Rotation.from_matrix(rotation).as_quat(scalar_first=True)
    o = msg.pose.orientation
    o.w, o.x, o.y, o.z = (float(v) for v in q)
    return msg


@pytest.mark.ros
def test_planner_refuses_empty_and_flat_clouds(launch_nodes, ros_client):
    """The planner alone, fed synthetic frames: an empty mask and a flat patch (the table, not an
    object) give an ERROR diagnostic with the reason and no pose."""
    from dexstack.ros_nodes.common import QOS, camera_info_msg, depth_msg

    cam = "probe"
    launch_nodes([NodeSpec("grasp_planner_node", "grasp_planner", {"camera": cam})])
    node = ros_client.node
    pub_depth = node.create_publisher(Image, contract.camera_depth_topic(cam), QoSProfile(depth=5))
    pub_info = node.create_publisher(CameraInfo, contract.camera_info_topic(cam), QoSProfile(depth=5))
    pub_mask = node.create_publisher(Image, contract.camera_mask_topic(cam), QoSProfile(depth=5))
    pub_pose = node.create_publisher(PoseStamped, contract.camera_pose_topic(cam), QOS[contract.QoSKind.LATCHED])
    poses = []
    node.create_subscription(PoseStamped, contract.GRASP_TARGET_POSE, poses.append, QOS[contract.QoSKind.LATCHED])
    status = diagnostics_of(ros_client, "/grasp_planner")
    assert ros_client.spin_until(
        lambda: all(p.get_subscription_count() > 0 for p in (pub_depth, pub_info, pub_mask, pub_pose)), 30
    )
    # Camera 0.6 m above the table looking straight down (optical z = world -z).
    pub_pose.publish(_pose_msg([0.0, 0.0, 0.6], np.diag([1.0, -1.0, -1.0])))
    width, height, f = 64, 48, 60.0
    depth = np.full((height, width), 0.6, dtype=np.float32)

    def send(mask: np.ndarray, t: float) -> None:
        frame = f"{cam}_camera_optical_frame"
        m = Image(
            height=height, width=width, encoding="mono8", step=width, data=(mask * 255).astype(np.uint8).tobytes()
        )
        d = depth_msg(depth, frame, t)
        m.header = d.header
        pub_depth.publish(d)
        pub_info.publish(camera_info_msg(width, height, f, f, (width - 1) / 2, (height - 1) / 2, frame, t))
        pub_mask.publish(m)

    def errors() -> list[str]:
        return [s.message for s in status if s.level == DiagnosticStatus.ERROR]

    # The planner may see the pose after the first frame: send until it answers.
    empty = np.zeros((height, width), dtype=bool)
    t = 1.0
    while not errors() and t < 10.0:
        send(empty, t)
        ros_client.spin_for(0.2)
        t += 0.1
    assert errors() and "empty" in errors()[-1], errors()

    # A new scene (a sim's next episode) makes it plan again: a flat patch of the table.
    pub_episode = node.create_publisher(String, contract.SIM_EPISODE, QOS[contract.QoSKind.LATCHED])
    pub_episode.publish(String(data=json.dumps({"episode": 1, "stamp": t + 1.0})))
    flat = np.zeros((height, width), dtype=bool)
    flat[10:30, 20:40] = True  # 400 points on the table plane
    while not any("coplanar" in e for e in errors()) and t < 30.0:
        t += 0.5
        send(flat, t)
        ros_client.spin_for(0.2)
    assert "coplanar" in errors()[-1], errors()
    answer = ros_client.call(Trigger, "/grasp_planner/plan", Trigger.Request())  # re-plans the latest frame
    assert not answer.success and "coplanar" in answer.message, answer.message
    ros_client.spin_for(0.3)
    assert poses == []  # never a pose for a cloud that is not an object


def test_exact_stamp_matcher_pairs_only_identical_stamps():
    from dexstack.ros_nodes.grasp_planner_node import ExactStampMatcher

    matcher = ExactStampMatcher(("depth", "info", "mask"), queue=3)
    assert matcher.add("depth", 10, "d10") is None
    assert matcher.add("info", 10, "i10") is None
    assert matcher.add("mask", 11, "m11") is None  # another frame's mask completes nothing
    assert matcher.add("mask", 10, "m10") == {"depth": "d10", "info": "i10", "mask": "m10"}
    # Frame 11 can no longer complete once a newer one has; the queue stays bounded.
    for stamp in range(20, 30):
        matcher.add("depth", stamp, "d")
    assert len(matcher._pending) <= 3


def test_plan_grasp_refuses_what_it_cannot_trust():
    from dexstack.perception.planning import check_fit, plan_grasp
    from dexstack.perception.superquadric import Superquadric

    depth = np.full((48, 64), 0.6, dtype=np.float32)
    look_down = np.eye(4)
    look_down[:3, :3], look_down[:3, 3] = np.diag([1.0, -1.0, -1.0]), [0.0, 0.0, 0.6]
    args = dict(
        intrinsics=(60.0, 60.0, 31.5, 23.5),
        camera_pose=look_down,
        support_z=0.0,
        approach="auto",
        max_aperture=0.1,
        standoff=0.0,
        reference=np.array([-0.5, 0.0, 0.1]),
        arm_friendly=True,
    )
    with pytest.raises(ValueError, match="differ in size"):
        plan_grasp(depth, np.ones((48, 63), dtype=bool), **args)
    few = np.zeros((48, 64), dtype=bool)
    few[:4, :4] = True
    with pytest.raises(ValueError, match="only 16 object points"):
        plan_grasp(depth, few, **args)
    no_return = np.zeros_like(depth)  # mask set but no depth: nothing to back-project
    with pytest.raises(ValueError, match="only 0 object points"):
        plan_grasp(no_return, np.ones((48, 64), dtype=bool), **args)
    # A fit far from its cloud (what a diverged optimiser could return) is refused.
    cloud = np.random.default_rng(0).uniform(-0.03, 0.03, (200, 3))
    far = Superquadric(
        size=np.full(3, 0.03), exponents=np.ones(2), position=np.array([0.5, 0.0, 0.0]), rotation=np.eye(3)
    )
    with pytest.raises(ValueError, match="degenerate fit"):
        check_fit(far, cloud)
