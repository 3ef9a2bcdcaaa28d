"""MuJoCo sim node: publishes exactly what a ros2_control robot with cameras publishes.

Topics: /clock (every physics step), /joint_states, per camera color + aligned depth +
camera_info; sim-only ground truth /sim/object_pose and /sim/episode. Consumes the
controller's JointTrajectory with JointTrajectoryController semantics (via SimCore's
TrajectoryExecutor). Services: ~/reset (next seed, or the `seed` parameter after it is
set), ~/step (one control period while paused), ~/set_pause.

Pacing:
- realtime: physics follows the wall clock times `rtf` (0 = as fast as possible);
- lockstep: at every control tick the node publishes the observation, then waits until a
  trajectory stamped with that observation's stamp arrives (the policy's answer relayed by
  the safety filter; a hold is an empty trajectory) before advancing physics.

ROS time stays monotonic across episodes: each episode starts at the previous one's end
plus one control period, so every node's timers and staleness checks keep working.
"""

from __future__ import annotations

import json
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock as RosClock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.hardware.profiles import get_profile
from dexstack.ros_nodes import common
from dexstack.sim.core import SimCore
from dexstack.trajectory import ActionChunk

# Wall-clock wait before a lockstep observation is published again (a best-effort
# subscriber may have dropped it; re-publishing the same stamp is idempotent).
LOCKSTEP_REPUBLISH_S = 1.0
# Sim time starts here, not at 0: a zero stamp on a trajectory means "now", so no
# observation may carry it.
SIM_TIME_START_S = 1.0
EPISODE_ANNOUNCE_S = 0.1
EPISODE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim")
        p = self.declare_parameters("", [
            ("profile", "panda"), ("task", "pick_lift"), ("rtf", 1.0), ("pacing", "realtime"),
            ("seed", 0), ("cameras", True), ("policy_rate", contract.POLICY_HZ),
            ("camera_hz", contract.CAMERA_HZ), ("joint_state_hz", contract.JOINT_STATE_HZ),
            ("camera_width", 0), ("camera_height", 0), ("auto_reset", True), ("start_paused", False),
        ])
        params = {x.name: x.value for x in p}
        if self.get_parameter("use_sim_time").value:
            # The sim is the clock: it must not wait for a /clock that only it publishes.
            self.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, False)])
        self.profile = get_profile(params["profile"])
        self.task_name = params["task"]
        self.lockstep = params["pacing"] == "lockstep"
        if params["pacing"] not in ("realtime", "lockstep"):
            raise ValueError(f"pacing must be realtime or lockstep, got {params['pacing']!r}")
        self.rtf = float(params["rtf"])
        self.auto_reset = bool(params["auto_reset"])
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.running = True
        size = (params["camera_width"], params["camera_height"]) if params["camera_width"] > 0 else None
        # The physics thread owns the core: an EGL context is only valid in the thread that made it.
        self.core = self._start_physics_thread(params["task"], bool(params["cameras"]), size)
        self.cameras = self.profile.camera_names if params["cameras"] else ()
        dt = self.core.dt
        self.steps_per_tick = max(1, round(1.0 / (params["policy_rate"] * dt)))
        self.steps_per_joint_state = max(1, round(1.0 / (params["joint_state_hz"] * dt)))
        self.steps_per_camera = max(1, round(1.0 / (params["camera_hz"] * dt)))

        qos = common.QOS
        K = contract.QoSKind
        self.pub_clock = self.create_publisher(Clock, contract.CLOCK, qos[K.DEFAULT])
        self.pub_joints = self.create_publisher(JointState, contract.JOINT_STATES, qos[K.STATE_PUB])
        self.pub_object = self.create_publisher(PoseStamped, contract.SIM_OBJECT_POSE, qos[K.DEFAULT])
        # Latched, and deep enough that "done" is not overwritten by the next "running".
        self.pub_episode = self.create_publisher(String, contract.SIM_EPISODE, EPISODE_QOS)
        self.pub_cam = {
            cam: (self.create_publisher(Image, contract.camera_color_topic(cam), qos[K.SENSOR_DATA]),
                  self.create_publisher(Image, contract.camera_depth_topic(cam), qos[K.SENSOR_DATA]),
                  self.create_publisher(CameraInfo, contract.camera_info_topic(cam), qos[K.SENSOR_DATA]))
            for cam in self.cameras
        }
        self.create_subscription(JointTrajectory, self.profile.trajectory_topic, self._on_trajectory, qos[K.COMMAND])
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(Trigger, "~/step", self._srv_step)
        self.create_service(SetBool, "~/set_pause", self._srv_pause)

        self.paused = bool(params["start_paused"])
        self.pending_steps = 0  # physics steps requested by ~/step while paused
        self.reset_requested = False
        self.next_seed = int(params["seed"])
        self.episode = -1
        self.offset = 0.0  # ROS time of the current episode's t=0
        self.awaiting: float | None = None  # lockstep: stamp of the observation awaiting an answer
        self.answer: JointTrajectory | None = None
        self.rejected = 0
        self.ignored_answers = 0
        self.pub_diag = self.create_publisher(DiagnosticArray, contract.DIAGNOSTICS, qos[K.DEFAULT])
        # Steady clock: diagnostics keep coming while the sim is paused or waiting in lockstep.
        self.create_timer(1.0 / contract.DIAGNOSTICS_HZ, self._publish_diagnostics,
                          clock=RosClock(clock_type=ClockType.STEADY_TIME))
        self._diag_last = (time.monotonic(), 0.0)
        self.add_on_set_parameters_callback(self._on_params)
        with self.wake:
            self._reset_episode()
            if self.paused:
                self.next_seed = self.seed  # the episode never ran: the first ~/reset replays its seed
            self.started = True
            self.wake.notify_all()

    def _start_physics_thread(self, task: str, render: bool, size) -> SimCore:
        built: dict = {}
        ready = threading.Event()

        def run() -> None:
            try:
                built["core"] = SimCore(task, self.profile, render=render, camera_size=size)
            except Exception as exc:  # reported in the constructor below
                built["error"] = exc
            ready.set()
            if "core" in built:
                self._loop()

        self.started = False
        self.thread = threading.Thread(target=run, name="physics", daemon=True)
        self.thread.start()
        ready.wait()
        if "error" in built:
            raise built["error"]
        return built["core"]

    # --- time ---------------------------------------------------------------------------
    def ros_time(self) -> float:
        return self.offset + self.core.time

    # --- callbacks (executor thread) ----------------------------------------------------
    def _on_params(self, params):
        from rcl_interfaces.msg import SetParametersResult

        with self.lock:
            for prm in params:
                if prm.name == "seed":
                    self.next_seed = int(prm.value)  # the next ~/reset uses it
                elif prm.name == "rtf":
                    self.rtf = float(prm.value)
        return SetParametersResult(successful=True)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        with self.wake:
            stamp = common.to_sec(msg.header.stamp)
            if self.lockstep:
                # Only the answer to the observation being awaited moves the robot; answers to
                # older or intermediate observations would land at DDS-dependent times.
                if self.awaiting is not None and abs(stamp - self.awaiting) <= 1e-6:
                    self.answer = msg
                    self.wake.notify_all()
                else:
                    self.ignored_answers += 1
                return
            self._apply(msg)

    def _apply(self, msg: JointTrajectory) -> None:
        """Hand a trajectory to the executor (lock held). Empty = hold, like JTC."""
        if not msg.points:
            self.core.hold()
            return
        try:
            chunk = common.msg_to_chunk(msg)
            if chunk.stamp is not None:  # ROS time -> episode time; before this episode began is negative
                chunk = ActionChunk(chunk.joint_names, chunk.positions, chunk.times, chunk.stamp - self.offset)
            self.core.submit(chunk)
        except ValueError as exc:
            self.rejected += 1
            self.core.hold()
            self.get_logger().error(f"rejected trajectory, holding: {exc}", throttle_duration_sec=2.0)

    def _srv_reset(self, request, response):
        with self.wake:
            self.reset_requested = True
            self.paused = False
            self.wake.notify_all()
        response.success, response.message = True, f"resetting with seed {self.next_seed}"
        return response

    def _srv_step(self, request, response):
        with self.wake:
            if not self.paused:
                response.success, response.message = False, "not paused"
                return response
            self.pending_steps += self.steps_per_tick
            self.wake.notify_all()
        response.success, response.message = True, "stepping one control period"
        return response

    def _srv_pause(self, request, response):
        with self.wake:
            self.paused = bool(request.data)
            self.wake.notify_all()
        response.success, response.message = True, "paused" if self.paused else "running"
        return response

    def _publish_diagnostics(self) -> None:
        with self.lock:
            sim_t, wall_t = self.ros_time(), time.monotonic()
            values = {"episode": self.episode, "seed": self.seed, "pacing": "lockstep" if self.lockstep else "realtime",
                      "paused": self.paused, "sim_time_s": f"{sim_t:.3f}",
                      "rejected_trajectories": self.rejected, "ignored_answers": self.ignored_answers,
                      "skipped_points": self.core.executor.skipped_points}
        last_wall, last_sim = self._diag_last
        self._diag_last = (wall_t, sim_t)
        values["rtf"] = f"{(sim_t - last_sim) / max(wall_t - last_wall, 1e-9):.2f}"
        level = "WARN" if self.rejected else "OK"
        status = common.diagnostic_status(self, level, f"episode {self.episode}, rtf {values['rtf']}", values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(array)

    # --- physics thread -----------------------------------------------------------------
    def _reset_episode(self) -> None:
        """Start the next episode (lock held)."""
        end = self.ros_time() if self.episode >= 0 else SIM_TIME_START_S
        self.seed = self.next_seed
        self.next_seed += 1
        self.core.reset(self.seed)
        self.episode += 1
        self.offset = end + (self.steps_per_tick * self.core.dt if self.episode > 0 else 0.0)
        self.success_since: float | None = None
        self.done = False
        self._publish_episode("running", False)
        if self.lockstep and self.started:
            # Nodes reset episode state (expert plan, policy history) on /sim/episode; give the
            # announcement a head start over the first observation, which travels on other
            # topics. The wait is wall time only: sim time and determinism are unaffected.
            self.wake.wait(EPISODE_ANNOUNCE_S)

    def _publish_episode(self, status: str, success: bool) -> None:
        info = {"episode": self.episode, "seed": self.seed, "task": self.task_name,
                "instruction": self.core.task.instruction, "status": status, "success": bool(success),
                "sim_time": round(self.core.time, 6), "stamp": round(self.ros_time(), 6)}
        self.pub_episode.publish(String(data=json.dumps(info)))

    def _publish_state(self, cameras: bool, tick: bool = True) -> None:
        """Clock + joint states; at control ticks (every state in realtime) also the object
        pose, and the cameras when asked. In lockstep, a complete observation is one stamp."""
        # Observations go out before the /clock that reaches their stamp, so a sim-time timer
        # firing at t already finds the state of t (as with a robot's driver and system time).
        t = self.ros_time()
        q, v, e = self.core.joint_state()
        self.pub_joints.publish(common.joint_state_msg(self.profile.joint_names, q, v, e, stamp=t))
        if tick:
            self._publish_tick_observation(t, cameras)
        self.pub_clock.publish(Clock(clock=common.to_stamp(t)))

    def _publish_tick_observation(self, t: float, cameras: bool) -> None:
        pos, quat = self.core.object_pose()
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = common.to_stamp(t), "world"
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(x) for x in pos)
        o = pose.pose.orientation
        o.w, o.x, o.y, o.z = (float(x) for x in quat)
        self.pub_object.publish(pose)
        if cameras:
            for cam, (pub_rgb, pub_depth, pub_info) in self.pub_cam.items():
                rgb, depth = self.core.render(cam)
                frame = f"{cam}_camera_optical_frame"
                pub_rgb.publish(common.rgb_msg(rgb, frame, t))
                pub_depth.publish(common.depth_msg(depth, frame, t))
                fx, fy, cx, cy = self.core.camera_intrinsics(cam)
                pub_info.publish(common.camera_info_msg(rgb.shape[1], rgb.shape[0], fx, fy, cx, cy, frame, t))

    def _check_episode_end(self) -> bool:
        """Lock held. Ends the episode on held success or timeout; returns True if it ended."""
        task = self.core.task
        if task.success():
            if self.success_since is None:
                self.success_since = self.core.time
        else:
            self.success_since = None
        hold_s = getattr(task, "success_hold_s", 0.5)
        succeeded = self.success_since is not None and self.core.time - self.success_since >= hold_s
        if succeeded or self.core.time >= task.max_time_s:
            self._publish_episode("done", succeeded)
            self.done = True
            return True
        return False

    def _loop(self) -> None:
        step_index = 0
        wall0, sim0 = time.monotonic(), 0.0
        with self.wake:
            while self.running and not self.started:  # the node finishes setting up first
                self.wake.wait(0.1)
            while self.running:
                if self.reset_requested or (self.done and self.auto_reset):
                    self.reset_requested = False
                    self._reset_episode()
                    step_index = 0
                    wall0, sim0 = time.monotonic(), self.core.time
                if self.done or (self.paused and self.pending_steps == 0):
                    self.wake.wait(0.1)
                    wall0, sim0 = time.monotonic(), self.core.time
                    continue
                tick = step_index % self.steps_per_tick == 0
                if self.lockstep and tick:
                    self._publish_state(cameras=bool(self.cameras))
                    if not self._await_answer():
                        break
                    if self.reset_requested:
                        continue
                else:
                    due_camera = not self.lockstep and step_index % self.steps_per_camera == 0
                    if step_index % self.steps_per_joint_state == 0 or due_camera:
                        self._publish_state(cameras=due_camera and bool(self.cameras), tick=not self.lockstep)
                    else:
                        self.pub_clock.publish(Clock(clock=common.to_stamp(self.ros_time())))
                self.core.step(1)
                step_index += 1
                if self.paused and self.pending_steps > 0:
                    self.pending_steps -= 1
                if step_index % self.steps_per_tick == 0:
                    if self._check_episode_end():
                        continue
                if not self.lockstep and self.rtf > 0:
                    ahead = (self.core.time - sim0) / self.rtf - (time.monotonic() - wall0)
                    if ahead > 0:
                        self.wake.wait(ahead)  # releases the lock so callbacks run

    def _await_answer(self) -> bool:
        """Lockstep (lock held): wait for the trajectory answering the observation just sent."""
        self.awaiting, self.answer = self.ros_time(), None
        last_sent = time.monotonic()
        while self.running and self.answer is None and not self.reset_requested:
            self.wake.wait(0.05)
            if self.answer is None and time.monotonic() - last_sent > LOCKSTEP_REPUBLISH_S:
                self._publish_state(cameras=bool(self.cameras))
                last_sent = time.monotonic()
        answer, self.awaiting, self.answer = self.answer, None, None
        if answer is not None:
            self._apply(answer)
        return self.running

    def destroy_node(self) -> None:
        with self.wake:
            self.running = False
            self.wake.notify_all()
        self.thread.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    common.run_node(SimNode, args)


if __name__ == "__main__":
    main()
