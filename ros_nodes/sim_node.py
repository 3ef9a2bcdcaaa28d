"""MuJoCo sim node for every robot: publishes exactly what a ros2_control robot with cameras publishes.

`task` (a `sim.tasks.TASKS` name; `object` for grasp) picks the robot and its core
(`sim.cores.make_core`); `profile` may name that robot or stay empty. Topics: `sim_topics.py`.
Consumes the profile's JointTrajectory as JointTrajectoryController does (`hardware/jtc.py`). A
physics divergence fails the episode at once (ERROR; the teleported state is never published). Services:
~/reset (next seed, or the `seed` parameter after it is set), ~/step (one control period while
paused), ~/set_pause. Episodes, seeds and the monotonic clock: `sim.episodes`.

Pacing: realtime (physics follows the wall clock times `rtf`, 0 = as fast as possible) or
lockstep (at every control tick the node publishes the observation, then waits until a
trajectory stamped with that observation's stamp (or zero: "now") arrives, the policy's answer
or a hold relayed by the safety filter, before advancing physics). Tasks that plan from the camera
get a perception phase at the start of each lockstep episode: `sim_perception.py`.
"""

from __future__ import annotations

import threading
import time

from rclpy.clock import Clock as RosClock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from dexstack import contract
from dexstack.hardware.jtc import accept_trajectory_msg
from dexstack.ros_nodes import common
from dexstack.ros_nodes.sim_perception import PerceptionPhase
from dexstack.ros_nodes.sim_topics import SimTopics
from dexstack.sim.cores import make_core
from dexstack.sim.episodes import SIM_TIME_START_S, EpisodeClock, Pacer, SimSettings, start_core_thread, steps_per

# Wall-clock wait before a lockstep observation is published again (a best-effort
# subscriber may have dropped it; re-publishing the same stamp is idempotent).
LOCKSTEP_REPUBLISH_S = 1.0
EPISODE_ANNOUNCE_S = 0.1
PHYSICS_JOIN_S = 10.0  # the loop checks `running` at least every 0.1 s


class SimNode(PerceptionPhase, Node):
    def __init__(self) -> None:
        super().__init__("sim")
        declared = self.declare_parameters("", SimSettings.defaults())
        settings = SimSettings(**{x.name: x.value for x in declared})
        if self.get_parameter("use_sim_time").value:
            # The sim is the clock: it must not wait for a /clock that only it publishes.
            self.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, False)])
        self.task_name = settings.task
        self.lockstep = settings.pacing == "lockstep"
        self.pacer = Pacer(settings.rtf)  # realtime pacing
        self.auto_reset = bool(settings.auto_reset)
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.running = True
        self.started = self.set_up = False
        self.core, self.thread = start_core_thread(
            lambda: make_core(
                settings.task,
                settings.profile or None,
                bool(settings.cameras),
                settings.camera_size,
                settings.task_options,
            ),
            self._loop,
        )
        self.profile = common.with_controller(self, self.core.profile)
        self.set_parameters([Parameter("profile", Parameter.Type.STRING, self.profile.name)])
        self.clock = EpisodeClock(
            self.core, settings.seed, settings.policy_rate, settings.max_episode_s, settings.success_hold_s
        )
        self.grasp_pose_timeout_s = float(settings.grasp_pose_timeout_s)
        self.cameras = self.core.camera_names if settings.cameras else ()
        self.perceives = bool(self.core.task.perception and self.cameras)
        self.steps_per_tick = self.clock.steps_per_tick
        self.steps_per_joint_state = steps_per(settings.joint_state_hz, self.core.dt)
        self.steps_per_camera = steps_per(settings.camera_hz, self.core.dt)

        self.topics = SimTopics(self, self.core, self.cameras, self.perceives, SIM_TIME_START_S)
        qos, K = common.QOS, contract.QoSKind
        self._set_up_perception()
        self.create_subscription(JointTrajectory, self.profile.trajectory_topic, self._on_trajectory, qos[K.COMMAND])
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(Trigger, "~/step", self._srv_step)
        self.create_service(SetBool, "~/set_pause", self._srv_pause)

        self.paused = bool(settings.start_paused)
        self.pending_steps = 0  # physics steps requested by ~/step while paused
        self.reset_requested = False
        self.awaiting: float | None = None  # lockstep: stamp of the observation awaiting an answer
        self.answer: JointTrajectory | None = None
        self.rejected, self.last_rejection = 0, ""
        self.ignored_answers = 0
        # Steady clock: diagnostics keep coming while the sim is paused or waiting in lockstep.
        self.create_timer(
            1.0 / contract.DIAGNOSTICS_HZ, self._publish_diagnostics, clock=RosClock(clock_type=ClockType.STEADY_TIME)
        )
        self._diag_last = (time.monotonic(), 0.0)
        self.add_on_set_parameters_callback(self._on_params)
        with self.wake:  # the physics thread starts the first episode (its reset may render)
            self.set_up = True
            self.wake.notify_all()
            while self.clock.episode < 0 and self.thread.is_alive():
                self.wake.wait(0.05)
        if self.clock.episode < 0:
            raise RuntimeError("the physics thread died before the first episode (see its traceback)")

    # --- callbacks (executor thread) ----------------------------------------------------
    def _on_params(self, params):
        from rcl_interfaces.msg import SetParametersResult

        with self.lock:
            for prm in params:
                if prm.name == "seed":
                    self.clock.next_seed = int(prm.value)  # the next ~/reset uses it
                elif prm.name == "rtf":
                    self.pacer.rtf = float(prm.value)
        return SetParametersResult(successful=True)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        with self.wake:
            stamp = common.to_sec(msg.header.stamp)
            if self.lockstep:
                # Only the answer to the awaited observation (a zero stamp: "now") moves the robot;
                # answers to older or intermediate ones would land at DDS-dependent times.
                if self.awaiting is not None and (stamp == 0.0 or abs(stamp - self.awaiting) <= 1e-6):
                    self.answer = msg
                    self.wake.notify_all()
                else:
                    self.ignored_answers += 1
                return
            self._apply(msg)

    def _apply(self, msg: JointTrajectory) -> None:
        """To the executor (lock held); one JTC refuses is counted, logged and changes nothing."""
        chunk, reason = accept_trajectory_msg(msg, self.profile.joint_names, self.clock.now(), self.clock.offset)
        if chunk is not None:
            self.core.submit(chunk)
            return
        self.rejected, self.last_rejection = self.rejected + 1, reason
        self.get_logger().error(f"rejected trajectory, the previous one continues: {reason}", throttle_duration_sec=2.0)

    def _srv_reset(self, request, response):
        with self.wake:
            self.reset_requested = True
            self.paused = False
            self.wake.notify_all()
        response.success, response.message = True, f"resetting with seed {self.clock.next_seed}"
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
            sim_t, wall_t = self.clock.now(), time.monotonic()
            values = {
                "episode": self.clock.episode,
                "seed": self.clock.seed,
                "pacing": "lockstep" if self.lockstep else "realtime",
                "paused": self.paused,
                "sim_time_s": f"{sim_t:.3f}",
                "rejected_trajectories": self.rejected,
                "last_rejection": self.last_rejection,
                "ignored_answers": self.ignored_answers,
                "skipped_points": self.core.executor.skipped_points,
                "physics_divergences": self.clock.divergences,
            }
        last_wall, last_sim = self._diag_last
        self._diag_last = (wall_t, sim_t)
        values["rtf"] = f"{(sim_t - last_sim) / max(wall_t - last_wall, 1e-9):.2f}"
        failure = self.clock.unreported_failure() or self.clock.failure  # ERROR at least once, and while it stands
        status = failure or f"rtf {values['rtf']}"
        level = "ERROR" if failure else "WARN" if self.rejected else "OK"
        self.topics.publish_diagnostics(level, f"episode {values['episode']}, {status}", values)

    # --- physics thread -----------------------------------------------------------------
    def _reset_episode(self) -> None:
        """Start the next episode (lock held)."""
        problem = self.clock.start()
        if problem:
            self.get_logger().error(f"episode {self.clock.episode}: {problem}")
        self.perceive_due = self.lockstep and self.grasp_pose_timeout_s > 0 and self.perceives
        self.topics.publish_episode(self.clock.info(self.task_name, "running", False))
        if self.lockstep and self.started:
            # Nodes reset episode state (expert plan, policy history) on /sim/episode; give the
            # announcement a head start over the first observation, which travels on other
            # topics. The wait is wall time only: sim time and determinism are unaffected.
            self.wake.wait(EPISODE_ANNOUNCE_S)

    def _publish_state(self, cameras: bool, tick: bool = True) -> None:
        """One stamp's observation (`SimTopics.publish_state`); in lockstep an episode's first one
        comes after its perception phase."""
        if self.perceive_due and tick:
            self._perception_phase()
        self.topics.publish_state(self.clock.now(), tick, cameras)

    def _check_episode_end(self) -> bool:
        """Lock held. Ends the episode on held success or timeout; returns True if it ended."""
        succeeded = self.clock.check_end()
        if self.clock.failure:
            self.get_logger().error(f"episode {self.clock.episode} failed: {self.clock.failure}")
        if succeeded is not None:
            self.topics.publish_episode(self.clock.info(self.task_name, "done", succeeded))
        return succeeded is not None

    def _loop(self) -> None:
        step_index = 0
        with self.wake:
            while self.running and not self.set_up:  # the node finishes setting up first
                self.wake.wait(0.1)
            if self.running:
                self._reset_episode()
                if self.paused:
                    self.clock.next_seed = self.clock.seed  # the episode never ran: the first ~/reset replays its seed
                self.started = True
                self.wake.notify_all()
            while self.running:
                if self.reset_requested or (self.clock.done and self.auto_reset):
                    self.reset_requested = False
                    self._reset_episode()
                    step_index = 0
                    self.pacer.restart(self.core.time)
                if self.clock.done or (self.paused and self.pending_steps == 0):
                    self.wake.wait(0.1)
                    self.pacer.restart(self.core.time)
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
                        self.topics.publish_clock(self.clock.now())
                self.core.step(1)
                step_index += 1
                if self.paused and self.pending_steps > 0:
                    self.pending_steps -= 1
                if step_index % self.steps_per_tick == 0 or self.core.divergence is not None:
                    if self._check_episode_end():
                        continue
                pause = (
                    0.0 if self.lockstep else self.pacer.pause(self.core.time, step_index % self.steps_per_tick == 0)
                )
                if pause > 0:
                    self.wake.wait(pause)  # releases the lock so callbacks run

    def _await_answer(self) -> bool:
        """Lockstep (lock held): wait for the trajectory answering the observation just sent."""
        self.awaiting, self.answer = self.clock.now(), None
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
        # Also runs on a node whose constructor raised (rclpy's context clean-up).
        if hasattr(self, "thread"):  # join the physics thread (it publishes, closes its GL contexts) first
            self.running = False  # read every step, without the lock
            with self.wake:
                self.wake.notify_all()
            self.thread.join(timeout=PHYSICS_JOIN_S)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    common.run_node(SimNode, args)


if __name__ == "__main__":
    main()
