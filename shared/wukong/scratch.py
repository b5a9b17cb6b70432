"""Task outputs that own a directory on the local disk: partd's files, behind Dask's disk shuffle.

A ``partd.File`` made without a path deletes its directory when the object is garbage
collected, in the process that made it. Under Wukong that process's executor drops the object
as soon as its own tasks are done, while other executors still read and write the directory,
so groups went missing without any error. The local runtime therefore takes over such a
directory (the object no longer deletes it) and records it with the job; when the job ends the
cluster keeps it a short while (:class:`ScratchDirs`), then removes it. Lambda executors share
no disk: such graphs are refused there (:mod:`wukong.graph_checks`).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterable
from typing import Any

#: How deep partd's wrappers go (Python(Snappy(File(...))) is three).
_MAX_WRAPPERS = 8
#: How long a finished job's directories stay. Under Dask's multiprocessing scheduler they outlive
#: compute() (the pool process still holds the partd.File), and Dask's own tests look at them
#: then; removing them a minute later, or when the cluster closes, keeps a long-lived server's
#: disk from filling with old shuffles.
GRACE = 60.0


def take_over_dirs(value: Any) -> list[str]:
    """Directories that ``value`` (a partd object, maybe wrapped) would delete when collected;
    after this call it no longer will, and the caller must remove them."""
    if (type(value).__module__ or "").split(".")[0] != "partd":
        return []
    dirs = []
    for _ in range(_MAX_WRAPPERS):
        if getattr(value, "_explicitly_given_path", True) is False and isinstance(getattr(value, "path", None), str):
            value._explicitly_given_path = True  # partd's own switch: a given path is never deleted
            dirs.append(value.path)
        value = getattr(value, "partd", None)
        if value is None:
            break
    return dirs


def remove_dirs(paths: list[str]) -> None:
    """Remove directories taken over from a finished job's tasks (each at most once; missing is fine)."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


class ScratchDirs:
    """Finished jobs' directories, removed ``grace`` seconds after their job ended (checked as
    later jobs end) and all at :meth:`close`. Thread-safe: a job service ends jobs on threads."""

    def __init__(self, grace: float = GRACE):
        self.grace = grace
        self._held: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def add(self, paths: Iterable[str]) -> None:
        now = time.monotonic()
        with self._lock:
            due = [p for t, p in self._held if now - t >= self.grace]
            self._held = [(t, p) for t, p in self._held if now - t < self.grace] + [(now, p) for p in paths]
        remove_dirs(due)

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        remove_dirs([p for _, p in held])
