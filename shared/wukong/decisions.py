"""The executor's decisions, as pure functions: no Redis, no invocations, no clock.

After a task runs, the executor asks :func:`after_task` what the output needs (storing, which
counters to bump, which dependents are ready), then :func:`split_ready` which ready dependents
it continues with itself and which it invokes new executors for, and :func:`inline_value`
whether a value can ride inside an invocation payload. The I/O driver is ``executor.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from wukong.schedule import DependentRef, TaskRecord

#: Room kept in a payload for everything but the inline value (settings, records, framing).
PAYLOAD_RESERVE = 64 * 1024


@dataclass(frozen=True)
class NextSteps:
    """What must happen once a task's output exists, in this order."""

    store_value: bool  # write the output to the KV store (before any counter is bumped)
    fan_in: tuple[DependentRef, ...]  # counters to bump; the ones we complete are ours to run
    ready: tuple[int, ...]  # dependents fed by this task alone, runnable now
    publish_result: bool  # a requested key: its value goes to the metadata store
    clustered: bool  # the output is big: keep every ready dependent in this executor


def needs_size(record: TaskRecord) -> bool:
    """Whether a decision depends on the output's serialized size.

    A link in a chain (one dependent, fed only by this task) stays in memory and never needs to
    be serialized at all; anything else does.
    """
    if record.is_output or not record.dependents:
        return True
    return not (len(record.dependents) == 1 and not record.dependents[0].is_fan_in)


def inline_value(nbytes: int, payload_limit: int) -> bool:
    """Whether a value of ``nbytes`` serialized bytes may travel inside an invocation payload."""
    return nbytes + PAYLOAD_RESERVE <= payload_limit


def after_task(record: TaskRecord, nbytes: int | None, payload_limit: int, big_task_threshold: int) -> NextSteps:
    """Decide what a finished task's output needs. ``nbytes`` is None when not needs_size()."""
    fan_in = tuple(ref for ref in record.dependents if ref.is_fan_in)
    ready = tuple(ref.tid for ref in record.dependents if not ref.is_fan_in)
    clustered = nbytes is not None and nbytes >= big_task_threshold and bool(record.dependents)
    invokes_others = len(ready) > 1 and not clustered
    too_big_to_inline = nbytes is not None and not inline_value(nbytes, payload_limit)
    return NextSteps(
        store_value=bool(fan_in) or (invokes_others and too_big_to_inline),
        fan_in=fan_in,
        ready=ready,
        publish_result=record.is_output,
        clustered=clustered,
    )


def split_ready(ready: list[int], become: int | None, clustered: bool) -> tuple[list[int], list[int]]:
    """(run here, invoke elsewhere) for the dependents that are ready now.

    The executor becomes the schedule's ``become`` dependent when it is ready, else the first
    ready one; a clustered (big) output keeps all of them local so the big value never moves.
    """
    if not ready:
        return [], []
    if clustered:
        return list(ready), []
    first = become if become in ready else ready[0]
    return [first], [t for t in ready if t != first]


def still_needed(queued: list[TaskRecord]) -> set[int]:
    """Task ids whose values the executor must keep in memory for its queued local tasks."""
    return {tid for record in queued for tid, _ in record.deps}
