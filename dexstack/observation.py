"""Observation assembly for the policy node, without ROS.

The policy node converts each incoming message to an array and hands it here; this module
decides what the policy may act on. It keeps the last few samples of every manifest input
(keyed by the input's name) and answers two questions:

- `latest(now_ns)` (timer trigger, real time): the newest sample of each input, checked for
  staleness against the node's clock, shape and finiteness (BRIEF §2: latest message of each
  topic with a staleness check, not exact synchronisation);
- `take_matched(now_ns)` (observation trigger, lockstep sim): the newest set in which every
  input carries the SAME stamp, newer than the last set answered; each stamp is answered once.

Either returns an `Assembly`: an observation to act on, or a `HoldReason` saying why the
node must hold instead. Stamps are integer nanoseconds so that "same stamp" is exact.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dexstack import contract

JOINT_POSITIONS_KIND = "joint_positions"
RGB_KIND = "rgb"
DEPTH_KIND = "depth"

# How old (seconds, on the node's clock) each kind of input may be before the policy holds.
MAX_AGE_S: dict[str, float] = {
    JOINT_POSITIONS_KIND: contract.JOINT_STATE_MAX_AGE_S,
    RGB_KIND: contract.CAMERA_MAX_AGE_S,
    DEPTH_KIND: contract.CAMERA_MAX_AGE_S,
}

NS = 1_000_000_000


@dataclass(frozen=True)
class HoldReason:
    """Why the node holds instead of commanding. WARN: input stale or missing; ERROR: bad input
    or bad policy output (the diagnostics level the node reports)."""

    level: Literal["WARN", "ERROR"]
    message: str


@dataclass(frozen=True)
class Assembly:
    """The result of assembling one observation.

    `stamp_ns` is the stamp the answer (chunk or hold) must carry: the stamp of the primary
    input (the first joint-positions input, else the first input), or the clock time when
    that input has never arrived. `observation` is set iff `hold` is None. `age_s` is the age
    of the oldest input used (seconds, node clock), None if an input was missing.
    """

    stamp_ns: int
    observation: dict[str, np.ndarray] | None
    hold: HoldReason | None
    age_s: float | None


@dataclass(frozen=True)
class _Sample:
    stamp_ns: int
    value: np.ndarray | None  # None when the message could not be converted
    error: str | None


class ObservationAssembler:
    """Keeps the last `history` samples of every input named by a manifest's `inputs`.

    Each input spec is a manifest dict with at least `name`, `kind` (joint_positions | rgb |
    depth), `source` (topic) and `shape`; `dtype` (numpy name) is applied when present.
    Raises ValueError for an input kind this assembler does not know.
    """

    def __init__(self, inputs: list[dict[str, Any]], history: int = 8) -> None:
        if not inputs:
            raise ValueError("manifest declares no inputs")
        self.inputs = list(inputs)
        for spec in self.inputs:
            for key in ("name", "kind", "source", "shape"):
                if key not in spec:
                    raise ValueError(f"manifest input {spec.get('name', spec)!r} lacks {key!r}")
            if spec["kind"] not in MAX_AGE_S:
                raise ValueError(f"input {spec['name']!r}: unsupported kind {spec['kind']!r}; "
                                 f"supported: {sorted(MAX_AGE_S)}")
        names = [s["name"] for s in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"manifest input names are not unique: {names}")
        self._specs = {s["name"]: s for s in self.inputs}
        joint_inputs = [s["name"] for s in self.inputs if s["kind"] == JOINT_POSITIONS_KIND]
        self.primary = joint_inputs[0] if joint_inputs else names[0]
        self._samples: dict[str, deque[_Sample]] = {n: deque(maxlen=history) for n in names}
        self._by_source: dict[str, list[dict[str, Any]]] = {}
        for spec in self.inputs:
            self._by_source.setdefault(spec["source"], []).append(spec)
        self.answered_ns: int | None = None  # newest stamp answered by take_matched
        self.time_jumps = 0  # how often an input's stamps went backwards (sim reset)

    # --- wiring -------------------------------------------------------------------------
    def sources(self) -> dict[str, list[dict[str, Any]]]:
        """Input specs grouped by source topic, in manifest order (do not modify)."""
        return self._by_source

    # --- feeding ------------------------------------------------------------------------
    def add(self, name: str, stamp_ns: int, value: np.ndarray) -> None:
        """Store a converted sample of input `name` taken at `stamp_ns`."""
        self._push(name, _Sample(int(stamp_ns), np.asarray(value), None))

    def add_invalid(self, name: str, stamp_ns: int, error: str) -> None:
        """Record that the message for `name` at `stamp_ns` could not be converted: acting on
        that stamp yields an ERROR hold with `error` instead of silently using an older sample."""
        self._push(name, _Sample(int(stamp_ns), None, error))

    def _push(self, name: str, sample: _Sample) -> None:
        if name not in self._samples:
            raise KeyError(f"no input named {name!r}; inputs: {list(self._samples)}")
        buf = self._samples[name]
        if buf and sample.stamp_ns < buf[-1].stamp_ns:
            # Time went backwards (the sim restarted its clock for a new episode): samples of
            # the old timeline can never match new ones, and old answers say nothing now.
            buf.clear()
            self.answered_ns = None
            self.time_jumps += 1
        if buf and buf[-1].stamp_ns == sample.stamp_ns:
            buf[-1] = sample  # a re-send of the same stamp replaces the earlier one
        else:
            buf.append(sample)

    def carry_over_from(self, other: ObservationAssembler) -> None:
        """Adopt the samples of inputs that `other` also has (same name, kind and source) and
        its answered stamp, so a hot-swap neither waits for fresh messages nor re-answers."""
        for name, spec in self._specs.items():
            old = other._specs.get(name)
            if old is not None and old["kind"] == spec["kind"] and old["source"] == spec["source"]:
                self._samples[name].extend(other._samples[name])
        self.answered_ns = other.answered_ns

    # --- assembling ---------------------------------------------------------------------
    def latest(self, now_ns: int) -> Assembly:
        """Timer trigger: the newest sample of every input, checked against the clock `now_ns`."""
        chosen: dict[str, _Sample] = {}
        missing = []
        for name, buf in self._samples.items():
            if buf:
                chosen[name] = buf[-1]
            else:
                missing.append(name)
        primary = chosen.get(self.primary)
        stamp_ns = primary.stamp_ns if primary is not None else int(now_ns)
        if missing:
            waits = ", ".join(f"{n} ({self._specs[n]['source']})" for n in missing)
            return Assembly(stamp_ns, None, HoldReason("WARN", f"no message yet for {waits}"), None)
        return self._check(chosen, stamp_ns, now_ns)

    def take_matched(self, now_ns: int) -> Assembly | None:
        """Observation trigger: the newest stamp present in every input and newer than the
        last one answered, or None if no such complete set exists yet. The stamp is marked
        answered, so each stamp is answered exactly once."""
        common: set[int] | None = None
        for buf in self._samples.values():
            stamps = {s.stamp_ns for s in buf}
            common = stamps if common is None else common & stamps
            if not common:
                return None
        candidates = [t for t in common if self.answered_ns is None or t > self.answered_ns]
        if not candidates:
            return None
        stamp_ns = max(candidates)
        chosen = {name: next(s for s in buf if s.stamp_ns == stamp_ns) for name, buf in self._samples.items()}
        self.answered_ns = stamp_ns
        return self._check(chosen, stamp_ns, now_ns)

    def _check(self, chosen: dict[str, _Sample], stamp_ns: int, now_ns: int) -> Assembly:
        # Bad input (ERROR) is reported before staleness (WARN): garbage is garbage at any age.
        observation: dict[str, np.ndarray] = {}
        for name, sample in chosen.items():
            spec = self._specs[name]
            where = f"{name} ({spec['source']})"
            if sample.error is not None:
                return Assembly(stamp_ns, None, HoldReason("ERROR", f"{where}: {sample.error}"), None)
            value = sample.value
            if tuple(value.shape) != tuple(spec["shape"]):
                return Assembly(stamp_ns, None, HoldReason(
                    "ERROR", f"{where}: shape {tuple(value.shape)}, expected {tuple(spec['shape'])}"), None)
            if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
                return Assembly(stamp_ns, None, HoldReason("ERROR", f"{where}: contains NaN or inf"), None)
            if "dtype" in spec and value.dtype != np.dtype(spec["dtype"]):
                value = value.astype(spec["dtype"])
            observation[name] = value
        ages = {name: (now_ns - s.stamp_ns) / NS for name, s in chosen.items()}
        for name, age in ages.items():
            limit = MAX_AGE_S[self._specs[name]["kind"]]
            if age > limit:
                return Assembly(stamp_ns, None, HoldReason(
                    "WARN", f"{name} ({self._specs[name]['source']}) is stale: {age:.3f} s old, "
                            f"max {limit:.3f} s (is the publisher running, and on the same clock?)"), max(ages.values()))
        return Assembly(stamp_ns, observation, None, max(ages.values()))


def check_action(action: np.ndarray, outputs: dict[str, Any]) -> HoldReason | None:
    """Check a runtime's chunk against the manifest outputs: shape (chunk_length, n_joints)
    and finite. Returns an ERROR HoldReason, or None when the chunk may be published."""
    action = np.asarray(action)
    expected = (int(outputs["chunk_length"]), len(outputs["joint_names"]))
    if action.shape != expected:
        return HoldReason("ERROR", f"policy output shape {action.shape}, manifest says {expected}")
    if not np.all(np.isfinite(action)):
        return HoldReason("ERROR", "policy output contains NaN or inf")
    return None


def check_outputs_for_profile(outputs: dict[str, Any], profile_joints: tuple[str, ...] | list[str]) -> None:
    """A chunk must name exactly the profile's joints (any order), as the controller executes
    whole-robot trajectories. Raises ValueError naming the difference."""
    names = list(outputs.get("joint_names", []))
    if outputs.get("kind", "joint_position_chunk") != "joint_position_chunk":
        raise ValueError(f"unsupported output kind {outputs.get('kind')!r}; expected 'joint_position_chunk'")
    if len(set(names)) != len(names):
        raise ValueError(f"output joint names repeat: {names}")
    extra = [n for n in names if n not in profile_joints]
    missing = [n for n in profile_joints if n not in names]
    if extra or missing:
        raise ValueError(f"output joints do not match the robot profile: unknown {extra}, missing {missing}")
    if float(outputs.get("dt", 0.0)) <= 0.0 or int(outputs.get("chunk_length", 0)) <= 0:
        raise ValueError(f"outputs need dt > 0 and chunk_length > 0, got dt={outputs.get('dt')} "
                         f"chunk_length={outputs.get('chunk_length')}")
