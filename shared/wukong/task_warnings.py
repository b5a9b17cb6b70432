"""Warnings raised inside tasks, carried back to the caller's own ``warnings`` machinery.

Executors record every warning a task raises (whatever their own filters say), with the task's
key, and store them with the job; the client re-issues them with ``warnings.warn_explicit``
before it returns the results, so the caller's filters, ``pytest.warns`` and ``-W error`` act
on them as under Dask's own schedulers. A warning turned into an error by the caller's filters
carries a note naming the task.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from wukong.serialization import dumps, loads

#: At most this many warnings are kept per job (a task in a loop may warn millions of times).
MAX_PER_JOB = 1000


@dataclass(frozen=True)
class TaskWarning:
    """One warning a task raised: what ``warn_explicit`` needs to raise it again."""

    message: Any  # the Warning instance, or its text when the instance does not pickle
    category: type[Warning]
    filename: str
    lineno: int
    module: str | None  # the module that warned, as the caller's filters match it
    key: str  # repr of the task's key

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the job API (no pickle): the category by its dotted name, the text."""
        return {"category": f"{self.category.__module__}.{self.category.__qualname__}", "message": str(self.message),
                "filename": self.filename, "lineno": self.lineno, "module": self.module, "task": self.key}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskWarning":
        return cls(data["message"], _category(data["category"]), data["filename"], data["lineno"],
                   data.get("module"), data["task"])


def _category(dotted: str) -> type[Warning]:
    """The warning class a dotted name names, or UserWarning when this process cannot import it."""
    module, _, name = dotted.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return UserWarning
    return found if isinstance(found, type) and issubclass(found, Warning) else UserWarning


def _module_of(filename: str) -> str | None:
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return None


def pack(caught: Sequence[warnings.WarningMessage], key: Hashable) -> list[bytes]:
    """The serialized warnings ``caught`` while the task ``key`` ran."""
    out = []
    for w in caught:
        item = TaskWarning(w.message, w.category, w.filename, w.lineno, _module_of(w.filename), repr(key))
        try:
            out.append(dumps(item))
        except Exception:  # a warning whose instance does not pickle still reaches the caller, as text
            out.append(dumps(TaskWarning(str(w.message), w.category, w.filename, w.lineno, item.module, item.key)))
    return out


def unpack(blobs: Sequence[bytes]) -> list[TaskWarning]:
    """The stored warnings; one whose category class cannot be imported here is left out."""
    out = []
    for blob in blobs:
        try:
            out.append(loads(blob))
        except Exception:
            continue
    return out


def reissue(items: Sequence[TaskWarning], registry: dict | None = None) -> None:
    """Raise each warning again in this process, through the caller's filters.

    ``registry`` deduplicates like a module's ``__warningregistry__`` (the "default" action shows
    a warning once per place it comes from); an error filter's exception names the task.
    """
    registry = {} if registry is None else registry
    for w in items:
        # module=None, passed explicitly, makes CPython drop the warning: leave it out when unknown
        where = {"module": w.module} if w.module else {}
        try:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=registry, **where)
        except Warning as exc:  # the caller's filters made it an error
            exc.add_note(f"Wukong: raised by task {w.key}")
            raise
