"""The safety filter between a policy and the joint trajectory controller (pure numpy).

Every chunk a policy publishes passes through `SafetyFilter.filter` before it reaches the
controller. The filter never invents motion: it either passes a chunk that is inside the
robot's position limits and velocity envelope, or answers with a hold (`None`); the caller then
sends `SafetyFilter.hold(now, stamp)`, the one place every hold is built.

A hold is what a stock ros2_controllers JointTrajectoryController (JTC) executes as a stop: one
point at the position the controller is commanding now, due `HOLD_SETTLE_S` after it is sent.
JTC rejects a trajectory without points ("Empty trajectory received",
joint_trajectory_controller.cpp `validate_trajectory_msg`) and keeps running the previous one,
so an empty "hold" would be ignored on a real robot. The same function rejects a trajectory with
a non-zero header stamp whose last point is already in the past, so a hold that answers a chunk
(and keeps its stamp, for the lockstep sim) gets a time_from_start that ends after `now`.

The filter mirrors what the controller executes (a `TrajectoryExecutor` fed with every chunk and
hold it sends), so it knows the commanded position at any time: holds stop there, the rate limit
starts there (JTC starts a new trajectory from where it is when the chunk arrives, not from the
measured position at the chunk's stamp), and a chunk whose first point is implausibly far from it
is refused. A joint whose measurement is far from the mirror (a restarted sim, a finger stopped
by an object) is anchored at the measurement instead.

All times are seconds on the node's clock (sim time under `use_sim_time`); positions are
radians (revolute) or metres (prismatic), in the robot profile's joint order.

State machine:
- enable gate: disabled -> every command is a hold. After `enable(now)` the allowed velocity
  ramps linearly from 0 to the profile's limit over `ramp_time_s`, so a freshly enabled robot
  starts slowly; `restart_ramp(now)` does the same after a policy hot-swap. `start_enabled=True`
  means "enabled before we started": full speed at once (sim and mock hardware).
- stop latch: `estop(now)`, a lost e-stop heartbeat (`heartbeat_check`) or the measured-velocity
  monitor (`observe`) latch. A released e-stop input does not unlatch it; only `reset_estop()`
  does (refused while the input is pressed or its heartbeat is missing), and the robot then stays
  disabled until `enable()` is called again.
- watchdog: `check()` says why to hold when joint states go stale or the policy stops sending
  while enabled, in time to stop before the last chunk runs out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dexstack import contract
from dexstack.hardware.profiles import RobotProfile
from dexstack.trajectory import ActionChunk, TrajectoryExecutor, TrajectoryRejected

# Changes smaller than this (rad or m) are float noise, not a clamp or a rate limit.
_EPS = 1e-9
# A hold's point is due this long after it is sent: longer than DDS latency plus the skew between
# our clock and the controller's, so JTC never finds it "ending in the past".
HOLD_SETTLE_S = 0.25
# A joint whose measurement is further than this many seconds at its velocity limit from the
# mirrored command is not following it: anchor at the measurement.
_TRACKING_S = 0.1


@dataclass
class SafetyStats:
    """Counters for diagnostics; they only grow."""

    commands: int = 0  # chunks offered to `filter` (including rejected ones)
    passed: int = 0  # chunks forwarded (possibly modified)
    clamped: int = 0  # chunks with at least one point moved inside the position limits
    limited: int = 0  # chunks slowed down by the velocity limit
    held: int = 0  # commands answered with a hold (gate, e-stop, bad input, stale state)
    bad_input: int = 0  # commands rejected because the chunk itself was invalid


class StateBuffer:
    """Recent measurements by header stamp, so a chunk is checked against the state of the
    observation it answers (deterministic lockstep runs), else the latest one."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._by_stamp: dict[float, tuple[np.ndarray, float]] = {}  # stamp -> (q, received), insertion order

    def add(self, stamp: float, q: np.ndarray, received: float) -> None:
        self._by_stamp[stamp] = (q, received)
        while len(self._by_stamp) > self.size:
            del self._by_stamp[next(iter(self._by_stamp))]

    @property
    def newest_stamp(self) -> float | None:
        return next(reversed(self._by_stamp)) if self._by_stamp else None

    def lookup(self, stamp: float | None, tol: float = 1e-6) -> tuple[np.ndarray | None, float | None]:
        """(q, received) of the state stamped `stamp` (within `tol`), else of the latest one."""
        if stamp is not None:
            for t, entry in reversed(self._by_stamp.items()):
                if abs(t - stamp) <= tol:
                    return entry
        return self._by_stamp[self.newest_stamp] if self._by_stamp else (None, None)


class SafetyFilter:
    """Clamp, rate-limit and gate action chunks for one robot profile."""

    def __init__(
        self,
        profile: RobotProfile,
        ramp_time_s: float = 2.0,
        state_timeout_s: float = 0.2,
        command_timeout_s: float = 1.0,
        start_enabled: bool = False,
        min_command_timeout_s: float = 0.25,
        estop_heartbeat_timeout: float = 0.0,
        velocity_margin: float = 2.0,
        velocity_sustain_s: float = 0.1,
        wall_state_timeout_s: float = 2.0,
        arrival_margin_s: float = 0.05,
    ) -> None:
        """Times in seconds; see the module docstring and docs/SAFETY.md for each setting.
        `estop_heartbeat_timeout` 0 = no heartbeat required; `wall_state_timeout_s`: joint states
        missing this long in wall-clock time count as stale even when the node clock stopped.
        `arrival_margin_s`: latency allowed between sending a chunk and the controller starting it
        (none for a chunk stamped at or after `now`: a lockstep sim's clock waits for the answer);
        the rate limit starts from where the controller commands that much later, so any arrival
        within it keeps the seam under the velocity limit (with observations 30-80 ms old the
        first point is due 20-70 ms after sending, and a few ms of latency would magnify its speed)."""
        if ramp_time_s < 0 or state_timeout_s <= 0 or command_timeout_s <= 0 or min_command_timeout_s <= 0:
            raise ValueError(
                f"timeouts must be positive and ramp_time_s >= 0, got ramp={ramp_time_s}, "
                f"state={state_timeout_s}, command={command_timeout_s}, min command={min_command_timeout_s}"
            )
        if estop_heartbeat_timeout < 0 or velocity_margin < 1.0 or velocity_sustain_s < 0 or wall_state_timeout_s <= 0:
            raise ValueError(
                f"need estop_heartbeat_timeout >= 0, velocity_margin >= 1, velocity_sustain_s >= 0, "
                f"wall_state_timeout_s > 0; got {estop_heartbeat_timeout}, {velocity_margin}, "
                f"{velocity_sustain_s}, {wall_state_timeout_s}"
            )
        self.profile = profile
        self.ramp_time_s = float(ramp_time_s)
        self.state_timeout_s = float(state_timeout_s)
        self.command_timeout_s = float(command_timeout_s)
        self.min_command_timeout_s = min(float(min_command_timeout_s), self.command_timeout_s)
        self.heartbeat_timeout_s = float(estop_heartbeat_timeout)
        self.wall_state_timeout_s = float(wall_state_timeout_s)
        self.arrival_margin_s = max(float(arrival_margin_s), 0.0)
        self.velocity_margin = float(velocity_margin)
        self.velocity_sustain_s = float(velocity_sustain_s)
        self.enabled = bool(start_enabled)
        # Enabled "since forever": no ramp for a robot that starts enabled.
        self._enabled_at = -np.inf if start_enabled else np.inf
        self.estop_latched = False
        self.estop_pressed = False
        self.latch_reason = ""
        self.stats = SafetyStats()
        self.last_hold_reason: str | None = None
        self._commanded: TrajectoryExecutor | None = None  # mirror of the controller
        self._measured: np.ndarray | None = None  # latest usable measurement (holds before any command)
        self._command_timeout = self.command_timeout_s  # from the horizon of the last chunk passed
        self._last_heartbeat: float | None = None
        self._last_sample: tuple[float, np.ndarray] | None = None  # (stamp, q) for the velocity monitor
        self._over_since: float | None = None

    # --- gate and stop latch --------------------------------------------------------------
    def enable(self, now: float) -> tuple[bool, str]:
        """Open the gate at `now` and start the velocity ramp. Refused while latched."""
        if self.estop_latched:
            return False, f"stop is latched ({self.latch_reason}): call reset_estop before enabling"
        if self.enabled:
            return True, "already enabled"
        self.enabled = True
        self._enabled_at = float(now)
        return True, f"enabled; velocity ramps to full over {self.ramp_time_s:.1f} s"

    def disable(self, now: float) -> None:
        """Close the gate: every later command is a hold."""
        self.enabled = False
        self._enabled_at = np.inf

    def restart_ramp(self, now: float) -> None:
        """Ramp the velocity in again from 0 (a new policy took over), as after `enable`."""
        if self.enabled:
            self._enabled_at = float(now)

    def latch(self, now: float, reason: str) -> None:
        """Latch a stop (e-stop, lost heartbeat, velocity monitor) and disable."""
        if not self.estop_latched:
            self.latch_reason = reason
        self.estop_latched = True
        self.disable(now)

    def estop(self, now: float, pressed: bool = True, wall_time: float | None = None) -> None:
        """Feed the e-stop input. Pressed latches and disables; released only records that
        the input let go (and, at `wall_time`, is a heartbeat); the latch stays until `reset_estop()`."""
        self.estop_pressed = bool(pressed)
        if pressed:
            self.latch(now, "e-stop pressed")
        elif wall_time is not None:
            self._last_heartbeat = float(wall_time)

    def heartbeat_check(self, wall_time: float) -> str | None:
        """With a heartbeat timeout set: why the e-stop counts as pressed at `wall_time` (steady
        seconds), or None. The first call starts the clock, so a relay that never speaks latches too."""
        if self.heartbeat_timeout_s <= 0.0:
            return None
        if self._last_heartbeat is None:
            self._last_heartbeat = float(wall_time)
        silent = wall_time - self._last_heartbeat
        if silent > self.heartbeat_timeout_s:
            return f"e-stop heartbeat lost: no 'false' for {silent:.3f} s (limit {self.heartbeat_timeout_s} s)"
        return None

    def reset_estop(self, wall_time: float | None = None) -> tuple[bool, str]:
        """Clear the latch (the robot stays disabled until `enable`). Refused while the e-stop
        input is still pressed or (heartbeat mode, at `wall_time`) its heartbeat is missing."""
        if self.estop_pressed:
            return False, "e-stop input is still pressed: release it first"
        if wall_time is not None and (lost := self.heartbeat_check(wall_time)) is not None:
            return False, lost
        was = self.estop_latched
        self.estop_latched = False
        self.latch_reason = ""
        self._over_since = None
        return True, "e-stop reset; call enable to resume" if was else "e-stop was not latched"

    def ramp_scale(self, now: float) -> float:
        """Fraction of the velocity limit allowed at `now`: 0 when disabled, 0 -> 1 over the ramp."""
        if not self.enabled:
            return 0.0
        if self.ramp_time_s == 0.0:
            return 1.0
        return float(np.clip((now - self._enabled_at) / self.ramp_time_s, 0.0, 1.0))

    # --- measurements ---------------------------------------------------------------------
    def observe(self, q: np.ndarray, stamp: float) -> str | None:
        """Record a measured position (profile order) stamped `stamp`. Returns a reason when the
        velocity monitor latches a stop: every sample for `velocity_sustain_s` moved faster than
        `velocity_margin` x the limit (like isaac_ros_deploy's SafetyController velocity check)."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.profile.n_joints,) or not np.all(np.isfinite(q)):
            return None
        self._measured = q
        previous, self._last_sample = self._last_sample, (float(stamp), q)
        # First sample, a clock that jumped back, or a gap (a sim reset teleports the arm between
        # episodes): one difference over a gap is no sustained speed.
        if previous is None or not 0.0 < stamp - previous[0] <= self.velocity_sustain_s / 2:
            self._over_since = None
            return None
        speed = np.abs(q - previous[1]) / (stamp - previous[0])
        over = speed > self.profile.vmax * self.velocity_margin
        if not over.any():
            self._over_since = None
            return None
        if self._over_since is None:
            self._over_since = previous[0]
        if stamp - self._over_since < self.velocity_sustain_s or self.estop_latched:
            return None
        j = int(np.argmax(speed / self.profile.vmax))
        reason = (
            f"velocity monitor: {self.profile.joint_names[j]} measured at {speed[j]:.3f} for "
            f"{stamp - self._over_since:.3f} s (limit {self.profile.vmax[j]} x margin {self.velocity_margin})"
        )
        self.latch(stamp, reason)
        return reason

    def commanded(self, now: float) -> np.ndarray | None:
        """The position the controller is commanding at `now` (the measurement if we never
        commanded), or None before any measurement."""
        if self._commanded is not None:
            return self._commanded.sample(now)
        return None if self._measured is None else self._measured.copy()

    # --- commands -------------------------------------------------------------------------
    def hold(self, now: float, stamp: float | None = None) -> ActionChunk | None:
        """The hold to send at `now`: one point at the commanded position, due after `now` on
        the controller's clock. `stamp`: the stamp of the chunk it answers (None: "start now",
        header stamp 0). None when no position is known yet (no measurement, never commanded)."""
        arrival = now if stamp is None else max(now, stamp)
        q = self.commanded(arrival)
        if q is None:
            return None
        if self._measured is not None:
            # A joint far from the mirror was moved by something else (a sim reset between episodes,
            # another controller): hold where it is. A finger squeezing within its lead keeps its grip.
            moved = np.abs(q - self._measured) > self.profile.vmax * _TRACKING_S + self.profile.lead
            q = np.where(moved, self._measured, q)
        # A measurement outside the position limits is held at the nearest limit: no command, not
        # even a stop, may leave them (the arm is already there or was pushed; JTC moves it back in).
        q = np.clip(q, self.profile.lower, self.profile.upper)
        t = (0.0 if stamp is None else arrival - stamp) + HOLD_SETTLE_S
        chunk = ActionChunk(self.profile.joint_names, q[None], np.array([t]), stamp)
        self._command(chunk, arrival, q)
        return chunk

    def _command(self, chunk: ActionChunk, arrival: float, before: np.ndarray) -> None:
        """Mirror the controller starting `chunk` at `arrival`; `before`: its position until then."""
        if self._commanded is None:
            self._commanded = TrajectoryExecutor(
                self.profile.joint_names,
                before,
                interpolate_from_desired_state=self.profile.jtc_interpolate_from_desired_state,
            )
        measured = self._measured if self._measured is not None else before
        try:
            self._commanded.set_chunk(chunk, arrival, measured=measured)
        except TrajectoryRejected:  # the controller refuses it too and runs on: so does the mirror
            pass

    def reject(self, reason: str) -> tuple[None, list[str]]:
        """Count a command that could not even be parsed (e.g. NaN in a message) as a hold."""
        self.stats.commands += 1
        self.stats.bad_input += 1
        return self.note_hold(f"bad input: {reason}")

    def upstream_hold(self, reason: str = "policy holds") -> tuple[None, list[str]]:
        """Hold a command for a reason that is not the chunk's fault (by default: the policy
        itself asked to hold with an empty trajectory)."""
        self.stats.commands += 1
        return self.note_hold(reason)

    @staticmethod
    def size_problem(n_points: int, horizon_s: float) -> str | None:
        """Why a chunk of this many points lasting `horizon_s` is too long to accept, or None."""
        if n_points > contract.MAX_CHUNK_POINTS or horizon_s > contract.MAX_CHUNK_HORIZON_S:
            return (
                f"chunk of {n_points} points over {horizon_s:.3f} s exceeds "
                f"{contract.MAX_CHUNK_POINTS} points / {contract.MAX_CHUNK_HORIZON_S} s"
            )
        return None

    def filter(
        self, chunk: ActionChunk, measured_q: np.ndarray | None, now: float, measured_time: float | None = None
    ) -> tuple[ActionChunk | None, list[str]]:
        """Make `chunk` safe to execute, or return `None` (hold) with the reasons.

        `measured_q`: the measured joint positions in profile order the chunk was computed from,
        received at `measured_time` (node clock; None skips the staleness check). The output is
        in profile joint order, keeps the input's stamp and times, lies inside the position
        limits, and no segment moves faster than `velocity_limit * ramp_scale(now)`, starting
        from the position the controller commands when the chunk arrives (the later of `now` and
        the chunk's start); the first point may lead by the profile's `tracking_lead` on top.
        Points the consumer will skip as past are pinned to that position.
        """
        self.stats.commands += 1
        names = tuple(chunk.joint_names)
        if len(names) != len(set(names)) or set(names) != set(self.profile.joint_names):
            self.stats.bad_input += 1
            return self.note_hold(
                f"bad input: chunk joints {list(names)} do not match profile "
                f"{self.profile.name} {list(self.profile.joint_names)}"
            )
        order = [names.index(n) for n in self.profile.joint_names]
        target = np.asarray(chunk.positions, dtype=np.float64)[:, order]
        times = np.asarray(chunk.times, dtype=np.float64)
        # ActionChunk validates at construction, but its arrays are mutable: trust nothing.
        if not (np.all(np.isfinite(target)) and np.all(np.isfinite(times))) or np.any(np.diff(times) <= 0):
            self.stats.bad_input += 1
            return self.note_hold("bad input: chunk contains non-finite values or non-increasing times")
        if (too_long := self.size_problem(len(times), float(times[-1]))) is not None:
            self.stats.bad_input += 1
            return self.note_hold(f"bad input: {too_long}")
        if np.isfinite(self._enabled_at) and now < self._enabled_at:
            # The clock went backwards (a restarted sim): restart the ramp rather than freeze.
            self._enabled_at = float(now)
        if self.estop_latched:
            return self.note_hold(f"stop latched: {self.latch_reason}")
        if not self.enabled:
            return self.note_hold("disabled")
        if measured_q is None:
            return self.note_hold("no joint states received")
        measured = np.asarray(measured_q, dtype=np.float64)
        if measured.shape != (self.profile.n_joints,) or not np.all(np.isfinite(measured)):
            return self.note_hold(f"measured joint positions unusable: {measured.tolist()}")
        if measured_time is not None and now - measured_time > self.state_timeout_s:
            return self.note_hold(f"joint states stale ({now - measured_time:.3f} s old)")
        if self._measured is None:  # a hold before any command stops here (the node observes every state)
            self._measured = measured.copy()

        lower, upper = self.profile.lower, self.profile.upper
        arrival = now if chunk.stamp is None else max(now, chunk.stamp)
        start = now if chunk.stamp is None else chunk.stamp
        # The latest the controller starts the chunk. A chunk answering an observation from our
        # current time (a lockstep sim: its clock waits for this answer) arrives with no delay.
        t0 = arrival + (0.0 if chunk.stamp is not None and now <= chunk.stamp else self.arrival_margin_s)
        measured = np.clip(measured, lower, upper)
        mirrored = self._commanded.sample(t0) if self._commanded is not None else measured
        following = np.abs(mirrored - measured) <= self.profile.vmax * _TRACKING_S
        anchor = np.where(following, mirrored, measured)
        jump = np.abs(target[0] - anchor) > self.profile.first_step_bound
        if jump.any():
            self.stats.bad_input += 1
            j = int(np.flatnonzero(jump)[0])
            return self.note_hold(
                f"bad input: implausible chunk: {self.profile.joint_names[j]} first point {target[0, j]:.4g} is "
                f"{abs(target[0, j] - anchor[j]):.4g} from the current command {anchor[j]:.4g} "
                f"(bound {self.profile.first_step_bound[j]:.4g})"
            )

        reasons: list[str] = []
        clamped = np.clip(target, lower, upper)
        moved = np.abs(clamped - target) > _EPS
        if moved.any():
            self.stats.clamped += 1
            joints = [self.profile.joint_names[j] for j in np.flatnonzero(moved.any(axis=0))]
            reasons.append(f"clamped to position limits: {', '.join(joints)}")

        scale = self.ramp_scale(now)
        limited, max_ratio, slowed = self._rate_limit(clamped, times, start, anchor, t0, scale)
        if self._commanded is not None and (early := start + times < t0).any():
            # Points due before t0 keep what the controller commands then (not the t0 position,
            # which would be a jump if the chunk arrives early).
            now_cmd = np.array([self._commanded.sample(t) for t in start + times[early]])
            limited[early] = np.where(following, now_cmd, limited[early])
        if slowed.any():
            self.stats.limited += 1
            joints = [self.profile.joint_names[j] for j in np.flatnonzero(slowed)]
            reasons.append(
                f"rate-limited (ramp scale {scale:.2f}, asked up to {max_ratio:.1f}x allowed): {', '.join(joints)}"
            )
        self.stats.passed += 1
        out = ActionChunk(self.profile.joint_names, limited, times, chunk.stamp)
        self._command(out, arrival, measured)
        # Stop before this chunk runs out if no other follows: half its remaining time, within bounds.
        remaining = (arrival if chunk.stamp is None else chunk.stamp) + times[-1] - arrival
        self._command_timeout = float(np.clip(remaining / 2.0, self.min_command_timeout_s, self.command_timeout_s))
        return out, reasons

    def _rate_limit(
        self, target: np.ndarray, times: np.ndarray, stamp: float | None, start_q: np.ndarray, now: float, scale: float
    ) -> tuple[np.ndarray, float, np.ndarray]:
        """Let each point move at most vmax * scale * dt from the previous output, in time order.
        Returns (positions, worst requested/allowed ratio, joints slowed).

        Points within the limit pass unchanged, checked as whole arrays; only a joint that must be
        slowed down is walked point by point from its first miss (the recursion has no closed form)."""
        vmax = self.profile.vmax * scale
        start = now if stamp is None else stamp
        due = start + times
        # The consumer starts from where the robot is at arrival, so time before `now` buys no motion.
        t_prev = np.maximum.accumulate(np.concatenate([[max(start, now)], due[:-1]]))
        allowed = vmax[None, :] * np.maximum(due - t_prev, 0.0)[:, None]
        allowed[0] += self.profile.lead * scale  # extra room for the first point only: a squeeze, not a speed
        # Vectorised: assume every output equals its target and find, per joint, the first miss.
        prev = np.vstack([start_q[None], target[:-1]])
        missed = np.abs(target - prev) > allowed + _EPS
        out = target.copy()
        slowed = np.zeros(target.shape[1], dtype=bool)
        max_ratio = 0.0
        for j in np.flatnonzero(missed.any(axis=0)):
            # Joints are independent: walk this one from its first miss, in plain floats (the same
            # IEEE operations as the per-row numpy loop this replaced, so the same bits).
            first = int(np.argmax(missed[:, j]))
            q = float(prev[first, j])
            goal, room, col = target[first:, j].tolist(), allowed[first:, j].tolist(), []
            for t, a in zip(goal, room, strict=True):
                step = t - q
                if abs(step) > a + _EPS:
                    slowed[j] = True
                    max_ratio = max(max_ratio, abs(step) / max(a, _EPS))
                    q = q + min(max(step, -a), a)
                else:
                    q = t  # untouched points keep the exact target (no float drift past a limit)
                col.append(q)
            out[first:, j] = col
        # Every output lies between two in-limit positions; the clip only removes float noise.
        return np.clip(out, self.profile.lower, self.profile.upper), max_ratio, slowed

    def note_hold(self, reason: str) -> tuple[None, list[str]]:
        """Count a hold and remember why (for diagnostics)."""
        self.stats.held += 1
        self.last_hold_reason = reason
        return None, [reason]

    def diagnostic_summary(self, errors: list[str], watchdog_reason: str | None) -> tuple[str, str]:
        """(level, message) for /diagnostics given the errors since the last report and the
        watchdog's current reason: ERROR while latched or after errors, WARN while the watchdog holds."""
        if self.estop_latched:
            return "ERROR", f"stop latched: {self.latch_reason}"
        if errors:
            return "ERROR", f"{len(errors)} error(s): {errors[-1]}"
        if watchdog_reason is not None:
            return "WARN", f"watchdog: {watchdog_reason}"
        return "OK", "enabled" if self.enabled else "disabled"

    def diagnostic_values(self, now: float) -> dict[str, object]:
        """The filter's state and counters for /diagnostics."""
        return {
            "enabled": self.enabled,
            "estop_latched": self.estop_latched,
            "estop_pressed": self.estop_pressed,
            "latch_reason": self.latch_reason,
            "ramp_scale": f"{self.ramp_scale(now):.3f}",
            **vars(self.stats),
            "last_hold_reason": self.last_hold_reason or "",
        }

    # --- watchdog -------------------------------------------------------------------------
    def check(
        self, now: float, last_state_time: float | None, last_command_time: float | None, wall_silence: float = 0.0
    ) -> str | None:
        """Why the robot must hold right now, or None. Times are when the last joint state and
        the last policy command were received (node clock); None means never. Commands time out
        after half the remaining horizon of the last chunk passed (within
        [min_command_timeout_s, command_timeout_s]), so the arm stops before it runs out.
        `wall_silence`: wall-clock seconds since the last joint state, for a node clock that
        may have stopped with the sim (sim time)."""
        if last_state_time is None:
            return "no joint states received"
        if wall_silence > self.wall_state_timeout_s:
            limit = self.wall_state_timeout_s
            return f"no joint states for {wall_silence:.1f} s wall-clock (limit {limit} s): sim or driver stopped?"
        if now - last_state_time > self.state_timeout_s:
            return f"joint states stale: last one {now - last_state_time:.3f} s ago (limit {self.state_timeout_s} s)"
        if self.enabled and last_command_time is not None:
            # Commands from before enabling don't count: the timeout runs from whichever is later.
            since = now - max(last_command_time, self._enabled_at)
            if since > self._command_timeout:
                return f"commands stopped: none for {since:.3f} s (limit {self._command_timeout:.3f} s)"
        return None
