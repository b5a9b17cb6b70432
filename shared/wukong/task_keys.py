"""The Dask key of an invocation's start task, for error messages, read without importing task code.

Schedule blobs hold the tasks' functions and arguments; a crash report must not load them (the
module may be missing, and on AWS the reader is a different, less trusted function), so every class
outside the schedule's own records is replaced by an inert stub while peeking.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from wukong.invocation import Invocation
from wukong.storage import JobStorage

#: Classes whose fields a schedule blob is peeked for; every other class becomes an inert stub.
SCHEDULE_CLASSES = {("wukong.schedule", name) for name in ("Path", "TaskRecord", "DependentRef")}


class _Opaque:
    """Stands in for any class of a task (its function, arguments, Dask's node types): absorbs them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Opaque":
        return _Opaque()

    # pickle fills reduced containers with these (APPEND, APPENDS, SETITEM)
    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class _SchedulePeek(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SCHEDULE_CLASSES:
            return super().find_class(module, name)
        return type(name, (_Opaque,), {})  # a class per name: NEWOBJ needs a type


def peek_key(blob: bytes, tid: int) -> Any:
    """The Dask key of task ``tid`` in a serialized Path or {tid: TaskRecord}, importing no task code."""
    records = _SchedulePeek(io.BytesIO(blob)).load()
    records = getattr(records, "records", records)
    return records[tid].key


def task_key(inv: Invocation, storage: JobStorage) -> str:
    """repr of the invocation's start task: from its path in the MDS, else the blobs it carried."""
    candidates = []
    if inv.start_path is not None:
        candidates.append(lambda: storage.get_path(inv.start_path))
    candidates += [lambda blob=blob: blob for blob in (inv.records_blob, inv.path_blob) if blob is not None]
    for blob in candidates:
        try:
            return repr(peek_key(blob(), inv.start))
        except Exception:  # a path already deleted, a record that does not peek: try the next source
            continue
    return f"<task id {inv.start}>"
