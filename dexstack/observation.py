"""Observation assembly for the policy node, without ROS.

The policy node converts each incoming message to a value and hands it here; this module
decides what the policy may act on. It keeps the last few samples of every manifest input
(keyed by the input's name) and answers two questions:

- `latest(now_ns)` (timer trigger, real time): the newest sample of each input, checked for
  staleness against the node's clock (the input's `max_age_s`), shape and finiteness (BRIEF §2:
  latest message of each topic with a staleness check, not exact synchronisation);
- `take_matched(now_ns)` (observation trigger, lockstep sim): the newest set in which every
  streamed input carries the SAME stamp, newer than the last set answered; each stamp is
  answered once.

Latched inputs (`latched: true`, e.g. a planner's target pose published once per episode) are
kept until replaced and are never stale; they take no part in stamp matching. Until one has
arrived the node holds at WARN ("waiting for ..."), so a runtime never sees it missing. When a
new episode starts (`episode_started`, or the stamps of a streamed input going backwards) the
latched values stamped before its start are dropped: they are the previous scene's.

Either returns an `Assembly`: an observation to act on, or a `HoldReason` saying why the
node must hold instead. Stamps are integer nanoseconds so that "same stamp" is exact.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dexstack.images import fit_image
from dexstack.manifest import IMAGE_KINDS, INPUT_KINDS
from dexstack.runtime import ObservationError

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
    input (the first streamed joint-positions input, else the first streamed input), or the
    clock time when that input has never arrived. `observation` is set iff `hold` is None.
    `age_s` is the age of the oldest streamed input used (seconds, node clock), None if an
    input was missing.
    """

    stamp_ns: int
    observation: dict[str, Any] | None
    hold: HoldReason | None
    age_s: float | None


@dataclass(frozen=True)
class _Sample:
    stamp_ns: int
    value: Any  # None when the message could not be converted
    error: str | None


class ObservationAssembler:
    """Keeps the last `history` samples of every input named by a (schema 2) manifest's `inputs`.

    Each input spec is a manifest dict with at least `name`, `kind`, `source`, `shape` and a
    freshness rule (`max_age_s` or `latched: true`); `dtype` (numpy name) is applied when present;
    camera images of any size are brought to `shape` by `dexstack.images.fit_image`. Raises
    ValueError for an input this assembler cannot serve.
    """

    def __init__(self, inputs: list[dict[str, Any]], history: int = 8) -> None:
        if not inputs:
            raise ValueError("manifest declares no inputs")
        self.inputs = list(inputs)
        for spec in self.inputs:
            for key in ("name", "kind", "source", "shape"):
                if key not in spec:
                    raise ValueError(f"manifest input {spec.get('name', spec)!r} lacks {key!r}")
            if spec["kind"] not in INPUT_KINDS:
                raise ValueError(
                    f"input {spec['name']!r}: unsupported kind {spec['kind']!r}; supported: {sorted(INPUT_KINDS)}"
                )
            if (spec.get("latched") is True) == ("max_age_s" in spec):
                raise ValueError(f"input {spec['name']!r} needs exactly one of max_age_s or latched: true")
        names = [s["name"] for s in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"manifest input names are not unique: {names}")
        self._specs = {s["name"]: s for s in self.inputs}
        self.latched = [s["name"] for s in self.inputs if s.get("latched") is True]
        streamed = [s for s in self.inputs if s.get("latched") is not True]
        joint_inputs = [s["name"] for s in streamed if s["kind"] == "joint_positions"]
        self.primary = (joint_inputs or [s["name"] for s in streamed] or names)[0]
        self._samples: dict[str, deque[_Sample]] = {s["name"]: deque(maxlen=history) for s in streamed}
        self._latched: dict[str, _Sample | None] = {n: None for n in self.latched}
        self._by_source: dict[str, list[dict[str, Any]]] = {}
        for spec in self.inputs:
            self._by_source.setdefault(spec["source"], []).append(spec)
        self.answered_ns: int | None = None  # newest stamp answered by take_matched
        self.time_jumps = 0  # how often an input's stamps went backwards (sim reset)
        self.episode_start_ns: int | None = None  # latched values stamped before this are the last scene's

    # --- wiring -------------------------------------------------------------------------
    def sources(self) -> dict[str, list[dict[str, Any]]]:
        """Input specs grouped by source topic, in manifest order (do not modify)."""
        return self._by_source

    # --- feeding ------------------------------------------------------------------------
    def add(self, name: str, stamp_ns: int, value: Any) -> None:
        """Store a converted sample of input `name` taken at `stamp_ns` (a str for text inputs)."""
        self._push(name, _Sample(int(stamp_ns), value if isinstance(value, str) else np.asarray(value), None))

    def add_invalid(self, name: str, stamp_ns: int, error: str) -> None:
        """Record that the message for `name` at `stamp_ns` could not be converted: acting on
        that stamp yields an ERROR hold with `error` instead of silently using an older sample."""
        self._push(name, _Sample(int(stamp_ns), None, error))

    def _push(self, name: str, sample: _Sample) -> None:
        if name in self._latched:
            if self.episode_start_ns is None or sample.stamp_ns >= self.episode_start_ns:
                self._latched[name] = sample  # else: planned for the previous scene
            return
        if name not in self._samples:
            raise KeyError(f"no input named {name!r}; inputs: {list(self._specs)}")
        buf = self._samples[name]
        if buf and sample.stamp_ns < buf[-1].stamp_ns:
            # Time went backwards (the sim restarted its clock for a new episode): samples of
            # the old timeline can never match new ones, and old answers say nothing now.
            buf.clear()
            self.answered_ns = None
            self.time_jumps += 1
            self.episode_started(sample.stamp_ns)
        if buf and buf[-1].stamp_ns == sample.stamp_ns:
            buf[-1] = sample  # a re-send of the same stamp replaces the earlier one
        else:
            buf.append(sample)

    def episode_started(self, stamp_ns: int) -> None:
        """A new episode (scene) from `stamp_ns` on: drop latched values stamped before it, and
        ignore ones that arrive later with such a stamp."""
        self.episode_start_ns = int(stamp_ns)
        for name, sample in self._latched.items():
            if sample is not None and sample.stamp_ns < self.episode_start_ns:
                self._latched[name] = None

    def carry_over_from(self, other: ObservationAssembler) -> None:
        """Adopt the samples of inputs that `other` also has (same name, kind, source and
        freshness), its latched values, episode start and answered stamp, so a hot-swap neither
        waits for fresh messages nor re-answers."""
        for name, spec in self._specs.items():
            old = other._specs.get(name)
            if old is None or any(old.get(k) != spec.get(k) for k in ("kind", "source", "latched")):
                continue
            if name in self._latched:
                self._latched[name] = other._latched[name]
            else:
                self._samples[name].extend(other._samples[name])
        self.answered_ns = other.answered_ns
        self.episode_start_ns = other.episode_start_ns

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
        """Observation trigger: the newest stamp present in every streamed input and newer than
        the last one answered, or None if no such complete set exists yet. The stamp is marked
        answered, so each stamp is answered exactly once."""
        common: set[int] | None = None
        for buf in self._samples.values():
            stamps = {s.stamp_ns for s in buf}
            common = stamps if common is None else common & stamps
            if not common:
                return None
        candidates = [t for t in common or () if self.answered_ns is None or t > self.answered_ns]
        if not candidates:
            return None
        stamp_ns = max(candidates)
        chosen = {name: next(s for s in buf if s.stamp_ns == stamp_ns) for name, buf in self._samples.items()}
        self.answered_ns = stamp_ns
        return self._check(chosen, stamp_ns, now_ns)

    def _value(self, spec: dict[str, Any], sample: _Sample) -> Any:
        """The checked value of a sample; raises ObservationError with the reason."""
        if sample.error is not None:
            raise ObservationError(sample.error)
        value = sample.value
        if spec["kind"] == "text":
            if not isinstance(value, str):
                raise ObservationError(f"expected a string, got {type(value).__name__}")
            return value
        if spec["kind"] in IMAGE_KINDS:  # any camera resolution, one rule (dexstack/images.py)
            value = fit_image(value, spec)
        if tuple(value.shape) != tuple(spec["shape"]):
            raise ObservationError(f"shape {tuple(value.shape)}, expected {tuple(spec['shape'])}")
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise ObservationError("contains NaN or inf")
        if "dtype" in spec and value.dtype != np.dtype(spec["dtype"]):
            value = value.astype(spec["dtype"])
        return value

    def _check(self, chosen: dict[str, _Sample], stamp_ns: int, now_ns: int) -> Assembly:
        # Bad input (ERROR) is reported before staleness (WARN): garbage is garbage at any age.
        latched = {name: s for name, s in self._latched.items() if s is not None}
        observation: dict[str, Any] = {}
        for name, sample in {**chosen, **latched}.items():
            spec = self._specs[name]
            try:
                observation[name] = self._value(spec, sample)
            except ObservationError as exc:
                return Assembly(stamp_ns, None, HoldReason("ERROR", f"{name} ({spec['source']}): {exc}"), None)
        ages = {name: (now_ns - s.stamp_ns) / NS for name, s in chosen.items()}
        oldest = max(ages.values(), default=None)
        for name, age in ages.items():
            limit = float(self._specs[name]["max_age_s"])
            if age > limit:
                return Assembly(
                    stamp_ns,
                    None,
                    HoldReason(
                        "WARN",
                        f"{name} ({self._specs[name]['source']}) is stale: {age:.3f} s old, "
                        f"max {limit:.3f} s (is the publisher running, and on the same clock?)",
                    ),
                    oldest,
                )
        waiting = [name for name in self._latched if name not in latched]
        if waiting:
            waits = ", ".join(f"{n} on {self._specs[n]['source']}" for n in waiting)
            return Assembly(stamp_ns, None, HoldReason("WARN", f"waiting for {waits}"), oldest)
        return Assembly(stamp_ns, observation, None, oldest)


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
        raise ValueError(
            f"outputs need dt > 0 and chunk_length > 0, got dt={outputs.get('dt')} "
            f"chunk_length={outputs.get('chunk_length')}"
        )
