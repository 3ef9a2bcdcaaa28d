"""The safety filter between a policy and the joint trajectory controller (pure numpy).

Every chunk a policy publishes passes through `SafetyFilter.filter` before it reaches the
controller. The filter never invents motion: it either passes a chunk that is inside the
robot's position limits and velocity envelope, or answers with a hold (`None`), which the
node publishes as a JointTrajectory with zero points (ros2 JointTrajectoryController's
"cancel and hold the current command").

All times are seconds on the node's clock (sim time under `use_sim_time`); positions are
radians (revolute) or metres (prismatic), in the robot profile's joint order.

State machine:
- enable gate: disabled -> every command is a hold. After `enable(now)` the allowed
  velocity ramps linearly from 0 to the profile's limit over `ramp_time_s`, so a freshly
  enabled robot starts slowly. `start_enabled=True` means "enabled before we started":
  full speed at once (sim and mock hardware).
- e-stop: `estop(now)` latches. A released e-stop input does not unlatch it; only
  `reset_estop()` does (refused while the input is still pressed), and the robot then
  stays disabled until `enable()` is called again.
- watchdog: `check()` says why to hold when joint states go stale or the policy stops
  sending while enabled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dexstack.hardware.profiles import RobotProfile
from dexstack.trajectory import ActionChunk

# Changes smaller than this (rad or m) are float noise, not a clamp or a rate limit.
_EPS = 1e-9


@dataclass
class SafetyStats:
    """Counters for diagnostics; they only grow."""

    commands: int = 0  # chunks offered to `filter` (including rejected ones)
    passed: int = 0  # chunks forwarded (possibly modified)
    clamped: int = 0  # chunks with at least one point moved inside the position limits
    limited: int = 0  # chunks slowed down by the velocity limit
    held: int = 0  # commands answered with a hold (gate, e-stop, bad input, stale state)
    bad_input: int = 0  # commands rejected because the chunk itself was invalid


class SafetyFilter:
    """Clamp, rate-limit and gate action chunks for one robot profile."""

    def __init__(
        self,
        profile: RobotProfile,
        ramp_time_s: float = 2.0,
        state_timeout_s: float = 0.2,
        command_timeout_s: float = 1.0,
        start_enabled: bool = False,
    ) -> None:
        if ramp_time_s < 0 or state_timeout_s <= 0 or command_timeout_s <= 0:
            raise ValueError(
                f"timeouts must be positive and ramp_time_s >= 0, got ramp={ramp_time_s}, "
                f"state={state_timeout_s}, command={command_timeout_s}"
            )
        self.profile = profile
        self.ramp_time_s = float(ramp_time_s)
        self.state_timeout_s = float(state_timeout_s)
        self.command_timeout_s = float(command_timeout_s)
        self.enabled = bool(start_enabled)
        # Enabled "since forever": no ramp for a robot that starts enabled.
        self._enabled_at = -np.inf if start_enabled else np.inf
        self.estop_latched = False
        self.estop_pressed = False
        self.stats = SafetyStats()
        self.last_hold_reason: str | None = None

    # --- gate and e-stop ----------------------------------------------------------------
    def enable(self, now: float) -> tuple[bool, str]:
        """Open the gate at `now` and start the velocity ramp. Refused while e-stopped."""
        if self.estop_latched:
            return False, "e-stop is latched: call reset_estop before enabling"
        if self.enabled:
            return True, "already enabled"
        self.enabled = True
        self._enabled_at = float(now)
        return True, f"enabled; velocity ramps to full over {self.ramp_time_s:.1f} s"

    def disable(self, now: float) -> None:
        """Close the gate: every later command is a hold."""
        self.enabled = False
        self._enabled_at = np.inf

    def estop(self, now: float, pressed: bool = True) -> None:
        """Feed the e-stop input. Pressed latches and disables; released only records that
        the input let go, the latch stays until `reset_estop()`."""
        self.estop_pressed = bool(pressed)
        if pressed:
            self.estop_latched = True
            self.disable(now)

    def reset_estop(self) -> tuple[bool, str]:
        """Clear the latch (the robot stays disabled until `enable`). Refused while the
        e-stop input is still pressed."""
        if self.estop_pressed:
            return False, "e-stop input is still pressed: release it first"
        was = self.estop_latched
        self.estop_latched = False
        return True, "e-stop reset; call enable to resume" if was else "e-stop was not latched"

    def ramp_scale(self, now: float) -> float:
        """Fraction of the velocity limit allowed at `now`: 0 when disabled, 0 -> 1 over the ramp."""
        if not self.enabled:
            return 0.0
        if self.ramp_time_s == 0.0:
            return 1.0
        return float(np.clip((now - self._enabled_at) / self.ramp_time_s, 0.0, 1.0))

    # --- commands -----------------------------------------------------------------------
    def reject(self, reason: str) -> tuple[None, list[str]]:
        """Count a command that could not even be parsed (e.g. NaN in a message) as a hold."""
        self.stats.commands += 1
        self.stats.bad_input += 1
        return self._hold(f"bad input: {reason}")

    def upstream_hold(self) -> tuple[None, list[str]]:
        """The policy itself asked to hold (an empty trajectory): relay it, it is not bad input."""
        self.stats.commands += 1
        return self._hold("policy holds")

    def filter(
        self, chunk: ActionChunk, measured_q: np.ndarray | None, now: float, measured_time: float | None = None
    ) -> tuple[ActionChunk | None, list[str]]:
        """Make `chunk` safe to execute, or return `None` (hold) with the reasons.

        `measured_q`: the latest measured joint positions in profile order, received at
        `measured_time` (node clock; None skips the staleness check). The output is in
        profile joint order, keeps the input's stamp and times, lies inside the position
        limits, and no segment moves faster than `velocity_limit * ramp_scale(now)`,
        starting from the (clamped) measured position at the later of `now` and the
        chunk's start; the first point may lead by the profile's `tracking_lead` on top. Points
        the consumer will skip as past are pinned to that position.
        """
        self.stats.commands += 1
        names = tuple(chunk.joint_names)
        if len(names) != len(set(names)) or set(names) != set(self.profile.joint_names):
            self.stats.bad_input += 1
            return self._hold(
                f"bad input: chunk joints {list(names)} do not match profile "
                f"{self.profile.name} {list(self.profile.joint_names)}"
            )
        order = [names.index(n) for n in self.profile.joint_names]
        target = np.asarray(chunk.positions, dtype=np.float64)[:, order]
        times = np.asarray(chunk.times, dtype=np.float64)
        # ActionChunk validates at construction, but its arrays are mutable: trust nothing.
        if not (np.all(np.isfinite(target)) and np.all(np.isfinite(times))) or np.any(np.diff(times) <= 0):
            self.stats.bad_input += 1
            return self._hold("bad input: chunk contains non-finite values or non-increasing times")
        if np.isfinite(self._enabled_at) and now < self._enabled_at:
            # The clock went backwards (a restarted sim): restart the ramp rather than freeze.
            self._enabled_at = float(now)
        if self.estop_latched:
            return self._hold("e-stop latched")
        if not self.enabled:
            return self._hold("disabled")
        if measured_q is None:
            return self._hold("no joint states received")
        measured = np.asarray(measured_q, dtype=np.float64)
        if measured.shape != (self.profile.n_joints,) or not np.all(np.isfinite(measured)):
            return self._hold(f"measured joint positions unusable: {measured.tolist()}")
        if measured_time is not None and now - measured_time > self.state_timeout_s:
            return self._hold(f"joint states stale ({now - measured_time:.3f} s old)")

        reasons: list[str] = []
        lower, upper = self.profile.lower, self.profile.upper
        clamped = np.clip(target, lower, upper)
        moved = np.abs(clamped - target) > _EPS
        if moved.any():
            self.stats.clamped += 1
            joints = [self.profile.joint_names[j] for j in np.flatnonzero(moved.any(axis=0))]
            reasons.append(f"clamped to position limits: {', '.join(joints)}")

        scale = self.ramp_scale(now)
        limited, max_ratio, slowed = self._rate_limit(
            clamped, times, chunk.stamp, np.clip(measured, lower, upper), now, scale
        )
        if slowed.any():
            self.stats.limited += 1
            joints = [self.profile.joint_names[j] for j in np.flatnonzero(slowed)]
            reasons.append(
                f"rate-limited (ramp scale {scale:.2f}, asked up to {max_ratio:.1f}x allowed): {', '.join(joints)}"
            )
        self.stats.passed += 1
        return ActionChunk(self.profile.joint_names, limited, times, chunk.stamp), reasons

    def _rate_limit(
        self, target: np.ndarray, times: np.ndarray, stamp: float | None, start_q: np.ndarray, now: float, scale: float
    ) -> tuple[np.ndarray, float, np.ndarray]:
        """Walk the points in time order, letting each move at most vmax * scale * dt from the
        previous output. Returns (positions, worst requested/allowed ratio, joints slowed)."""
        vmax = self.profile.vmax * scale
        lead = self.profile.lead * scale  # extra room for the first point only: a squeeze, not a speed
        start = now if stamp is None else stamp
        # The consumer starts from where the robot is at arrival, so time before `now` buys no motion.
        t_prev = max(start, now)
        q_prev = start_q
        out = np.empty_like(target)
        slowed = np.zeros(target.shape[1], dtype=bool)
        max_ratio = 0.0
        for i, due in enumerate(start + times):
            dt = max(due - t_prev, 0.0)
            step = target[i] - q_prev
            allowed = vmax * dt + (lead if i == 0 else 0.0)
            too_fast = np.abs(step) > allowed + _EPS
            if too_fast.any():
                slowed |= too_fast
                ratio = np.abs(step[too_fast]) / np.maximum(allowed[too_fast], _EPS)
                max_ratio = max(max_ratio, float(ratio.max()))
            # Untouched joints keep the exact target (no float drift past a limit).
            q_prev = np.where(too_fast, q_prev + np.clip(step, -allowed, allowed), target[i])
            out[i] = q_prev
            t_prev = max(t_prev, due)
        # Every output lies between two in-limit positions; the clip only removes float noise.
        return np.clip(out, self.profile.lower, self.profile.upper), max_ratio, slowed

    def _hold(self, reason: str) -> tuple[None, list[str]]:
        self.stats.held += 1
        self.last_hold_reason = reason
        return None, [reason]

    # --- watchdog -----------------------------------------------------------------------
    def check(self, now: float, last_state_time: float | None, last_command_time: float | None) -> str | None:
        """Why the robot must hold right now, or None. Times are when the last joint state and
        the last policy command were received (node clock); None means never."""
        if last_state_time is None:
            return "no joint states received"
        if now - last_state_time > self.state_timeout_s:
            return f"joint states stale: last one {now - last_state_time:.3f} s ago (limit {self.state_timeout_s} s)"
        if self.enabled and last_command_time is not None:
            # Commands from before enabling don't count: the timeout runs from whichever is later.
            since = now - max(last_command_time, self._enabled_at)
            if since > self.command_timeout_s:
                return f"commands stopped: none for {since:.3f} s (limit {self.command_timeout_s} s)"
        return None
