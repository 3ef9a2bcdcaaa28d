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
# Relative to the limit. Consumers compute segment durations from float64 epoch seconds (resolution
# ~0.24 us at 1.8e9 s), which is ~1e-5 of a 20 ms segment: a speed within that of the limit is at it.
VELOCITY_TOL = 1e-4


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
        ratio = np.abs(np.diff(q, axis=0)) / np.diff(t)[:, None] / profile.vmax
        if ratio.max() > 1.0 + VELOCITY_TOL:
            i, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            return f"{profile.joint_names[j]} at {ratio[i, j]:.3f}x its velocity limit between points {i} and {i + 1}"
    return None
