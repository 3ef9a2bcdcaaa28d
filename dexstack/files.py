"""Where dexstack keeps its files, and durable file-system steps shared by the store, the
dataset writer and the recorder."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new entry in `path` durable (POSIX: fsync the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dexstack_home() -> Path:
    """`$DEXSTACK_HOME`, else `~/.dexstack`: the writable store lives in `policies/` below it,
    recordings in `recordings/`."""
    home = os.environ.get("DEXSTACK_HOME")
    return Path(home).expanduser() if home else Path.home() / ".dexstack"
