"""The training dataset format: one directory, one `meta.json`, one `.npz` per episode.

    <root>/meta.json            format, version, fps, robot profile, joint names, features, episodes
    <root>/episode_000000.npz   one array per feature (leading dim = frames) + "timestamp"

Feature names follow the observation keys of `dexstack.contract` (`joint_positions`,
`<camera>_rgb`, `<camera>_depth`) plus `action`. Units: joint positions and actions in
radians / metres in `joint_names` order; rgb (H, W, 3) uint8; depth (H, W) float32 metres;
`timestamp` float64 seconds since the episode's first frame. `action[k]` is the joint target
commanded for time `timestamp[k] + 1/fps`.

Writes are atomic (temp file + rename), so a crash never leaves a file that looks complete.
Core module: numpy + stdlib only (see docs/DATASET.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dexstack import contract
from dexstack.files import fsync_dir

FORMAT = "dexstack-dataset"
VERSION = 1
META_FILE = "meta.json"
TIMESTAMP = "timestamp"
ACTION = "action"
ALLOWED_DTYPES = ("float32", "float64", "uint8", "uint16", "int32", "int64", "bool")


class DatasetError(ValueError):
    """A dataset (on disk or being written) does not follow the format."""


def episode_file(index: int) -> str:
    return f"episode_{index:06d}.npz"


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write via `write(fileobj)` into a temp file next to `path`, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _check_features(features: dict[str, dict]) -> dict[str, dict]:
    if not features:
        raise DatasetError("a dataset needs at least one feature")
    clean = {}
    for name, spec in features.items():
        if name == TIMESTAMP:
            raise DatasetError(f"feature name {TIMESTAMP!r} is reserved for frame times")
        try:
            shape = [int(d) for d in spec["shape"]]
            dtype = str(np.dtype(spec["dtype"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"feature {name!r} needs 'shape' (list of ints) and 'dtype': {spec!r}") from exc
        if dtype not in ALLOWED_DTYPES or any(d <= 0 for d in shape):
            raise DatasetError(
                f"feature {name!r}: dtype must be one of {ALLOWED_DTYPES} and dims positive, got {dtype} {shape}"
            )
        clean[name] = {"shape": shape, "dtype": dtype}
    return clean


@contextmanager
def staged_dataset(root: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory next to `root` to write a whole dataset into; when the
    block ends normally it becomes `root` in one rename, when it raises it is deleted. So a build
    never leaves a partial dataset, and with `overwrite` the old one stays until the new one is
    complete. Refuses (DatasetError) a `root` that holds a dataset (unless `overwrite`) or anything
    else: LeRobot likewise creates a dataset only in a directory that does not exist yet
    (`LeRobotDatasetMetadata.create`: `root.mkdir(exist_ok=False)`)."""
    root = Path(root)
    if root.exists():
        if not root.is_dir():
            raise DatasetError(f"{root} exists and is not a directory")
        if (root / META_FILE).is_file():
            if not overwrite:
                raise DatasetError(f"{root} already holds a dataset; pass --overwrite to replace it")
        elif any(root.iterdir()):
            raise DatasetError(f"{root} is not empty and is not a dataset; choose a new directory")
    root.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if root.exists():
        if (root / META_FILE).is_file():  # overwrite: move the old dataset aside, delete it after
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.replaced-", dir=root.parent))
            os.replace(root, old / root.name)
        else:
            root.rmdir()  # empty (checked above)
    try:
        os.replace(stage, root)
    except OSError:
        if old is not None:  # put the old dataset back before reporting
            os.replace(old / root.name, root)
        shutil.rmtree(stage, ignore_errors=True)
        raise
    fsync_dir(root.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class DatasetWriter:
    """Writes a new dataset episode by episode; `meta.json` is rewritten atomically after each.

    `features` maps feature name -> {"shape": per-frame shape, "dtype": numpy dtype name}.
    The root must not already hold a dataset (refuses rather than mixing two datasets).
    """

    def __init__(
        self,
        root: str | Path,
        fps: float,
        joint_names: Sequence[str],
        features: dict[str, dict],
        robot_profile: str = "panda",
    ) -> None:
        if not (np.isfinite(fps) and fps > 0):
            raise DatasetError(f"fps must be positive, got {fps}")
        self.root = Path(root)
        if (self.root / META_FILE).exists():
            raise DatasetError(f"{self.root} already holds a dataset ({META_FILE} exists); choose a new directory")
        self.features = _check_features(features)
        self.joint_names = [str(n) for n in joint_names]
        for name in (contract.JOINT_POSITIONS, ACTION):
            if name in self.features and self.features[name]["shape"] != [len(self.joint_names)]:
                raise DatasetError(
                    f"feature {name!r} shape {self.features[name]['shape']} does not match "
                    f"{len(self.joint_names)} joint names"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        self.meta: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "fps": float(fps),
            "robot_profile": robot_profile,
            "joint_names": self.joint_names,
            "features": self.features,
            "episodes": [],
        }
        self._closed = False

    def _validate(self, frames: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = sorted(set(self.features) - set(frames))
        extra = sorted(set(frames) - set(self.features) - {TIMESTAMP})
        if missing or extra:
            raise DatasetError(f"episode features do not match the dataset: missing {missing}, unexpected {extra}")
        out: dict[str, np.ndarray] = {}
        lengths = {}
        for name, spec in self.features.items():
            arr = np.asarray(frames[name])
            want = np.dtype(spec["dtype"])
            if arr.shape[1:] != tuple(spec["shape"]):
                raise DatasetError(
                    f"feature {name!r}: frames have shape {arr.shape[1:]}, expected {tuple(spec['shape'])}"
                )
            if arr.dtype != want:
                # Float precision may differ (float64 joint readings into a float32 feature);
                # any other dtype change could silently corrupt values, so it is refused.
                if not (arr.dtype.kind == "f" and want.kind == "f"):
                    raise DatasetError(f"feature {name!r}: dtype {arr.dtype}, expected {want}")
                arr = arr.astype(want)
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                bad = int(np.count_nonzero(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1)))
                raise DatasetError(f"feature {name!r}: {bad} frame(s) contain NaN or infinite values")
            lengths[name] = len(arr)
            out[name] = arr
        if len(set(lengths.values())) != 1:
            raise DatasetError(f"features have different frame counts: {lengths}")
        n = next(iter(lengths.values()))
        if n == 0:
            raise DatasetError("an episode needs at least one frame")
        if TIMESTAMP in frames:
            ts = np.asarray(frames[TIMESTAMP], dtype=np.float64)
            if ts.shape != (n,) or not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0):
                raise DatasetError(
                    f"{TIMESTAMP!r} must be {n} finite, strictly increasing seconds; got shape {ts.shape}"
                )
        else:
            ts = np.arange(n, dtype=np.float64) / self.meta["fps"]
        out[TIMESTAMP] = ts
        return out

    def add_episode(
        self, frames: dict[str, np.ndarray], task: str, success: bool | None = None, source: str = "sim"
    ) -> int:
        """Validate and write one episode; returns its index. Nothing is written if it is invalid."""
        if self._closed:
            raise DatasetError("writer is closed")
        arrays = self._validate(frames)
        index = len(self.meta["episodes"])
        name = episode_file(index)
        _atomic_write(self.root / name, lambda f: np.savez(f, **arrays))
        self.meta["episodes"].append(
            {
                "index": index,
                "file": name,
                "length": len(arrays[TIMESTAMP]),
                "task": str(task),
                "success": None if success is None else bool(success),
                "source": str(source),
            }
        )
        self._write_meta()
        return index

    def _write_meta(self) -> None:
        text = json.dumps(self.meta, indent=1).encode()
        _atomic_write(self.root / META_FILE, lambda f: f.write(text))

    def close(self) -> None:
        """Write `meta.json` (atomically). Safe to call twice."""
        if not self._closed:
            self._write_meta()
            self._closed = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Dataset:
    """Read-only view of a dataset directory written by `DatasetWriter`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise DatasetError(f"{self.root} is not a dataset: {META_FILE} not found")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{meta_path} is not valid JSON: {exc}") from exc
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise DatasetError(
                f"{meta_path}: format {self.meta.get('format')!r} version {self.meta.get('version')!r}"
                f" is not {FORMAT!r} version {VERSION}"
            )
        self.fps: float = float(self.meta["fps"])
        self.joint_names: list[str] = list(self.meta["joint_names"])
        self.features: dict[str, dict] = self.meta["features"]

    def __len__(self) -> int:
        return len(self.meta["episodes"])

    @property
    def num_frames(self) -> int:
        return sum(int(e["length"]) for e in self.meta["episodes"])

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """All arrays of episode `i` (features + "timestamp"), frames first."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range: dataset has {len(self)} episodes")
        entry = self.meta["episodes"][i]
        with np.load(self.root / entry["file"], allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if len(arrays[TIMESTAMP]) != entry["length"]:
            raise DatasetError(f"{entry['file']} has {len(arrays[TIMESTAMP])} frames, meta.json says {entry['length']}")
        return arrays

    def content_hash(self) -> str:
        """sha256 over meta.json and every episode file, in order (identifies the data a policy saw)."""
        h = hashlib.sha256()
        h.update(json.dumps(self.meta, sort_keys=True).encode())
        for entry in self.meta["episodes"]:
            h.update(entry["file"].encode())
            with open(self.root / entry["file"], "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()
