"""A policy version ready to serve, without ROS: verified by the store, its runtime built through
the family registry, and an observation assembler for its manifest inputs. The policy node holds
one of these per loaded policy and swaps them whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
