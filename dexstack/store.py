"""The versioned policy store (BRIEF §5).

Layout, in every store::

    <root>/<name>/<version>/manifest.json   # versions "1", "2", ...; immutable once published
    <root>/<name>/<version>/<files>         # every file listed with its sha256 in the manifest
    <root>/<name>/PROMOTED                  # optional: the version that plain "<name>" means

A `PolicyStore` reads two stores: the writable one at `$DEXSTACK_HOME/policies` (default
`~/.dexstack/policies`) and the read-only bundled one shipped with the package
(`policy_store/` in the repo). Lookups try the writable store first.

Publishing is atomic and safe under concurrency (threads or processes, one machine):
files are copied into a temp dir `<root>/<name>/.tmp-*`, fsynced, and the temp dir is
renamed to the next free version number. `rename` onto an existing non-empty directory
fails on POSIX, so two publishers racing for the same number cannot both win; the loser
retries with the next number. Readers therefore see a version directory complete or not
at all.

Storage sits behind `StoreBackend` so a remote store (object storage, HTTP) can be added
later: a backend lists names and versions, hands out a local directory for a version (a
remote backend would download into a cache), and publishes/promotes. Only a local
directory backend exists today.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import dexstack
from dexstack.errors import DexstackError
from dexstack.families import get_family
from dexstack.files import dexstack_home, fsync_dir
from dexstack.manifest import (
    MANIFEST_FILE,
    NAME_RE,
    VERSION_RE,
    ManifestError,
    check_against_profile,
    load_manifest,
    sha256_file,
    upgrade_manifest,
    validate_manifest,
)

if TYPE_CHECKING:
    from dexstack.hardware.profiles import RobotProfile

PROMOTED_FILE = "PROMOTED"
TEMP_PREFIX = ".tmp-"
_MAX_PUBLISH_ATTEMPTS = 10_000


class PolicyRejected(DexstackError):
    """A policy that must not be served; the message says exactly why. Whoever was serving
    a previous policy keeps serving it."""


@dataclass(frozen=True)
class LoadedPolicy:
    """A verified policy version. `manifest` is in the current schema (`upgrade_manifest`: a
    schema-1 file is upgraded in memory); `manifest_sha256` identifies the file exactly (diagnostics)."""

    name: str
    version: str
    path: Path
    manifest: dict
    manifest_sha256: str


def default_root() -> Path:
    """The writable store: `$DEXSTACK_HOME/policies`, else `~/.dexstack/policies`."""
    return dexstack_home() / "policies"


def find_bundled_store() -> Path | None:
    """The read-only store shipped with dexstack, or None.

    `$DEXSTACK_BUNDLED_STORE` wins (set it empty to disable the bundled store); then
    `policy_store/` next to the package in a source checkout or editable install; then
    `share/dexstack/policy_store` under each ament prefix (colcon install) and sys.prefix.
    """
    env = os.environ.get("DEXSTACK_BUNDLED_STORE")
    if env is not None:
        return Path(env).expanduser() if env else None
    candidates = [Path(dexstack.__file__).resolve().parents[1] / "policy_store"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates += [Path(p) / "share" / "dexstack" / "policy_store" for p in prefixes]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`"name"` -> (name, None); `"name@3"` -> (name, "3"). Raises PolicyRejected."""
    if not isinstance(ref, str):
        raise PolicyRejected(f"policy reference must be a string like NAME or NAME@VERSION, got {ref!r}")
    name, sep, version = ref.strip().partition("@")
    if not NAME_RE.match(name) or (sep and not VERSION_RE.match(version)):
        raise PolicyRejected(f"bad policy reference {ref!r}: expected NAME or NAME@VERSION, e.g. 'bc_pick_lift@3'")
    return name, (version if sep else None)


def _walk_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(posix relative path, absolute path) of every file below `root`, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            yield path.relative_to(root).as_posix(), path


def file_checksums(directory: str | Path) -> dict[str, str]:
    """{relative path: sha256 hex} of every file below `directory` but manifest.json: the
    manifest's "files", as `dexstack export` records it and `publish` checks it."""
    return {rel: sha256_file(path) for rel, path in _walk_files(Path(directory)) if rel != MANIFEST_FILE}


def _copy_and_hash(src: Path, dst: Path) -> str:
    """Copy `src` to `dst`, fsync it, and return the sha256 of the bytes written."""
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        for block in iter(lambda: fin.read(1 << 20), b""):
            digest.update(block)
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def _sort_versions(versions: list[str]) -> list[str]:
    return sorted(versions, key=int)


class StoreBackend(Protocol):
    """Where policy versions live. `version_dir` must return a local directory holding the
    version's files (a remote backend downloads into a cache); callers verify checksums."""

    label: str  # "local", "bundled", ...
    location: str  # for messages
    writable: bool

    def names(self) -> list[str]: ...

    def versions(self, name: str) -> list[str]:
        """Complete versions of `name`, ascending."""

    def version_dir(self, name: str, version: str) -> Path: ...

    def promoted(self, name: str) -> str | None: ...

    def set_promoted(self, name: str, version: str) -> None: ...

    def publish(
        self,
        name: str,
        files: dict[str, tuple[Path, str]],
        manifest_for: Any,
        min_version: int,
        check: Callable[[Path], None] | None = None,
    ) -> str:
        """Store `files` ({relative path: (source, sha256)}) plus the manifest bytes
        `manifest_for(version)` as the next free version >= min_version; return it. `check(dir)`
        runs on the complete copy before it becomes visible; raising there publishes nothing."""


class LocalDirBackend:
    """A store in a local directory (see the module docstring for layout and guarantees)."""

    def __init__(self, root: str | Path, writable: bool = True, label: str = "local") -> None:
        self.root = Path(root).expanduser()
        self.writable = writable
        self.label = label
        self.location = str(self.root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME_RE.match(p.name))

    def versions(self, name: str) -> list[str]:
        name_dir = self.root / name
        if not name_dir.is_dir():
            return []
        # Temp dirs start with "." and never match: half-written versions stay invisible.
        return _sort_versions([p.name for p in name_dir.iterdir() if VERSION_RE.match(p.name) and p.is_dir()])

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def promoted(self, name: str) -> str | None:
        try:
            return (self.root / name / PROMOTED_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None

    def _require_writable(self) -> None:
        if not self.writable:
            raise PolicyRejected(f"the {self.label} store at {self.root} is read-only")

    def set_promoted(self, name: str, version: str) -> None:
        self._require_writable()
        name_dir = self.root / name
        name_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=name_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(version + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, name_dir / PROMOTED_FILE)  # atomic: readers see the old or the new version
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(name_dir)

    def publish(
        self,
        name: str,
        files: dict[str, tuple[Path, str]],
        manifest_for: Any,
        min_version: int = 1,
        check: Callable[[Path], None] | None = None,
    ) -> str:
        self._require_writable()
        name_dir = self.root / name
        name_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=name_dir))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a version should be readable by the robot's user
            subdirs = {tmp}
            for rel, (src, expected) in files.items():
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                subdirs.add(dst.parent)
                actual = _copy_and_hash(src, dst)
                if actual != expected:
                    raise ManifestError(
                        f"{src} changed while it was being published (sha256 {expected[:12]}... "
                        f"before, {actual[:12]}... when copied); nothing was published"
                    )
            if check is not None:
                check(tmp)  # what is checked is the copy that becomes the version
            for _ in range(_MAX_PUBLISH_ATTEMPTS):
                version = str(max([min_version - 1] + [int(v) for v in self.versions(name)]) + 1)
                manifest_path = tmp / MANIFEST_FILE
                with open(manifest_path, "wb") as f:
                    f.write(manifest_for(version))
                    f.flush()
                    os.fsync(f.fileno())
                for d in sorted(subdirs, key=lambda p: len(p.parts), reverse=True):
                    fsync_dir(d)
                try:
                    os.rename(tmp, name_dir / version)
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        continue  # another publisher took this number first
                    raise
                fsync_dir(name_dir)
                return version
            raise RuntimeError(f"could not find a free version for {name!r} in {self.root}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class PolicyStore:
    """Versioned policies: publish, list, resolve, verify, load and promote.

    `root`: the writable store (default `default_root()`). `bundled`: True finds the
    read-only store shipped with dexstack (`find_bundled_store`), a path uses that
    directory, False/None uses none.
    """

    def __init__(self, root: str | Path | None = None, bundled: str | Path | None | bool = True) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.local = LocalDirBackend(self.root, writable=True, label="local")
        self.backends: list[StoreBackend] = [self.local]
        bundled_dir = find_bundled_store() if bundled is True else (Path(bundled) if bundled else None)
        if bundled_dir is not None and bundled_dir.resolve() != self.root.resolve():
            self.backends.append(LocalDirBackend(bundled_dir, writable=False, label="bundled"))

    # --- lookup ---------------------------------------------------------------------------

    def _where(self) -> str:
        return ", ".join(f"{b.label} {b.location}" for b in self.backends)

    def _versions(self, name: str) -> dict[str, StoreBackend]:
        """version -> backend holding it; the writable store shadows the bundled one."""
        found: dict[str, StoreBackend] = {}
        for backend in self.backends:
            for version in backend.versions(name):
                found.setdefault(version, backend)
        return found

    def _promoted(self, name: str) -> str | None:
        for backend in self.backends:
            version = backend.promoted(name)
            if version is not None:
                return version
        return None

    def _resolve(self, ref: str) -> tuple[str, str, StoreBackend]:
        name, version = parse_ref(ref)
        versions = self._versions(name)
        if not versions:
            names = sorted({n for b in self.backends for n in b.names() if b.versions(n)})
            raise PolicyRejected(
                f"no policy named {name!r} in the store ({self._where()}); "
                f"available: {', '.join(names) if names else 'none'}"
            )
        if version is None:
            version = self._promoted(name)
            if version is not None and version not in versions:
                raise PolicyRejected(
                    f"policy {name!r} is promoted to version {version!r}, which does not exist "
                    f"(versions: {', '.join(_sort_versions(list(versions)))}); "
                    f"promote an existing version or ask for NAME@VERSION"
                )
            if version is None:
                version = _sort_versions(list(versions))[-1]
        if version not in versions:
            raise PolicyRejected(
                f"policy {name!r} has no version {version!r}; versions: {', '.join(_sort_versions(list(versions)))}"
            )
        return name, version, versions[version]

    def resolve(self, ref: str) -> Path:
        """Directory of `ref`: "name" is the promoted version, else the highest; "name@version"
        is that version. Unknown -> PolicyRejected listing what exists. Does not verify."""
        name, version, backend = self._resolve(ref)
        return backend.version_dir(name, version)

    def list(self) -> list[dict[str, Any]]:
        """One row per version: name, version, family, promoted, created, path, source."""
        rows = []
        for name in sorted({n for backend in self.backends for n in backend.names()}):
            # One listing per name, so a version published meanwhile is either in it or not.
            versions = self._versions(name)
            promoted = self._promoted(name)
            for version, backend in versions.items():
                path = backend.version_dir(name, version)
                try:
                    manifest = load_manifest(path)
                    family = str(manifest.get("family", "?"))
                    prov = manifest.get("provenance")
                    created = str(prov.get("created", "")) if isinstance(prov, dict) else ""
                except ManifestError:
                    family, created = "?", ""
                rows.append(
                    {
                        "name": name,
                        "version": version,
                        "family": family,
                        "promoted": version == promoted,
                        "created": created,
                        "path": str(path),
                        "source": backend.label,
                    }
                )
        return sorted(rows, key=lambda r: (r["name"], int(r["version"])))

    # --- verification ---------------------------------------------------------------------

    def _check(self, ref: str, profile: RobotProfile | None, deep: bool) -> LoadedPolicy:
        name, version, backend = self._resolve(ref)
        path = backend.version_dir(name, version)
        label = f"policy {name}@{version}"
        try:
            raw = (path / MANIFEST_FILE).read_bytes()
        except OSError as exc:
            raise PolicyRejected(f"{label}: cannot read {MANIFEST_FILE} in {path}: {exc.strerror or exc}") from None
        try:
            manifest = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PolicyRejected(f"{label}: {MANIFEST_FILE} is not valid JSON ({exc})") from None
        try:
            validate_manifest(manifest)
        except ManifestError as exc:
            raise PolicyRejected(f"{label}: invalid manifest: {exc}") from None
        try:
            get_family(manifest["family"])
        except KeyError as exc:
            raise PolicyRejected(f"{label}: {exc.args[0]}") from None
        manifest = upgrade_manifest(manifest)
        if (manifest["name"], manifest["version"]) != (name, version):
            raise PolicyRejected(
                f"{label}: its manifest says {manifest['name']}@{manifest['version']}; "
                "the version directory was copied or renamed by hand"
            )
        self._check_files(path, manifest["files"], label)
        loaded = LoadedPolicy(
            name=name, version=version, path=path, manifest=manifest, manifest_sha256=hashlib.sha256(raw).hexdigest()
        )
        if profile is not None:
            self.check_fit(loaded, profile)
        if deep:
            self._open_graphs(path, manifest, label)
        return loaded

    @staticmethod
    def check_fit(loaded: LoadedPolicy, profile: RobotProfile) -> None:
        """PolicyRejected unless an already verified policy fits `profile` (no file is read again)."""
        try:
            check_against_profile(loaded.manifest, profile)
        except ManifestError as exc:
            raise PolicyRejected(
                f"policy {loaded.name}@{loaded.version} does not fit robot profile {profile.name!r}: {exc}"
            ) from None

    @staticmethod
    def _check_files(path: Path, listed: dict[str, str], label: str) -> None:
        present = {rel for rel, _ in _walk_files(path)} - {MANIFEST_FILE}
        missing = sorted(set(listed) - present)
        if missing:
            raise PolicyRejected(f"{label}: file(s) listed in the manifest are missing: {missing}")
        extra = sorted(present - set(listed))
        if extra:
            raise PolicyRejected(
                f"{label}: unlisted file(s) in {path}: {extra}; every file of a version must be "
                "listed with its sha256 in the manifest"
            )
        for rel, expected in sorted(listed.items()):
            actual = sha256_file(path / rel)
            if actual != expected:
                raise PolicyRejected(
                    f"{label}: checksum mismatch for {rel}: the manifest lists sha256 {expected}, "
                    f"the file has {actual} (corrupted or modified after publishing)"
                )

    @staticmethod
    def _open_graphs(path: Path, manifest: dict, label: str) -> None:
        import onnxruntime  # lazily: the core store must import without it

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        for role, rel in manifest["graphs"].items():
            try:
                onnxruntime.InferenceSession(str(path / rel), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises several private exception types
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise PolicyRejected(f"{label}: onnxruntime cannot open graph {role!r} ({rel}): {first_line}") from None

    def load(self, ref: str, profile: RobotProfile) -> LoadedPolicy:
        """Resolve `ref` and verify it for `profile`: every file present, listed and matching
        its sha256, the manifest valid and fitting the robot. Reads only. Raises PolicyRejected."""
        return self._check(ref, profile, deep=False)

    def verify(self, ref: str, profile: RobotProfile | None = None, deep: bool = False) -> LoadedPolicy:
        """Like `load`, but the fit to a robot is checked only when `profile` is given (the store
        knows no robots: `dexstack store verify` passes the manifest's). `deep` also opens every
        graph with onnxruntime (what the runtime will do)."""
        return self._check(ref, profile, deep=deep)

    # --- writing --------------------------------------------------------------------------

    def publish(
        self,
        src_dir: str | Path,
        name: str | None = None,
        profile: RobotProfile | None = None,
        record_checksums: bool = True,
    ) -> LoadedPolicy:
        """Publish an export directory (manifest.json + files) as the next version of `name`
        (default: the manifest's "name"); "evaluation" defaults to {}. Every file must match the
        sha256 the export recorded in the manifest's "files" (`dexstack export` records them); an
        export without "files" is refused unless `record_checksums`, which vouches for the bytes as
        they are and records them (the CLI asks for `--record-checksums`). Every ONNX graph must
        open in onnxruntime, checked on the copy before the version becomes visible. With
        `profile` (`dexstack store publish` passes the manifest's robot profile), the manifest
        must also fit that robot. Raises ManifestError (PolicyRejected for a graph that does not
        open) on bad input, leaving the store unchanged."""
        src = Path(src_dir).expanduser()
        if not src.is_dir():
            raise ManifestError(f"{src}: not a directory (expected an export dir with {MANIFEST_FILE} and its files)")
        manifest = load_manifest(src)
        name = name if name is not None else manifest.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ManifestError(
                f"{src}: policy name {name!r} is missing or invalid: pass a name (--name) or set "
                f"'name' in {MANIFEST_FILE}; names match {NAME_RE.pattern}"
            )

        files = {rel: p for rel, p in _walk_files(src) if rel != MANIFEST_FILE}
        if not files:
            raise ManifestError(f"{src}: no files besides {MANIFEST_FILE}")
        digests = {rel: sha256_file(p) for rel, p in files.items()}
        declared = manifest.get("files")
        if declared is None and not record_checksums:
            raise ManifestError(
                f"{src}: {MANIFEST_FILE} records no sha256 of its files ('files'), so a corrupted file "
                "could not be told apart; export with `dexstack export` (it records them), or pass "
                "--record-checksums to vouch for the files as they are now"
            )
        if declared is not None:
            # An export (or a version copied from another store): its checksums must still hold.
            if not isinstance(declared, dict) or set(declared) != set(digests):
                raise ManifestError(
                    f"{src}: {MANIFEST_FILE} lists files {sorted(declared or {})} but the directory "
                    f"holds {sorted(digests)}; nothing was published"
                )
            bad = sorted(rel for rel in digests if declared[rel] != digests[rel])
            if bad:
                raise ManifestError(
                    f"{src}: checksum mismatch for {bad} against the sha256 in {MANIFEST_FILE}: "
                    "corrupted or modified since export; nothing was published"
                )

        manifest = dict(manifest, name=name, version="1", files=digests)
        manifest.setdefault("evaluation", {})
        try:
            validate_manifest(manifest)
            try:
                get_family(manifest["family"])
            except KeyError as exc:
                raise ManifestError(exc.args[0]) from None
            if profile is not None:
                check_against_profile(upgrade_manifest(manifest), profile)
        except ManifestError as exc:
            raise ManifestError(f"{src}/{MANIFEST_FILE}: {exc}") from None

        def manifest_for(version: str) -> bytes:
            return (json.dumps(dict(manifest, version=version), indent=2) + "\n").encode("utf-8")

        # Numbers continue after the bundled store's so NAME@VERSION stays unambiguous.
        others = [int(v) for b in self.backends if b is not self.local for v in b.versions(name)]
        version = self.local.publish(
            name,
            {rel: (files[rel], digests[rel]) for rel in files},
            manifest_for,
            min_version=max(others, default=0) + 1,
            check=lambda tmp: self._open_graphs(tmp, manifest, f"{src}: policy {name}"),
        )
        return self.verify(f"{name}@{version}", profile)

    def promote(self, ref: str, profile: RobotProfile | None = None) -> None:
        """Make plain `name` resolve to NAME@VERSION (written to the writable store, also for
        bundled versions). The version must verify first (for `profile`, when given). Raises
        PolicyRejected."""
        name, version = parse_ref(ref)
        if version is None:
            raise PolicyRejected(f"promote needs NAME@VERSION, got {ref!r}")
        self.verify(ref, profile)
        self.local.set_promoted(name, version)
