"""Hypothesis strategies for arbitrary ROS message contents, and builders that turn a drawn spec
into the message.

A strategy draws a plain dict (readable when hypothesis reports a failing example); `build_*`
makes the message from it at test time, because a stamp is often drawn relative to the node's
clock ("now", or the stamp of the last joint state) which only the test knows.
"""

from __future__ import annotations

import json
import math

import numpy as np
from builtin_interfaces.msg import Duration, Time
from hypothesis import strategies as st
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexstack.hardware.profiles import PANDA

INT32 = (-(2**31), 2**31 - 1)
UINT32_MAX = 2**32 - 1
NASTY = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e30, -1e30, 5e-324, -0.0]

# Any float a message field can carry, and the finite ones a sane producer sends.
any_float = st.one_of(st.sampled_from(NASTY), st.floats(allow_nan=True, allow_infinity=True, width=64))
sane_float = st.floats(-3.5, 3.5, allow_nan=False)


def joint_names(profile=PANDA) -> st.SearchStrategy[list[str]]:
    """The profile's names, shuffled, with one repeated or missing, unknown or empty ones."""
    names = list(profile.joint_names)
    return st.one_of(
        st.just(names),
        st.permutations(names),
        st.builds(
            lambda i, j: names[:i] + [names[j]] + names[i + 1 :],
            st.integers(0, len(names) - 1),
            st.integers(0, len(names) - 1),
        ),
        st.builds(lambda i: names + [names[i]], st.integers(0, len(names) - 1)),
        st.builds(lambda i: names[:i] + names[i + 1 :], st.integers(0, len(names) - 1)),
        st.lists(st.sampled_from(names + ["", "bogus", "panda_joint8"]), max_size=len(names) + 2),
    )


def stamps() -> st.SearchStrategy[tuple]:
    """("now", offset s) on the node's clock, ("last_state",) the latest joint state's stamp,
    ("zero",) a zero stamp (ROS "now"), or ("raw", sec, nanosec) anything the fields hold."""
    return st.one_of(
        st.tuples(st.just("now"), st.floats(-0.3, 0.05)),
        st.just(("last_state",)),
        st.just(("zero",)),
        st.tuples(st.just("raw"), st.integers(*INT32), st.integers(0, UINT32_MAX)),
    )


def positions(width: int, profile=PANDA, sane_only: bool = False) -> st.SearchStrategy[list[float]]:
    """A position vector of `width` values: near home, anywhere in (and around) the limits, or
    (unless `sane_only`) containing garbage."""
    home = list(profile.home)
    if width == len(home):
        near_home = st.lists(st.floats(-0.2, 0.2), min_size=width, max_size=width).map(
            lambda d: [h + x for h, x in zip(home, d, strict=True)]
        )
    else:
        near_home = st.lists(sane_float, min_size=width, max_size=width)
    sane = st.lists(sane_float, min_size=width, max_size=width)
    if sane_only:
        return st.one_of(near_home, sane)
    return st.one_of(near_home, sane, st.lists(any_float, min_size=width, max_size=width))


@st.composite
def joint_state_specs(draw, profile=PANDA, valid: bool = False) -> dict:
    """A JointState spec; `valid`: what a healthy driver sends (the profile's joints in any order,
    near home, stamped now), so that sequences also reach the paths that move the arm."""
    if valid:
        names = draw(st.permutations(list(profile.joint_names)))
        home = dict(zip(profile.joint_names, profile.home, strict=True))
        offsets = draw(st.lists(st.floats(-0.2, 0.2), min_size=len(names), max_size=len(names)))
        position = [home[n] + d for n, d in zip(names, offsets, strict=True)]
        return {"names": names, "position": position, "velocity": [], "stamp": ("now", 0.0)}
    names = draw(joint_names(profile))
    ragged = draw(st.booleans()) and draw(st.booleans())
    width = draw(st.integers(0, len(names) + 2)) if ragged else len(names)
    return {
        "names": names,
        "position": draw(positions(width, profile)),
        "velocity": draw(st.lists(any_float, max_size=len(names) + 1)),
        "stamp": draw(stamps()),
    }


# Steps between consecutive points, ns: anything from 1 ns to beyond what a Duration's sec holds.
STEP_NS = st.one_of(st.integers(1, 10**8), st.sampled_from([1, 20_000_000, 10**9, 2**31 * 10**9]))


def durations() -> st.SearchStrategy[list[tuple[int, int]]]:
    """time_from_start of each point: uniform steps (the policies' chunks), increasing steps of
    any size (1 ns to the field's limit, nanosec not normalised), or anything."""
    raw = st.tuples(st.integers(*INT32), st.integers(0, UINT32_MAX))
    return st.one_of(
        st.tuples(st.sampled_from([0.02, 0.05, 0.1]), st.integers(0, 12)).map(
            lambda a: [_split(a[0] * (i + 1)) for i in range(a[1])]
        ),
        st.lists(STEP_NS, min_size=1, max_size=10).map(_increasing),
        st.lists(st.one_of(raw, st.tuples(st.integers(0, 3), st.integers(0, 10**9))), max_size=10),
    )


def _increasing(steps_ns: list[int]) -> list[tuple[int, int]]:
    """Cumulative steps as (sec, nanosec) a Duration can hold; the last point may carry up to
    2**32 - 1 ns in nanosec on top of the largest sec (the fields allow it)."""
    out, total = [], 0
    for step in steps_ns:
        total += step
        sec = min(total // 10**9, INT32[1])
        nanosec = min(total - sec * 10**9, UINT32_MAX)
        if out and (sec, nanosec) <= out[-1]:
            break
        out.append((sec, nanosec))
    return out


@st.composite
def trajectory_specs(draw, profile=PANDA, max_points: int = 300, valid: bool = False) -> dict:
    """A JointTrajectory spec; `valid`: a policy's chunk (the profile's joints in any order, finite
    positions, increasing times, stamped with the last joint state or now), its positions still
    anywhere from near home to far outside the limits."""
    if valid:
        names = draw(st.permutations(list(profile.joint_names)))
        times = draw(
            st.one_of(
                st.tuples(st.sampled_from([0.02, 0.1]), st.integers(1, 12)).map(
                    lambda a: [_split(a[0] * (i + 1)) for i in range(a[1])]
                ),
                st.lists(STEP_NS, min_size=1, max_size=10).map(_increasing),
            )
        )
        far = st.floats(-1e308, 1e308, allow_nan=False, allow_infinity=False)
        finite = st.one_of(
            positions(len(names), profile, sane_only=True), st.lists(far, min_size=len(names), max_size=len(names))
        )
        points = [draw(finite) for _ in times]
        stamp = draw(st.one_of(st.just(("last_state",)), st.tuples(st.just("now"), st.floats(-0.1, 0.0))))
        return {"names": names, "points": points, "times": times, "stamp": stamp}
    names = draw(joint_names(profile))
    times = draw(durations())
    if draw(st.integers(0, 20)) == 0:  # now and then a long chunk
        n = draw(st.integers(13, max_points))
        times = [_split(0.02 * (i + 1)) for i in range(n)]
    points = []
    for _ in times:
        ragged = draw(st.integers(0, 15)) == 0
        width = draw(st.integers(0, len(names) + 2)) if ragged else len(names)
        points.append(draw(positions(width, profile)))
    return {"names": names, "points": points, "times": times, "stamp": draw(stamps())}


@st.composite
def image_specs(draw, width: int = 96, height: int = 96, valid: bool = False) -> dict:
    """An Image that is right (`width` x `height` rgb8) or wrong in one or more ways; `valid`:
    always right, stamped now."""
    if valid:
        fill = draw(st.integers(0, 255))
        return {
            "encoding": "rgb8",
            "width": width,
            "height": height,
            "step": width * 3,
            "bytes": width * height * 3,
            "fill": fill,
            "is_bigendian": 0,
            "stamp": ("now", 0.0),
        }
    encoding = draw(st.sampled_from(["rgb8", "rgb8", "rgb8", "bgr8", "rgba8", "mono8", "16UC1", "32FC1", "", "jpeg"]))
    size = draw(st.sampled_from([(width, height), (width, height), (0, 0), (1, 1), (width, height + 1), (640, 480)]))
    channels = {"rgba8": 4, "mono8": 1, "16UC1": 2, "32FC1": 4}.get(encoding, 3)
    step = size[0] * channels + draw(st.sampled_from([0, 0, 0, 1, -1]))
    length = step * size[1] + draw(st.sampled_from([0, 0, 0, -1, 1, -(step * size[1])]))
    return {
        "encoding": encoding,
        "width": size[0],
        "height": size[1],
        "step": max(step, 0),
        "bytes": max(length, 0),
        "fill": draw(st.integers(0, 255)),
        "is_bigendian": draw(st.sampled_from([0, 0, 1])),
        "stamp": draw(stamps()),
    }


def episode_texts() -> st.SearchStrategy[str]:
    """What arrives on /sim/episode: the sim's JSON object, other JSON, or any text."""
    number = st.one_of(any_float, st.integers(-(2**70), 2**70))
    obj = st.fixed_dictionaries(
        {"episode": st.one_of(st.integers(0, 5), st.none(), st.text(max_size=3))},
        optional={
            "seed": st.one_of(st.integers(-5, 5), st.lists(st.integers(), max_size=2)),
            "stamp": st.one_of(number, st.text(max_size=3), st.none()),
            "status": st.sampled_from(["running", "done", "", "weird"]),
            "success": st.one_of(st.booleans(), st.none(), st.integers(0, 1), st.text(max_size=3)),
            "instruction": st.text(max_size=10),
        },
    )
    return st.one_of(
        obj.map(json.dumps),
        st.recursive(
            st.one_of(st.none(), st.booleans(), number, st.text(max_size=5)), lambda c: st.lists(c, max_size=3)
        ).map(json.dumps),
        st.text(max_size=30),
    )


# --- builders -----------------------------------------------------------------------------
def _split(seconds: float) -> tuple[int, int]:
    ns = int(round(seconds * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000


def build_stamp(spec: tuple, now: float, last_state: Time | None) -> Time:
    if spec[0] == "now":
        sec, nanosec = _split(now + spec[1])
        return Time(sec=max(sec, 0), nanosec=nanosec)
    if spec[0] == "last_state":
        return Time(sec=last_state.sec, nanosec=last_state.nanosec) if last_state is not None else Time()
    if spec[0] == "raw":
        return Time(sec=spec[1], nanosec=spec[2])
    return Time()


def build_joint_state(spec: dict, now: float, last_state: Time | None) -> JointState:
    msg = JointState(name=spec["names"], position=spec["position"], velocity=spec["velocity"])
    msg.header.stamp = build_stamp(spec["stamp"], now, last_state)
    return msg


def build_trajectory(spec: dict, now: float, last_state: Time | None) -> JointTrajectory:
    msg = JointTrajectory(joint_names=spec["names"])
    msg.header.stamp = build_stamp(spec["stamp"], now, last_state)
    msg.points = [
        JointTrajectoryPoint(positions=q, time_from_start=Duration(sec=t[0], nanosec=t[1]))
        for q, t in zip(spec["points"], spec["times"], strict=True)
    ]
    return msg


def build_image(spec: dict, now: float, last_state: Time | None, frame_id: str = "camera") -> Image:
    msg = Image(
        encoding=spec["encoding"],
        width=spec["width"],
        height=spec["height"],
        step=spec["step"],
        is_bigendian=spec["is_bigendian"],
    )
    msg.header.stamp = build_stamp(spec["stamp"], now, last_state)
    msg.header.frame_id = frame_id
    # Varied pixels, cheap to make: a ramp offset by the drawn fill byte.
    msg.data = ((np.arange(spec["bytes"], dtype=np.uint32) + spec["fill"]) % 256).astype(np.uint8).tobytes()
    return msg
