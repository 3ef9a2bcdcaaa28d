"""Scripted experts for the memory tasks: hold still while the cue is on, then pick.

They are PickLiftExpert with a waiting phase. The object pose they are given is privileged
(the sim's `/sim/object_pose` and the env's `object_pose` report the hidden or cued target),
so they know the answer from the first step; waiting at home until the cue is gone keeps the
demonstrations from giving the answer away by motion during the cue, so a policy trained on
them has to remember the cue. Joint values in the profile's order (rad, finger opening m).
"""

from __future__ import annotations

import numpy as np

from dexstack.sim.experts.pick_lift import PickLiftExpert
from dexstack.sim.tasks import cover_pick, cue_choice
from dexstack.trajectory import ActionChunk

WAIT_MARGIN_S = 0.2  # s after the cue is gone before the arm moves


class WaitThenPickExpert(PickLiftExpert):
    """Holds the joints it first measured until `wait_s` (episode time, s), then picks."""

    wait_s = 0.0

    def reset(self) -> None:
        super().reset()
        self._hold_q: np.ndarray | None = None

    def act(
        self, t: float, joint_positions: np.ndarray, object_position: np.ndarray, object_quat: np.ndarray
    ) -> ActionChunk:
        """Like PickLiftExpert.act; before `wait_s` every point is the held configuration."""
        if t >= self.wait_s:
            return super().act(t, joint_positions, object_position, object_quat)
        q_meas = np.asarray(joint_positions, dtype=np.float64)
        if q_meas.shape != (self.profile.n_joints,) or not np.all(np.isfinite(q_meas)):
            raise ValueError(f"joint_positions must be {self.profile.n_joints} finite values, got {q_meas}")
        if self._hold_q is None:
            self._hold_q = q_meas.copy()
        points = np.tile(self._hold_q, (self.chunk_points, 1))
        chunk = ActionChunk.uniform(self.profile.joint_names, points, self.dt, stamp=t)
        # The pick phases start their path from what this chunk commands (see _planned).
        self._plan_t = np.concatenate([[t], t + chunk.times])
        self._plan_q = np.vstack([self._hold_q, points])
        return chunk


class CoverPickExpert(WaitThenPickExpert):
    """Waits until the covers are down, then picks the hidden object."""

    wait_s = cover_pick.COVERED_AT_S + WAIT_MARGIN_S


class CueChoiceExpert(WaitThenPickExpert):
    """Waits until the cue is gone, then lifts the cued object."""

    wait_s = cue_choice.CUE_GONE_AT_S + WAIT_MARGIN_S
