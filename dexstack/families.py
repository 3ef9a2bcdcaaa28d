"""The policy-family registry: how training, export, the store and the policy node find a family.

A family declares itself once, as a `Family` in `policies/<family>/family.py` (or in any pip
package), registered under the entry-point group `dexstack.families`:

    entry_points={"dexstack.families": ["bc = dexstack.policies.bc.family:FAMILY"]}

The registry reads that group with importlib.metadata the first time it is asked, so a family
installed by another package is found without touching dexstack. `register_family` adds one
programmatically (tests, notebooks); it is visible only in the calling process.
See docs/ADDING_A_FAMILY.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "dexstack.families"


@dataclass(frozen=True)
class Family:
    """One policy family. The entries are "module:callable" strings, so that declaring a
    family imports nothing heavy; `resolve` imports the callable when it is needed.

    runtime: callable(policy_dir: Path, manifest: dict, *, profile: RobotProfile, rate_hz: float | None)
        -> PolicyRuntime (dexstack/runtime.py). Its module must import neither torch nor dexstack.sim.
    train: callable(argv: list[str]) -> int | None behind `dexstack train <name> ARGS...` (torch is fine).
    export: callable(run_dir: Path, out_dir: Path, **options) -> Path (the export directory) behind
        `dexstack export` for runs whose run.json names this family.
    in_process: callable(policy_dir: Path, manifest: dict, *, task: str, profile: RobotProfile)
        -> sim.evaluate.InProcess (the env and controller `dexstack eval` steps without ROS). None:
        `sim.evaluate.manipulation_in_process` (ManipulationEnv + `load_runtime`).
    """

    name: str  # the manifest's (and run.json's) "family"
    runtime: str
    train: str | None = None
    export: str | None = None
    in_process: str | None = None
    description: str = ""


_registry: dict[str, Family] | None = None


def _load() -> dict[str, Family]:
    global _registry
    if _registry is None:
        found: dict[str, Family] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            family = ep.load()
            if not isinstance(family, Family):
                raise TypeError(
                    f"entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP!r} is a "
                    f"{type(family).__name__}, not a dexstack.families.Family"
                )
            if family.name != ep.name:
                raise ValueError(
                    f"entry point {ep.name!r} in group {ENTRY_POINT_GROUP!r} declares family "
                    f"{family.name!r}: the two names must agree"
                )
            found.setdefault(family.name, family)  # the first installation on sys.path wins, like imports
        _registry = found
    return _registry


def families() -> dict[str, Family]:
    """Every known family by name (installed entry points plus `register_family` calls)."""
    return dict(sorted(_load().items()))


def get_family(name: str) -> Family:
    """The family called `name`; KeyError listing the known families otherwise."""
    registry = _load()
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise KeyError(
            f"unknown policy family {name!r}; known families: {known} (a family registers under the "
            f"entry-point group {ENTRY_POINT_GROUP!r}, see docs/ADDING_A_FAMILY.md)"
        )
    return registry[name]


def register_family(family: Family) -> None:
    """Add (or replace) `family` in this process's registry."""
    if not isinstance(family, Family):
        raise TypeError(f"register_family takes a Family, got {type(family).__name__}")
    _load()[family.name] = family


def resolve(target: str) -> Any:
    """Import a "module:callable" string and return the callable."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r} is not a 'module:callable' reference")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
