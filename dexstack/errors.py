"""The one base class of failures whose message is the whole story.

A `DexstackError` (the store's `PolicyRejected`, the manifest's `ManifestError`, a busy ROS domain,
a graph that stopped) is a user-facing refusal: the CLI prints its message as one line, with no
traceback, and exits non-zero (`dexstack.cli.main`). A bug still raises something else and shows
its traceback.
"""

from __future__ import annotations


class DexstackError(Exception):
    """A refusal or failure the user can act on; its message says what and why."""


def one_line(exc: BaseException) -> str:
    """`exc`'s message on one line (whitespace runs collapsed); its type name if it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
