"""A policy version ready to serve, without ROS: verified by the store, its runtime built through
the family registry, and an observation assembler for its manifest inputs. The policy node holds
one of these per loaded policy and swaps them whole; `ServingStats` keeps its timings."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dexstack.observation import ObservationAssembler, check_outputs_for_profile
from dexstack.runtime import PolicyRuntime, load_runtime

if TYPE_CHECKING:
    from dexstack.hardware.profiles import RobotProfile


@dataclass
class ActivePolicy:
    """A verified policy version with its runtime and observation assembler."""

    name: str
    version: str
    manifest_sha256: str
    manifest: dict[str, Any]
    runtime: PolicyRuntime
    assembler: ObservationAssembler

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def joint_names(self) -> list[str]:
        return list(self.manifest["outputs"]["joint_names"])


def policy_identity(active: ActivePolicy | None) -> dict[str, str]:
    """The diagnostics keys that name the served policy (empty strings while none is loaded)."""
    if active is None:
        return dict.fromkeys(("policy", "version", "manifest_sha256", "family"), "")
    return {
        "policy": active.name,
        "version": active.version,
        "manifest_sha256": active.manifest_sha256,
        "family": str(active.manifest.get("family", "")),
    }


def load_policy(ref: str, profile: RobotProfile, rate_hz: float | None = None) -> ActivePolicy:
    """Resolve `ref` ("NAME" or "NAME@VERSION") in the store (DEXSTACK_HOME), verify it
    against `profile`, and build its runtime for `rate_hz` (how often it will act; None: once
    per outputs.dt). Raises on any failure, with the reason."""
    from dexstack.store import PolicyStore  # the store reads DEXSTACK_HOME when constructed

    loaded = PolicyStore().load(ref, profile)
    manifest = loaded.manifest  # schema 2: the store upgrades older manifests in memory
    check_outputs_for_profile(manifest["outputs"], profile.joint_names)
    assembler = ObservationAssembler(manifest["inputs"])
    runtime = load_runtime(loaded.path, manifest, profile=profile, rate_hz=rate_hz)
    return ActivePolicy(loaded.name, str(loaded.version), loaded.manifest_sha256, manifest, runtime, assembler)


class Window:
    """Rolling window of float samples with percentiles (None while empty)."""

    def __init__(self, size: int = 1000) -> None:  # 1000 ticks: 100 s at 10 Hz
        self.values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    def pct(self, q: float) -> float | None:
        return float(np.percentile(np.fromiter(self.values, float), q)) if self.values else None

    def ms(self, q: float) -> str:
        """The q-th percentile formatted for diagnostics ("" while empty)."""
        value = self.pct(q)
        return "" if value is None else f"{value:.3f}"


class ServingStats:
    """A serving node's rolling timings (ms, for diagnostics and benchmarks) and counters. No
    per-tick logging: everything goes into these windows."""

    def __init__(self, rate_hz: float) -> None:
        self.rate_hz = rate_hz
        self.inference_ms, self.e2e_ms, self.age_ms = Window(), Window(), Window()
        self.period_ms, self.jitter_ms = Window(), Window()
        self.compute_ms = Window()  # trigger -> chunk published (steady clock)
        self.last_tick_ns: int | None = None
        self.chunks = self.holds = 0
        self.last_hold_reason = ""

    def tick(self, now_ns: int) -> None:
        """Loop period and its jitter against 1/rate, on the node clock."""
        if self.last_tick_ns is not None and now_ns > self.last_tick_ns:
            period_ms = (now_ns - self.last_tick_ns) / 1e6
            self.period_ms.add(period_ms)
            self.jitter_ms.add(abs(period_ms - 1000.0 / self.rate_hz))
        self.last_tick_ns = now_ns

    def values(self) -> dict[str, object]:
        return {
            "inference_ms_p50": self.inference_ms.ms(50),
            "inference_ms_p99": self.inference_ms.ms(99),
            "e2e_ms_p50": self.e2e_ms.ms(50),
            "e2e_ms_p99": self.e2e_ms.ms(99),
            "compute_ms_p50": self.compute_ms.ms(50),
            "compute_ms_p99": self.compute_ms.ms(99),
            "observation_age_ms": f"{self.age_ms.values[-1]:.3f}" if self.age_ms.values else "",
            "observation_age_ms_p99": self.age_ms.ms(99),
            "chunks": self.chunks,
            "hold_count": self.holds,
            "last_hold_reason": self.last_hold_reason,
            "loop_period_ms_p50": self.period_ms.ms(50),
            "loop_jitter_ms_p99": self.jitter_ms.ms(99),
        }
