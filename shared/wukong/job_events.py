"""How a job ended, as one frozen type: done, or an error (a task failed, Wukong failed, the job was
cancelled or timed out). Built, serialized, parsed and re-raised here only.

Its dict form (:meth:`JobEvent.to_dict`) is the wire format: the job's event list in Redis, the
cause of a Step Functions failure, and (through ``service.models``) the HTTP API's error.
"""

from __future__ import annotations

import base64
import json
import os
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from wukong import errors
from wukong.serialization import dumps, loads


class EventKind(StrEnum):
    DONE = "done"
    ERROR = "error"


class EndReason(StrEnum):
    """Why an error event ended its job (the job's ``ended`` marker holds it too)."""

    FAILED = "failed"  # a task raised, or Wukong itself failed (``internal``)
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


#: The type an event carries when a Redis server was lost (the client tells it apart).
REDIS_UNAVAILABLE = f"{errors.RedisUnavailableError.__module__}.{errors.RedisUnavailableError.__qualname__}"


@dataclass(frozen=True)
class JobEvent:
    kind: EventKind
    reason: EndReason | None = None  # errors only
    key: str | None = None  # repr of the failed task's key, or a stand-in such as "<job>"
    type: str | None = None  # the exception's qualified type name
    message: str = ""
    traceback: str = ""
    exception: str | None = None  # the pickled exception, base64, when it pickles
    internal: bool = False  # Wukong failed, not the task's code
    worker: str | None = None  # which executor (process) reported it

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def done(cls) -> JobEvent:
        return cls(EventKind.DONE)

    @classmethod
    def task_failed(cls, key: Any, exc: BaseException, internal: bool = False, worker: str | None = None,
                    shown_key: str | None = None) -> JobEvent:
        """Task ``key`` (any Dask key; stored as its repr) raised ``exc``, carried pickled when it
        pickles. ``shown_key`` is the key's repr when that is all the caller has."""
        try:
            blob: str | None = base64.b64encode(dumps(exc)).decode()
            loads(base64.b64decode(blob))
        except Exception:
            blob = None
        return cls(EventKind.ERROR, EndReason.FAILED, key=repr(key) if shown_key is None else shown_key,
                   type=f"{type(exc).__module__}.{type(exc).__qualname__}", message=str(exc)[:4000],
                   traceback="".join(traceback.format_exception(exc))[-8000:], exception=blob,
                   internal=internal, worker=worker or f"pid{os.getpid()}")

    @classmethod
    def cancelled(cls, message: str) -> JobEvent:
        return cls(EventKind.ERROR, EndReason.CANCELLED, message=message)

    @classmethod
    def timed_out(cls, message: str) -> JobEvent:
        return cls(EventKind.ERROR, EndReason.TIMEOUT, message=message)

    # --- reading ----------------------------------------------------------------------------------

    @property
    def is_done(self) -> bool:
        return self.kind is EventKind.DONE

    @property
    def status(self) -> str:
        """The job's end as a report says it: succeeded, failed, cancelled or timed out."""
        if self.is_done:
            return "succeeded"
        return {EndReason.TIMEOUT: "timed out", EndReason.CANCELLED: "cancelled"}.get(self.reason, "failed")

    # --- the wire form ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields; empty ones are left out (a done event is ``{"kind": "done"}``)."""
        out: dict[str, Any] = {"kind": self.kind.value}
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value not in (None, "", False):
                out[f.name] = value.value if isinstance(value, StrEnum) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobEvent:
        """Parse the wire form; fields it does not know (a Step Functions cause's ``job_id``) are
        ignored, and an error without a reason is a failure."""
        kind = EventKind(data.get("kind", EventKind.ERROR))
        reason = None
        if kind is EventKind.ERROR:
            try:
                reason = EndReason(data.get("reason") or EndReason.FAILED)
            except ValueError:
                reason = EndReason.FAILED
        text = {name: data.get(name) for name in ("key", "type", "exception", "worker")}
        return cls(kind, reason, message=str(data.get("message") or ""), traceback=str(data.get("traceback") or ""),
                   internal=bool(data.get("internal")),
                   **{name: None if value is None else str(value) for name, value in text.items()})

    @classmethod
    def from_json(cls, text: str | bytes) -> JobEvent:
        return cls.from_dict(json.loads(text))


def raise_job_error(event: JobEvent) -> None:
    """Re-raise an error event: the task's own exception type, with a note naming the task."""
    if event.reason is EndReason.TIMEOUT:
        raise errors.JobTimeoutError(event.message)
    if event.reason is EndReason.CANCELLED:
        raise errors.JobFailedError(event.message or "job cancelled")
    key = event.key or "<unknown>"
    exc: BaseException | None = None
    if event.exception:
        try:
            exc = loads(base64.b64decode(event.exception))
        except Exception:
            exc = None
    if event.internal:
        raise errors.JobFailedError(
            f"Wukong failed while running task {key}: {event.type}: {event.message}\n{event.traceback}"
        ) from exc
    if not isinstance(exc, BaseException):
        exc = _own_error(event) or errors.RemoteTaskError(f"task {key} raised {event.type}: {event.message}")
    exc.add_note(f"Wukong: raised by task {key} in executor {event.worker or '?'}")
    if event.traceback:
        exc.add_note("Remote traceback:\n" + event.traceback.rstrip())
    raise exc


def _own_error(event: JobEvent) -> BaseException | None:
    """One of Wukong's own errors, rebuilt from its type name and message when its pickle did not
    travel (so a caller's ``except MemoryLimitError`` still works)."""
    module, _, name = (event.type or "").rpartition(".")
    cls = getattr(errors, name, None) if module == "wukong.errors" else None
    if isinstance(cls, type) and issubclass(cls, errors.WukongError):
        try:
            return cls(event.message)
        except Exception:
            return None
    return None
