"""Episodes of one sim core on one monotonic clock: what the sim node runs, without ROS.

Seeds (each episode the next one), the episode count, the end rule (the task's success held
`success_hold_s`, the time limit, or a physics divergence, which fails the episode) and the clock: ROS time stays monotonic across episodes,
each episode starting at the previous one's end plus one control period, so every node's
timers and staleness checks keep working. Time in seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from dexstack import contract
from dexstack.sim.protocol import SimCoreProtocol

# Sim time starts here, not at 0: a zero stamp on a trajectory means "now", so no observation
# may carry it.
SIM_TIME_START_S = 1.0


@dataclass(frozen=True)
class SimSettings:
    """What the sim node is started with (each field is a ROS parameter of the same name and
    default). profile: empty = the task's robot; object: the grasp task's object; rtf: real-time
    factor, 0 = as fast as possible; camera_width/height: 0 = the profile's; max_episode_s: 0 = the
    task's limit; success_hold_s: < 0 = the task's; grasp_pose_timeout_s: lockstep perception wait."""

    profile: str = ""
    task: str = "pick_lift"
    object: str = ""
    rtf: float = 1.0
    pacing: str = "realtime"
    seed: int = 0
    cameras: bool = True
    policy_rate: float = contract.POLICY_HZ
    camera_hz: float = contract.CAMERA_HZ
    joint_state_hz: float = contract.JOINT_STATE_HZ
    camera_width: int = 0
    camera_height: int = 0
    auto_reset: bool = True
    start_paused: bool = False
    max_episode_s: float = 0.0
    success_hold_s: float = -1.0
    grasp_pose_timeout_s: float = 0.0

    def __post_init__(self) -> None:
        if self.pacing not in ("realtime", "lockstep"):
            raise ValueError(f"pacing must be realtime or lockstep, got {self.pacing!r}")
        if not self.grasp_pose_timeout_s >= 0:
            raise ValueError(f"grasp_pose_timeout_s must be a number of seconds >= 0, got {self.grasp_pose_timeout_s}")

    @classmethod
    def defaults(cls) -> list[tuple[str, Any]]:
        """(name, default) of every setting, for declaring them as ROS parameters."""
        return [(f.name, f.default) for f in fields(cls)]

    @property
    def camera_size(self) -> tuple[int, int] | None:
        return (self.camera_width, self.camera_height) if self.camera_width > 0 else None

    @property
    def task_options(self) -> dict[str, str]:
        return {"object": self.object} if self.object else {}


def steps_per(rate_hz: float, dt: float) -> int:
    """Physics steps of `dt` seconds per period of `rate_hz` (at least 1)."""
    return max(1, round(1.0 / (rate_hz * dt)))


class Pacer:
    """Real-time pacing of a physics loop that holds a lock its callbacks need: `pause()` says how
    long to wait, releasing the lock, after a physics step. Ahead of the wall clock times `rtf`:
    until it catches up. Behind it, or with rtf 0 (as fast as possible): a short yield once per
    control tick, or the loop would keep the lock forever and starve every callback (commands,
    diagnostics, shutdown)."""

    YIELD_S = 0.001

    def __init__(self, rtf: float) -> None:
        self.rtf = float(rtf)
        self.restart(0.0)

    def restart(self, sim_t: float) -> None:
        """Pace from now on, from sim time `sim_t` (after a wait or a reset)."""
        self._wall0, self._sim0 = time.monotonic(), sim_t

    def pause(self, sim_t: float, tick: bool) -> float:
        ahead = (sim_t - self._sim0) / self.rtf - (time.monotonic() - self._wall0) if self.rtf > 0 else 0.0
        return ahead if ahead > 0 else (self.YIELD_S if tick else 0.0)


def start_core_thread(
    build: Callable[[], SimCoreProtocol], loop: Callable[[], None]
) -> tuple[SimCoreProtocol, threading.Thread]:
    """Build a core in a new thread that then runs `loop` and closes the core: the thread owns
    the core, since an EGL context is only valid in the thread that made it. Returns once the
    core is built; the build's exception is raised here. Not a daemon: the interpreter's exit
    waits for it (`loop` must return when its owner stops it), so the core is closed on its thread
    before atexit terminates the EGL display (else EGL_BAD_ACCESS / errors at exit)."""
    built: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        try:
            built["core"] = build()
        except Exception as exc:  # re-raised in the caller's thread below
            built["error"] = exc
        ready.set()
        if "core" in built:
            try:
                loop()
            finally:
                built["core"].close()

    thread = threading.Thread(target=run, name="physics")
    thread.start()
    ready.wait()
    if "error" in built:
        raise built["error"]
    return built["core"], thread


class EpisodeClock:
    """Episode bookkeeping over `core` (see the module docstring). max_time_s: 0 = the task's
    limit; success_hold_s: < 0 = the task's."""

    def __init__(
        self,
        core: SimCoreProtocol,
        first_seed: int,
        policy_rate_hz: float,
        max_time_s: float = 0.0,
        success_hold_s: float = -1.0,
    ) -> None:
        self.core = core
        self.steps_per_tick = steps_per(policy_rate_hz, core.dt)
        self.max_time_s = float(max_time_s) or float(core.task.max_time_s)
        self.success_hold_s = float(core.task.success_hold_s if success_hold_s < 0 else success_hold_s)
        if not (
            np.isfinite([self.max_time_s, self.success_hold_s]).all()
            and self.max_time_s > 0
            and self.success_hold_s >= 0
        ):
            raise ValueError(
                f"the episode limit must be > 0 s and the success hold >= 0 s, got "
                f"{self.max_time_s}, {self.success_hold_s}"
            )
        self.next_seed = int(first_seed)
        self.seed = self.next_seed
        self.episode = -1
        self.offset = 0.0  # clock time of the current episode's t = 0
        self.done = False
        self.failure = ""  # why the episode failed other than by the time limit (physics divergence)
        self.divergences = 0  # episodes ended by a physics divergence
        self._reported_divergences = 0
        self._last_divergence = ""
        self._success_since: float | None = None

    def now(self) -> float:
        """Clock time: the episode's start plus the core's time since its reset."""
        return self.offset + self.core.time

    def start(self) -> str | None:
        """Reset the core with the next seed and start the clock one control period after the last
        episode's end. Returns the core's report of a reset that did not go as planned, or None."""
        end = self.now() if self.episode >= 0 else SIM_TIME_START_S
        self.seed = self.next_seed
        self.next_seed += 1
        problem = self.core.reset(self.seed)
        self.episode += 1
        self.offset = end + (self.steps_per_tick * self.core.dt if self.episode > 0 else 0.0)
        self._success_since = None
        self.done = False
        self.failure = ""
        return problem

    def check_end(self) -> bool | None:
        """At a control tick, or after any step on which the core diverged: None while the episode
        runs, else whether it succeeded (it is done). A divergence fails it (`failure` says why)."""
        if self.core.divergence is not None:
            self.done, self.failure = True, self.core.divergence
            self.divergences += 1
            self._last_divergence = self.failure
            return False
        if self.core.task.success():
            if self._success_since is None:
                self._success_since = self.core.time
        else:
            self._success_since = None
        succeeded = self._success_since is not None and self.core.time - self._success_since >= self.success_hold_s
        if succeeded or self.core.time >= self.max_time_s:
            self.done = True
            return succeeded
        return None

    def unreported_failure(self) -> str:
        """The last divergence's reason if no call has returned it yet (episodes may have moved on:
        a report at 1 Hz must not miss one), else ""."""
        if self.divergences == self._reported_divergences:
            return ""
        self._reported_divergences = self.divergences
        return self._last_divergence

    def info(self, task_name: str, status: str, success: bool) -> dict[str, Any]:
        """The /sim/episode announcement; a "done" one carries the task's `episode_metrics` (the
        in-process env's too, so an evaluation through ROS reports the same metrics)."""
        info = {
            "episode": self.episode,
            "seed": self.seed,
            "task": task_name,
            "instruction": self.core.task.instruction,
            "status": status,
            "success": bool(success),
            "sim_time": round(self.core.time, 6),
            "stamp": round(self.now(), 6),
        }
        if self.failure:
            info["failure"] = self.failure
        if status == "done":
            info["metrics"] = self.core.task.episode_metrics(bool(success), info["sim_time"])
        return info
