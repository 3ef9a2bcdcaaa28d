"""Hand sim node: the G-PAYN scene (Adroit arm + 24-DoF hand, one object) behind the same contract
as the Panda sim node.

Everything about pacing, time and commands is the Panda sim node's (`SimNode`, reused by
subclassing, not copied): /clock, /joint_states, camera colour + aligned depth + camera_info,
/sim/object_pose, /sim/episode, /diagnostics, JointTrajectory execution with
JointTrajectoryController semantics on the ADROIT profile's controller topic
(/hand_controller/joint_trajectory), ~/reset (`seed` parameter), ~/step, ~/set_pause, realtime
and lockstep pacing. This node swaps the physics core and adds:
- /tactile/<pad> for the profile's five pads (geometry_msgs/WrenchStamped, normal force in N on
  force.z, frame = the pad's distal link; see `contract.tactile_topics`), sent with every joint
  state, before the /clock that reaches their stamp;
- /camera/scene/object_mask (mono8, 255 = object) with every camera frame, same stamp;
- /camera/scene/optical_pose (latched PoseStamped in "world"): the camera's extrinsics, which
  the grasp planner needs to back-project depth (a real robot has them from calibration).

Reset is GraspEnv's (`policies/gpayn/env.py`): the object is placed from the seed (+-3 cm,
+-0.35 rad around the default spot), the grasp is planned from the camera's masked depth with
the arm out of view, and the open hand starts at the pre-grasp 5 cm back along the approach. If
no placement gives a reachable grasp the episode starts at `HandSim.start_pose()` with the
object at its default spot, and the reason is logged.

Episode end as GraspEnv's (`policies/gpayn/rewards.py`), checked at every control tick: success
the first tick the object is SUCCESS_LIFT above its resting height and not knocked over
(`success_hold_s` = 0 by default: no hold, as GraspEnv terminates on the lift); failure the first
tick it is knocked over (tilt > TILT_LIMIT or OFF_TABLE_DROP below rest), or at the time limit.
GraspEnv also ends an episode when the palm IK fails; here the policy node holds instead and the
episode goes on (the sim does not see the policy's IK).

Perception phase (lockstep, `grasp_pose_timeout_s` > 0): GraspEnv fits the object with the arm
pulled out of the camera's view, then puts the hand at the pre-grasp. At the start of each
episode this node publishes that view (depth, camera_info, mask of the reset state re-rendered
with the arm at `env.CAMERA_CLEAR_ARM`, on a scratch copy of the physics state) stamped with the
episode's start, waits up to `grasp_pose_timeout_s` of wall time for the grasp planner's
/grasp/target_pose from it, and only then starts the clock: ROS time moves one control period
on (physics does not) and the first control observation goes out. The policy's first action then
sees GraspEnv's first observation and a grasp pose planned from the same view, instead of holding
for the ticks the planner takes and planning from a view the open hand occludes.

Parameters (besides the Panda sim node's; `task` is ignored, `profile` must be adroit or left at
its default): `object` (a `sim.objects.CATALOG` name), `max_episode_s` (episode time limit, by
default GraspEnv's 5 s so evaluation through ROS matches the in-process env), `success_hold_s`
(how long the lift must last, default 0 as GraspEnv), `grasp_pose_timeout_s` (default 0: no
perception phase; `dexstack/graph.py` sets it for lockstep bringups).
"""

from __future__ import annotations

import copy
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import mujoco
import numpy as np
from geometry_msgs.msg import PoseStamped, WrenchStamped
from sensor_msgs.msg import Image

from dexstack import contract
from dexstack.hardware.profiles import ADROIT
from dexstack.policies.gpayn.env import CAMERA_CLEAR_ARM, CONTROL_HZ, MAX_EPISODE_STEPS, GraspEnv
from dexstack.policies.gpayn.rewards import OFF_TABLE_DROP, SUCCESS_LIFT, TILT_LIMIT
from dexstack.ros_nodes import common
from dexstack.ros_nodes.sim_node import SIM_TIME_START_S, SimNode
from dexstack.trajectory import ActionChunk, TrajectoryExecutor

DEFAULT_OBJECT = "potted_meat_can"
DEFAULT_MAX_EPISODE_S = MAX_EPISODE_STEPS / CONTROL_HZ


class GraspTask:
    """What SimNode asks of a task: the instruction, success (the object lifted SUCCESS_LIFT above
    its resting height and not knocked over, as GraspEnv's reward counts it), failure (knocked
    over) and the time limit."""

    def __init__(self, core: HandSimCore, max_time_s: float, success_hold_s: float = 0.0) -> None:
        if not np.isfinite(success_hold_s) or success_hold_s < 0:
            raise ValueError(f"success_hold_s must be a number of seconds >= 0, got {success_hold_s}")
        self.core = core
        self.max_time_s = max_time_s
        self.success_hold_s = float(success_hold_s)  # 0: GraspEnv ends the episode on the lift itself
        self.instruction = f"grasp the {core.object_name.replace('_', ' ')} and lift it"

    def lift(self) -> float:
        """Height of the object's centre above its resting height (m)."""
        return float(self.core.sim.object_center()[2]) - self.core.rest_height

    def knocked_over(self) -> bool:
        return self.core.sim.object_tilt() > TILT_LIMIT or self.lift() < -OFF_TABLE_DROP

    def success(self) -> bool:
        return self.lift() >= SUCCESS_LIFT and not self.knocked_over()


class HandSimCore:
    """SimCore's interface (what SimNode calls) over GraspEnv's HandSim.

    All GL work (building the renderers, GraspEnv's perception at reset, camera frames, the mask)
    runs on one worker thread of this core: an EGL context is only current in the thread that
    made it, and SimNode resets the first episode from its constructor's thread but renders from
    its physics thread. Physics steps run in the caller's thread.
    """

    def __init__(self, object_name: str, render: bool, camera_size: tuple[int, int] | None,
                 max_time_s: float, success_hold_s: float = 0.0) -> None:
        if not np.isfinite(max_time_s) or max_time_s <= 0:
            raise ValueError(f"max_episode_s must be a positive number of seconds, got {max_time_s}")
        spec = ADROIT.cameras[0]
        size = (spec.width, spec.height) if camera_size is None else tuple(camera_size)
        if size != (spec.width, spec.height):
            # The mask and GraspEnv's perception use the scene camera at this size; another size
            # would need a second renderer whose pixels no longer match the mask.
            raise ValueError(f"the hand sim renders its {spec.name} camera at {spec.width}x{spec.height}, "
                             f"got camera size {size[0]}x{size[1]}")
        self.object_name = object_name
        self._gl_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hand_sim_gl")
        self.env: GraspEnv = self._gl(GraspEnv, object_name, 0, render, size)
        self.sim = self.env.sim
        self.profile = ADROIT
        self.camera_name = spec.name
        self.dt = self.sim.dt
        m = self.sim.model
        joints = self.sim.names.arm_joints + self.sim.names.hand_joints
        self._dof = np.array([m.jnt_dofadr[m.joint(j).id] for j in joints])
        self._act = np.array([m.actuator(a).id for a in self.sim.names.actuators])
        self.executor = TrajectoryExecutor(ADROIT.joint_names, np.asarray(ADROIT.home, dtype=float))
        self.task = GraspTask(self, max_time_s, success_hold_s)
        self._t0 = 0.0
        self.rest_height = 0.0
        self.plan: dict = {}

    def _gl(self, fn, *args):
        return self._gl_thread.submit(fn, *args).result()

    # --- episode --------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Seconds of simulation time since the last reset, rounded to 1 ns: MuJoCo adds the 2 ms
        timestep to a float, so 2500 steps read 4.9999999999997 s and SimNode's `>= max_time_s`
        would run a 51st control tick where GraspEnv stops after 50."""
        return round(float(self.sim.data.time) - self._t0, 9)

    def reset(self, seed: int) -> None:
        """GraspEnv's reset from `seed` (object placed, grasp planned, hand at the pre-grasp); if
        no reachable grasp is found, the start pose with the object at its default spot."""
        try:
            _, info = self._gl(self.env.reset, int(seed))
            grasp, pre = info["grasp_pose"], info["pregrasp_pose"]
            self.plan = {"grasp_position": grasp[0].tolist(), "grasp_quaternion": grasp[1].tolist(),
                         "pregrasp_position": pre[0].tolist(), "error": ""}
        except RuntimeError as exc:
            self.sim.reset()
            self.plan = {"error": str(exc)}
        self._t0 = float(self.sim.data.time)
        self.rest_height = float(self.sim.object_center()[2])
        # Hold what the servos are commanded to now, so the first step does not move anything.
        self.executor.reset(self.sim.data.ctrl[self._act].copy())

    # --- commands -------------------------------------------------------------------------
    def submit(self, chunk: ActionChunk) -> int:
        """Execute `chunk` from now on (ValueError for joints other than the profile's)."""
        return self.executor.set_chunk(chunk, now=self.time)

    def hold(self) -> None:
        self.executor.hold(self.time)

    def step(self, n: int = 1) -> None:
        """Advance `n` physics steps, each tracking the executor's command (clipped to limits)."""
        for _ in range(n):
            self.sim.set_targets(self.executor.sample(self.time))
            self.sim.step(1)

    # --- state ----------------------------------------------------------------------------
    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position (m, rad), velocity and actuator force, ADROIT order."""
        d = self.sim.data
        return self.sim.joint_positions(), d.qvel[self._dof].copy(), d.actuator_force[self._act].copy()

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sim.object_pose()

    def pad_forces(self) -> np.ndarray:
        """(5,) normal force (N) per pad, `ADROIT.tactile_pads` order, from anything outside the hand."""
        return self.sim.pad_forces()

    # --- camera ---------------------------------------------------------------------------
    def _check_camera(self, camera: str) -> None:
        if camera != self.camera_name:
            raise KeyError(f"no camera {camera!r}; cameras: [{self.camera_name!r}]")

    def render(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        self._check_camera(camera)
        return self._gl(self.sim.render)

    def object_mask(self, camera: str) -> np.ndarray:
        self._check_camera(camera)
        return self._gl(self.sim.object_mask)

    def clear_view(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        """Depth (H, W) m and object mask (H, W) bool of the current scene with the arm at
        GraspEnv's CAMERA_CLEAR_ARM (out of the camera's view), rendered from a scratch copy of the
        physics state: the simulation itself is not touched."""
        self._check_camera(camera)
        return self._gl(self._render_clear_view)

    def _render_clear_view(self) -> tuple[np.ndarray, np.ndarray]:
        sim = self.sim
        live = sim.data
        scratch = copy.copy(live)  # MjData's copy is a deep copy
        scratch.qpos[sim._qpos_adr[:6]] = CAMERA_CLEAR_ARM
        mujoco.mj_forward(sim.model, scratch)
        sim.data = scratch  # HandSim renders its `data`; swap only for these two renders
        try:
            _, depth = sim.render()
            mask = sim.object_mask()
        finally:
            sim.data = live
        return depth, mask

    def camera_intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        self._check_camera(camera)
        return self.sim.camera_intrinsics()

    def camera_pose(self, camera: str) -> np.ndarray:
        """(4, 4) optical frame -> world."""
        self._check_camera(camera)
        return self.sim.camera_pose()

    def close(self) -> None:
        self._gl(self.env.close)
        self._gl_thread.shutdown()


def mask_msg(mask: np.ndarray, frame_id: str, stamp: float) -> Image:
    """(H, W) bool -> mono8 Image, 255 on the object."""
    h, w = mask.shape
    msg = Image(height=h, width=w, encoding="mono8", is_bigendian=0, step=w)
    msg.header.stamp, msg.header.frame_id = common.to_stamp(stamp), frame_id
    msg.data = (mask.astype(np.uint8) * 255).tobytes()
    return msg


def pose_msg(pose: np.ndarray, frame_id: str, stamp: float) -> PoseStamped:
    """(4, 4) homogeneous transform -> PoseStamped (quaternion w >= 0)."""
    from scipy.spatial.transform import Rotation

    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = common.to_stamp(stamp), frame_id
    p = msg.pose.position
    p.x, p.y, p.z = (float(v) for v in pose[:3, 3])
    q = Rotation.from_matrix(pose[:3, :3]).as_quat(scalar_first=True)
    o = msg.pose.orientation
    o.w, o.x, o.y, o.z = (float(v) for v in (q if q[0] >= 0 else -q))
    return msg


class HandSimNode(SimNode):
    """SimNode with the hand scene's core, tactile pads, object mask and camera pose."""

    core: HandSimCore

    def _start_physics_thread(self, task: str, render: bool, size) -> HandSimCore:
        # Called from SimNode's constructor after its parameters and before its publishers.
        object_name = self.declare_parameter("object", DEFAULT_OBJECT).value
        max_episode_s = float(self.declare_parameter("max_episode_s", DEFAULT_MAX_EPISODE_S).value)
        success_hold_s = float(self.declare_parameter("success_hold_s", 0.0).value)
        self.grasp_pose_timeout_s = float(self.declare_parameter("grasp_pose_timeout_s", 0.0).value)
        if not np.isfinite(self.grasp_pose_timeout_s) or self.grasp_pose_timeout_s < 0:
            raise ValueError(f"grasp_pose_timeout_s must be a number of seconds >= 0, got {self.grasp_pose_timeout_s}")
        if self.profile.name not in (ADROIT.name, "panda"):  # panda: SimNode's default, i.e. not set
            raise ValueError(f"the hand sim simulates the {ADROIT.name} profile, got profile {self.profile.name!r}")
        from rclpy.parameter import Parameter

        self.set_parameters([Parameter("profile", Parameter.Type.STRING, ADROIT.name)])
        self.profile = ADROIT
        self.task_name = "grasp"
        core = HandSimCore(object_name, render, size, max_episode_s, success_hold_s)
        self.perceive_due = False  # lockstep: the episode's perception phase has not run yet
        self.grasp_pose_stamp: float | None = None  # stamp (s) of the newest /grasp/target_pose
        self.perception_waits_s: list[float] = []
        self.create_subscription(PoseStamped, contract.GRASP_TARGET_POSE, self._on_grasp_pose,
                                 common.QOS[contract.QoSKind.LATCHED])

        qos = common.QOS
        self.pub_tactile = [self.create_publisher(WrenchStamped, contract.tactile_topic(pad),
                                                  qos[contract.QoSKind.SENSOR_DATA])
                            for pad in ADROIT.tactile_pads]
        self.pub_mask = {}
        if render:
            cam = core.camera_name
            self.pub_mask[cam] = self.create_publisher(Image, contract.camera_mask_topic(cam),
                                                       qos[contract.QoSKind.SENSOR_DATA])
            # The camera is fixed in the world: its pose is published once, latched.
            self.pub_camera_pose = self.create_publisher(PoseStamped, contract.camera_pose_topic(cam),
                                                         qos[contract.QoSKind.LATCHED])
            self.pub_camera_pose.publish(pose_msg(core.camera_pose(cam), "world", SIM_TIME_START_S))

        # SimNode's physics loop waits for `started` (set at the end of its constructor).
        self.started = False
        self.thread = threading.Thread(target=self._loop, name="physics", daemon=True)
        self.thread.start()
        return core

    def _on_grasp_pose(self, msg: PoseStamped) -> None:
        with self.wake:
            self.grasp_pose_stamp = common.to_sec(msg.header.stamp)
            self.wake.notify_all()

    def _reset_episode(self) -> None:
        self.perceive_due = self.lockstep and self.grasp_pose_timeout_s > 0 and bool(self.pub_mask)
        super()._reset_episode()
        if self.core.plan.get("error"):
            self.get_logger().error(f"episode {self.episode}: no planned pre-grasp, starting at the start "
                                    f"pose: {self.core.plan['error']}")

    def _perception_phase(self) -> None:
        """Lockstep, lock held, before an episode's first observation: publish the arm-clear view
        at the episode's start stamp, wait for the grasp planner's pose from it (wall time, up to
        grasp_pose_timeout_s), then move ROS time one control period on without physics."""
        self.perceive_due = False
        t = self.ros_time()
        cam = self.core.camera_name
        depth, mask = self.core.clear_view(cam)
        frame = f"{cam}_camera_optical_frame"
        _, pub_depth, pub_info = self.pub_cam[cam]
        fx, fy, cx, cy = self.core.camera_intrinsics(cam)
        self.pub_mask[cam].publish(mask_msg(mask, frame, t))
        pub_info.publish(common.camera_info_msg(depth.shape[1], depth.shape[0], fx, fy, cx, cy, frame, t))
        pub_depth.publish(common.depth_msg(depth, frame, t))
        start = time.monotonic()
        last_sent = start
        while self.running and not self.reset_requested and (
                self.grasp_pose_stamp is None or self.grasp_pose_stamp < t - 1e-6):
            waited = time.monotonic() - start
            if waited > self.grasp_pose_timeout_s:
                self.get_logger().error(f"episode {self.episode}: no grasp pose on {contract.GRASP_TARGET_POSE} "
                                        f"after {waited:.1f} s; starting without one")
                break
            if time.monotonic() - last_sent > 1.0:  # sensor-data QoS is best effort: send the view again
                self.pub_mask[cam].publish(mask_msg(mask, frame, t))
                pub_info.publish(common.camera_info_msg(depth.shape[1], depth.shape[0], fx, fy, cx, cy, frame, t))
                pub_depth.publish(common.depth_msg(depth, frame, t))
                last_sent = time.monotonic()
            self.wake.wait(0.02)
        else:
            # The policy node gets the same latched pose; give its delivery a head start over the
            # first observation (wall time only).
            self.wake.wait(0.05)
        self.perception_waits_s.append(time.monotonic() - start)
        self.offset += self.steps_per_tick * self.core.dt

    def _publish_state(self, cameras: bool, tick: bool = True) -> None:
        if self.perceive_due and tick:
            self._perception_phase()
        # Tactile before SimNode's joint states and /clock: one stamp, observations before time.
        t = self.ros_time()
        for pub, frame, force in zip(self.pub_tactile, ADROIT.tactile_frames, self.core.pad_forces(), strict=True):
            msg = WrenchStamped()
            msg.header.stamp, msg.header.frame_id = common.to_stamp(t), frame
            msg.wrench.force.z = float(force)
            pub.publish(msg)
        super()._publish_state(cameras, tick)

    def _publish_tick_observation(self, t: float, cameras: bool) -> None:
        super()._publish_tick_observation(t, cameras)
        if cameras:
            for cam, pub in self.pub_mask.items():
                pub.publish(mask_msg(self.core.object_mask(cam), f"{cam}_camera_optical_frame", t))

    def destroy_node(self) -> None:
        super().destroy_node()  # stops the physics thread first
        self.core.close()


def main(args: list[str] | None = None) -> None:
    common.run_node(HandSimNode, args)


if __name__ == "__main__":
    main()
