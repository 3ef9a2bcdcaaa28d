"""Whether a joint trajectory is a safe command for a robot: the check `bench/soak.py` and the
property tests (tests/test_properties.py) apply to every message on the controller topic.

A safe command names exactly the profile's joints (any order, no repeats), has finite positions
inside the position limits, strictly increasing point times, and no segment between consecutive
points faster than the velocity limit. Positions in radians / metres, times in seconds from the
trajectory's start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dexstack.hardware.profiles import RobotProfile

LIMIT_TOL = 1e-6  # rad or m: float noise on a limit is not a violation
# A segment may move what the velocity limit allows over its duration plus this much time: the
# safety filter and the executors work in float64 epoch seconds, which resolve ~0.24 us at 1.8e9 s,
# so a segment's duration is only known to that (a 54 ns segment may be treated as 240 ns).
TIME_TOL_S = 1e-6


def command_violation(
    profile: RobotProfile, joint_names: Sequence[str], positions: Sequence[Sequence[float]], times: Sequence[float]
) -> str | None:
    """Why (joint_names, positions (T, J), times (T,)) is not a safe command, or None. A trajectory
    without points carries no motion and passes if its joint names do."""
    names = list(joint_names)
    if len(set(names)) != len(names) or set(names) != set(profile.joint_names):
        return f"joint names {names} are not the profile's {list(profile.joint_names)}"
    if len(positions) == 0:
        return None
    if any(len(p) != len(names) for p in positions) or len(times) != len(positions):
        return "points do not all have one position per joint and a time"
    order = [names.index(n) for n in profile.joint_names]
    q = np.asarray(positions, dtype=np.float64)[:, order]
    t = np.asarray(times, dtype=np.float64)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
        return "non-finite position or time"
    outside = (q < profile.lower - LIMIT_TOL) | (q > profile.upper + LIMIT_TOL)
    if outside.any():
        j = int(np.flatnonzero(outside.any(axis=0))[0])
        return f"{profile.joint_names[j]} outside [{profile.lower[j]}, {profile.upper[j]}]: {q[:, j].tolist()}"
    if np.any(np.diff(t) <= 0):
        return f"point times not strictly increasing: {t.tolist()}"
    if len(t) > 1:
        # Displacement over what the limit allows (with TIME_TOL_S of slack): > 1 is too fast.
        ratio = np.abs(np.diff(q, axis=0)) / ((np.diff(t)[:, None] + TIME_TOL_S) * profile.vmax)
        if ratio.max() > 1.0:
            i, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            speed = abs(q[i + 1, j] - q[i, j]) / (t[i + 1] - t[i]) / profile.vmax[j]
            return f"{profile.joint_names[j]} at {speed:.3f}x its velocity limit between points {i} and {i + 1}"
    return None
