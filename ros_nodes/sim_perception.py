"""The sim node's perception phase, for tasks that plan from the camera (`task.perception`: grasp).

In lockstep with `grasp_pose_timeout_s` > 0, each episode of such a task starts with it: the view the task planned
from (`task.clear_view()`, arm out of view) goes out at the episode's start stamp, the node waits
(wall time) for the planner's /grasp/target_pose from it, then moves ROS time one control period
on without physics, so the first observation and grasp pose match the in-process env's.

A mixin of `sim_node.SimNode` (it uses the node's lock, clock, core and topics), kept in its own
file so that each stays small.
"""

from __future__ import annotations

import time

from geometry_msgs.msg import PoseStamped

from dexstack import contract
from dexstack.ros_nodes import common


class PerceptionPhase:
    """`SimNode`'s perception phase (see the module docstring)."""

    def _set_up_perception(self) -> None:
        self.perceive_due = False  # lockstep: the episode's perception phase has not run yet
        self.grasp_pose_stamp: float | None = None  # stamp (s) of the newest /grasp/target_pose
        if self.perceives:
            self.create_subscription(
                PoseStamped, contract.GRASP_TARGET_POSE, self._on_grasp_pose, common.QOS[contract.QoSKind.LATCHED]
            )

    def _on_grasp_pose(self, msg: PoseStamped) -> None:
        with self.wake:
            self.grasp_pose_stamp = common.to_sec(msg.header.stamp)
            self.wake.notify_all()

    def _perception_phase(self) -> None:
        """Lockstep, lock held, before an episode's first observation: publish the task's planning
        view at the episode's start stamp, wait for the grasp planner's pose from it (wall time, up
        to grasp_pose_timeout_s), then move ROS time one control period on without physics."""
        self.perceive_due = False
        t = self.clock.now()
        cam = self.cameras[0]
        depth, mask = self.core.task.clear_view()
        self.topics.publish_view(cam, depth, mask, t)
        start = last_sent = time.monotonic()
        while (
            self.running
            and not self.reset_requested
            and (self.grasp_pose_stamp is None or self.grasp_pose_stamp < t - 1e-6)
        ):
            waited = time.monotonic() - start
            if waited > self.grasp_pose_timeout_s:
                self.get_logger().error(
                    f"episode {self.clock.episode}: no grasp pose on {contract.GRASP_TARGET_POSE} "
                    f"after {waited:.1f} s; starting without one"
                )
                break
            if time.monotonic() - last_sent > 1.0:  # sensor-data QoS is best effort: send the view again
                self.topics.publish_view(cam, depth, mask, t)
                last_sent = time.monotonic()
            self.wake.wait(0.02)
        else:
            # The policy node gets the same latched pose; give its delivery a head start over the
            # first observation (wall time only).
            self.wake.wait(0.05)
        self.clock.offset += self.steps_per_tick * self.core.dt
