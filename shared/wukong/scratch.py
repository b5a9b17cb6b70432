"""Task outputs that own a directory on the local disk: partd's files, behind Dask's disk shuffle.

A ``partd.File`` made without a path deletes its directory when the object is garbage
collected, in the process that made it. Under Wukong that process's executor drops the object
as soon as its own tasks are done, while other executors still read and write the directory,
so groups went missing without any error. The local runtime therefore takes over such a
directory (the object no longer deletes it), records it with the job, and the client removes it
when the job ends. Lambda executors share no disk: such graphs are refused there
(:mod:`wukong.graph_checks`).
"""

from __future__ import annotations

import shutil
from typing import Any

#: How deep partd's wrappers go (Python(Snappy(File(...))) is three).
_MAX_WRAPPERS = 8


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
