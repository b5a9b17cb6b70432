"""The executor's decisions, as pure functions: no Redis, no invocations, no clock.

After a task runs, the executor asks :func:`after_task` what the output needs (storing, which
counters to bump, which dependents are ready), then :func:`split_ready` which ready dependents
it continues with itself and which it invokes new executors for, and :func:`inline_value`
whether a value can ride inside an invocation payload; delayed I/O and chunking decide with
:func:`after_poll` and :func:`chunk_count`. The I/O driver is ``executor.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from wukong.schedule import DependentRef, TaskRecord

#: Largest chunk of a chunked value (a Redis string holds 512 MB at most; half leaves room).
MAX_CHUNK = 256 * 1024 * 1024
#: Longest pause between two polls of a delayed output's counters (the backoff's cap).
MAX_POLL_INTERVAL = 0.25
#: Shortest time a waiter tolerates invocations queued for a free executor (a fixed pool) before
#: it gives its slot back: longer than an idle worker takes to pick a payload up (~1 ms here).
BACKLOG_GRACE = 0.05
#: Longest such time, whatever the output's size.
MAX_BACKLOG_GRACE = 1.0
#: Write rate assumed when pricing a hold (bytes/s; 0.6-1.5 GB/s measured into Valkey here).
WRITE_RATE = 1e9

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


def hand_off(steps: NextSteps, max_task_fanout: int) -> bool:
    """Whether a fan-out is wide enough to hand to the KV proxy: the ready dependents plus the
    fan-in counters to bump (each may turn into an invoke), unless the output is clustered."""
    return not steps.clustered and len(steps.ready) + len(steps.fan_in) >= max_task_fanout


def still_needed(queued: list[TaskRecord]) -> set[int]:
    """Task ids whose values the executor must keep in memory for its queued local tasks."""
    return {tid for record in queued for tid, _ in record.deps}


def chunk_count(nbytes: int, threshold: int | None, configured: int | None, n_shards: int,
                value_limit: int = 512 * 1024 * 1024) -> int:
    """In how many chunks a value of ``nbytes`` is stored.

    - Over ``value_limit`` (the longest string the servers store) it is always chunked: a value
      that does not fit one Redis string must still be stored, whatever chunk_large_tasks says.
    - Else it is whole (1) below ``threshold`` or when chunking is off (``threshold`` None).
    - A chunked value gets ``configured`` chunks (default one per shard), raised so that no
      chunk exceeds MAX_CHUNK or ``value_limit``, and never more chunks than bytes.
    """
    if nbytes <= value_limit and (threshold is None or nbytes < threshold):
        return 1
    n = max(configured or n_shards, -(-nbytes // min(MAX_CHUNK, value_limit)))
    return max(1, min(n, nbytes))


# --- delayed I/O ------------------------------------------------------------------------------
# A big (clustered) output with fan-in dependents is held in memory instead of being written, and
# the executor polls those counters, hoping to be the last upstream of each: then it sets its bit,
# claims the dependent and runs it here, and the big value never touches the KV store. Otherwise,
# at the deadline, it writes the value and then bumps the counters, exactly as without the delay.
#
# Why it cannot deadlock. A waiter first *holds* each counter it waits on: a Lua script registers it
# as the counter's only waiter (all of an output's counters or none; a refused executor writes and
# bumps at once). An executor waits only with an empty local queue, so every task it ran has set
# its bits, except on the counters it holds. Take, among all held counters, the earliest C in the
# graph's topological order. Every other upstream bit of C comes from a task that is not behind
# any held counter (that counter would be earlier than C), so it is running, queued, or done; and
# it cannot be withheld by another waiter, because C has one holder. So C completes and its holder
# claims it (its own held bits on C it sets together, see completable(): an executor never waits
# on itself): waits form no cycle, and no two executors ever wait on each other. With unbounded
# concurrency (Lambda) every wait ends that way; a bounded pool can leave the missing upstream
# queued behind waiters: a waiter gives its slot back once work has queued for backlog_grace(),
# and the deadline (at most half the function timeout) ends every wait regardless.


def backlog_grace(nbytes: int) -> float:
    """How long a held output of ``nbytes`` may keep a slot while invocations queue: about what
    writing it would cost, so holding never idles a slot for longer than the hold could save.
    (A fixed 1 s made GEMM with 8 MB held blocks take 14 s instead of 3.5 s on two workers.)"""
    return min(MAX_BACKLOG_GRACE, max(BACKLOG_GRACE, nbytes / WRITE_RATE))


def delays_io(steps: NextSteps, max_wait: float) -> bool:
    """Whether to hold a finished output in memory instead of writing it for its fan-ins."""
    return steps.clustered and bool(steps.fan_in) and max_wait > 0


def delay_deadline(now: float, invocation_started: float, max_wait: float, function_timeout: float | None) -> float:
    """When a delayed output must be written: ``max_wait`` from now, and always by half the
    function timeout (measured from the invocation's start), so the write is never cut off."""
    deadline = now + max_wait
    if function_timeout is not None:
        deadline = min(deadline, invocation_started + function_timeout / 2)
    return deadline


@dataclass(frozen=True)
class DelayStep:
    """What to do after one poll of a delayed output's counters."""

    claim: tuple[DependentRef, ...]  # bump without the value: our bit completes these (or was set before)
    rest: tuple[DependentRef, ...]  # counters still missing other upstreams
    write: bool  # give up: write the value, then bump ``rest``


def completable(polled: Sequence[tuple[DependentRef, tuple[int, bool]]]) -> set[int]:
    """Fan-ins every one of whose missing bits is held by this executor: (ref, (bits set, our bit
    set)) for each counter of each output it holds. Two held outputs of one executor may feed the
    same fan-in; each waiting for the other's bit would wait on itself."""
    ours_missing = Counter(ref.tid for ref, (_, mine) in polled if not mine)
    return {ref.tid for ref, (count, _) in polled if count + ours_missing[ref.tid] >= ref.n_deps}


def after_poll(refs: tuple[DependentRef, ...], polls: list[tuple[int, bool]] | None, now: float,
               deadline: float, backlog: int = 0, waited: float = 0.0,
               ours: set[int] | frozenset[int] = frozenset(), grace: float = BACKLOG_GRACE) -> DelayStep:
    """Decide from one poll: ``polls`` holds (bits set, our bit set) per ref, or None when
    another executor already waits on one of the counters (then never wait: write at once).
    ``backlog`` invocations waiting for an executor (a fixed pool) also end a wait that has lasted
    ``waited`` >= ``grace`` seconds (see :func:`backlog_grace`): the upstream we wait for may be among them.

    ``ours`` (from :func:`completable`) are the fan-ins we complete by bumping every held bit.
    Our bit already set means an earlier attempt of this invocation bumped the counter: bumping
    again is idempotent, and the retry flag lets us re-claim what that attempt claimed.
    """
    if polls is None:
        return DelayStep(claim=(), rest=refs, write=True)
    claim = tuple(r for r, (count, mine) in zip(refs, polls) if mine or count >= r.n_deps - 1 or r.tid in ours)
    rest = tuple(r for r in refs if r not in claim)
    return DelayStep(claim=claim, rest=rest, write=bool(rest) and (now >= deadline or (backlog > 0 and waited >= grace)))


def poll_interval(n_polls: int, until_deadline: float) -> float:
    """Exponential backoff between polls, capped, and never sleeping past the deadline."""
    return max(0.0, min(0.005 * 2 ** min(n_polls, 16), MAX_POLL_INTERVAL, until_deadline))
