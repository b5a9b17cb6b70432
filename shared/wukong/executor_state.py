"""One executor invocation as a pure state machine: events in, typed instructions out.

:class:`ExecutorState` holds the protocol that combines the rules of :mod:`wukong.decisions`: run
the start task, then store, publish, bump fan-in counters, hold big outputs (delayed I/O), hand
wide fan-outs to the KV proxy, and invoke executors, until no work is left. It does no I/O and
reads no clock of its own (both are injected), so a driver for Redis and an invoker
(:mod:`wukong.executor`), a test or the simulator can carry its instructions out alike.

Each instruction is answered by the event named in its docstring (or by ``None``); ``Finish`` and
``FailTask`` end the invocation. See ``docs/architecture.md`` for the diagram.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from wukong import decisions
from wukong.errors import OutputTooLargeError
from wukong.invocation import Invocation, JobSettings
from wukong.schedule import DependentRef, TaskRecord

#: How often a long-running executor checks whether its job has ended, and reports progress.
CHECK_INTERVAL = 1.0


# --- instructions -----------------------------------------------------------------------------

class Instruction:
    """Something the driver must carry out. ``terminal`` ones end the invocation."""

    __slots__ = ()
    terminal: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ClaimStart(Instruction):
    """Claim the start task (at-least-once delivery). Answer: :class:`StartClaimed`."""

    tid: int
    attempt: int


@dataclass(frozen=True, slots=True)
class ReportProgress(Instruction):
    """The invocation started running tasks (e.g. an AWS heartbeat). Answer: None."""


@dataclass(frozen=True, slots=True)
class ReadSegment(Instruction):
    """Read the stored schedule segment that owns a task's record. Answer: :class:`SegmentRead`."""

    segment: int


@dataclass(frozen=True, slots=True)
class CheckEnded(Instruction):
    """Report the counts so far and ask whether the job has ended. Answer: :class:`EndedChecked`."""


@dataclass(frozen=True, slots=True)
class FetchInputs(Instruction):
    """Read and deserialize the values of ``tids`` from the KV store, inputs of ``record``.
    Answer: :class:`InputsFetched`."""

    record: TaskRecord
    tids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RunTask(Instruction):
    """Run ``record``'s task on ``args`` (Dask key -> value); serialize its output when
    ``serialize``. Answer: :class:`TaskFinished`."""

    record: TaskRecord
    args: dict[Any, Any]
    serialize: bool


@dataclass(frozen=True, slots=True)
class PublishResult(Instruction):
    """Store a requested key's value as a job result. Answer: :class:`ResultPublished`."""

    tid: int
    blob: bytes


@dataclass(frozen=True, slots=True)
class NotifyJobEnded(Instruction):
    """This executor stored the job's last result: whoever awaits the job can be told. Answer: None."""


@dataclass(frozen=True, slots=True)
class StoreValue(Instruction):
    """Write a task's serialized output to the KV store. Answer: None."""

    tid: int
    blob: bytes


@dataclass(frozen=True, slots=True)
class BumpCounters(Instruction):
    """Store ``value`` (task id, bytes) first when given, then set this upstream's bit in each
    fan-in counter of ``refs``. Answer: :class:`CountersBumped`."""

    refs: tuple[DependentRef, ...]
    value: tuple[int, bytes] | None
    claimer: int
    retry: bool


@dataclass(frozen=True, slots=True)
class Invoke(Instruction):
    """Count these executors in the job's totals, then invoke them, one per serialized
    :class:`Invocation` (counted first: the job's finish test must never see an invoked
    executor's finish before its invocation). Answer: None."""

    payloads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class HandOffToProxy(Instruction):
    """Give a wide fan-out to the KV proxy: store ``value`` when given, bump ``fan_in``, invoke the
    ready and claimed dependents other than those it returns to run here. Answer:
    :class:`HandedOff`, or :class:`ProxyRefused` when the proxy cannot take it."""

    tid: int
    value: bytes | None
    fan_in: tuple[DependentRef, ...]
    ready: tuple[int, ...]
    become: int | None
    payloads: dict[int, bytes]
    claimer: int
    retry: bool


@dataclass(frozen=True, slots=True)
class Hold(Instruction):
    """A big output stays in memory, waiting to complete its fan-ins itself. Answer: None."""

    tid: int
    nbytes: int
    deadline: float


@dataclass(frozen=True, slots=True)
class PollHeld(Instruction):
    """Hold and read the fan-in counters of each held output (one tuple of refs each); the invoker's
    backlog too when ``want_backlog``. Answer: :class:`HeldPolled`."""

    refs: tuple[tuple[DependentRef, ...], ...]
    claimer: int
    want_backlog: bool


@dataclass(frozen=True, slots=True)
class Sleep(Instruction):
    """Wait before the next poll of the held outputs. Answer: None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ReleaseHold(Instruction):
    """A held output is done waiting: ``written`` to the KV store, or not (its fan-ins are ours).
    Answer: None."""

    tid: int
    written: bool


@dataclass(frozen=True, slots=True)
class Finish(Instruction):
    """The invocation is over: "done" (no work left), "duplicate" or "ended" (the start claim said
    so), or "job ended" (a check found the job over)."""

    terminal: ClassVar[bool] = True
    reason: str


@dataclass(frozen=True, slots=True)
class FailTask(Instruction):
    """End the job: task ``key`` failed with ``error``."""

    terminal: ClassVar[bool] = True
    key: Any
    error: BaseException


# --- events -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StartClaimed:
    outcome: str  # "run", "duplicate" or "ended"


@dataclass(frozen=True, slots=True)
class SegmentRead:
    records: Mapping[int, TaskRecord]


@dataclass(frozen=True, slots=True)
class EndedChecked:
    ended: bool


@dataclass(frozen=True, slots=True)
class InputsFetched:
    values: Mapping[int, Any]


@dataclass(frozen=True, slots=True)
class TaskFinished:
    value: Any
    blob: bytes | None  # the serialized output, when RunTask asked for it
    seconds: float  # time in the task's own code


@dataclass(frozen=True, slots=True)
class ResultPublished:
    last: bool  # it was the job's last requested result


@dataclass(frozen=True, slots=True)
class CountersBumped:
    claimed: tuple[int, ...] | list[int]  # the dependents whose counters this bump completed


@dataclass(frozen=True, slots=True)
class HandedOff:
    local: tuple[int, ...] | list[int]  # dependents to run here
    payload_bytes: int
    invoked: int  # executors the proxy invoked (it counted them in the job's totals itself)


@dataclass(frozen=True, slots=True)
class ProxyRefused:
    reason: str


@dataclass(frozen=True, slots=True)
class HeldPolled:
    polls: tuple | list  # per held output: [(bits set, our bit set), ...], or None if another holds one
    backlog: int  # invocations waiting for an executor (0 unless asked)


# --- the state --------------------------------------------------------------------------------

@dataclass
class Counts:
    """What the protocol itself counts for the job report (the driver adds storage traffic)."""

    tasks: int = 0
    payload_bytes: int = 0
    task_seconds: float = 0.0
    duplicates: int = 0  # invocations dropped because they were duplicates
    delayed_claims: int = 0  # fan-ins a held big output completed itself (its value never written)
    delayed_writes: int = 0  # held big outputs written after all (refused a hold, or the wait ran out)
    invoked: int = 0  # executors invoked; already in the job's totals (see Invoke): for the hooks only

    def drain(self) -> dict[str, Any]:
        out = {"tasks": self.tasks, "payload_bytes": self.payload_bytes, "invoked": self.invoked,
               "task_seconds": self.task_seconds, "duplicates_dropped": self.duplicates,
               "delayed_io_claims": self.delayed_claims, "delayed_io_writes": self.delayed_writes}
        self.tasks = self.payload_bytes = self.duplicates = self.invoked = 0
        self.delayed_claims = self.delayed_writes = 0
        self.task_seconds = 0.0
        return out


@dataclass
class _Held:
    """A big output held in memory (delayed I/O) and the fan-in counters still missing our bit."""

    record: TaskRecord
    value: Any
    blob: bytes
    refs: tuple[DependentRef, ...]
    deadline: float
    since: float


class _Ended(Exception):
    """A check found the job over: the protocol stops quietly."""


class ExecutorState:
    """One invocation's protocol state: known records, values in memory, the local queue, holds.

    ``records`` and ``memory`` are what the invocation brought (its records, its inline values
    deserialized); ``encode`` serializes Wukong's own envelopes (invocations for new executors);
    ``clock`` is a monotonic clock; ``proxy`` says whether a KV proxy can take wide fan-outs.
    Drive it with :meth:`start`, then :meth:`handle` with each instruction's answer.
    """

    def __init__(self, job: JobSettings, start: int, start_segment: int | None, attempt: int,
                 records: dict[int, TaskRecord], memory: dict[int, Any], *,
                 encode: Callable[[Any], bytes], clock: Callable[[], float], proxy: bool = False):
        self.job = job
        self.start_tid = start
        self.start_segment = start_segment
        self.attempt = attempt
        self.records = records
        self.memory = memory
        self.encode = encode
        self.clock = clock
        self.proxy = proxy
        self.counts = Counts()
        self.current: int | None = None
        self.started = self.last_check = clock()
        self.held: list[_Held] = []
        self.n_polls = 0
        self._claim = {"claimer": start, "retry": attempt > 0}
        self._protocol: Generator[Instruction, Any, None] | None = None

    # --- driving ---------------------------------------------------------------------------------

    def start(self) -> Instruction:
        """The first instruction."""
        self._protocol = self._run()
        return next(self._protocol)

    def handle(self, event: Any) -> Instruction:
        """The next instruction, given the answer to the last one."""
        return self._protocol.send(event)

    def current_key(self) -> Any:
        """The key of the task running now (the start task before the first one runs)."""
        tid = self.current if self.current is not None else self.start_tid
        record = self.records.get(tid)
        return record.key if record is not None else f"<task id {tid}>"

    # --- the protocol ----------------------------------------------------------------------------

    def _run(self) -> Generator[Instruction, Any, None]:
        claim = yield ClaimStart(self.start_tid, self.attempt)
        if claim.outcome != "run":
            self.counts.duplicates += claim.outcome == "duplicate"
            yield Finish(claim.outcome)
            return
        yield ReportProgress()
        try:
            failed = yield from self._execute()
        except _Ended:
            yield Finish("job ended")
            return
        yield failed or Finish("done")

    def _execute(self) -> Generator[Instruction, Any, FailTask | None]:
        start = self.records.get(self.start_tid) or (yield from self._read(self.start_tid, self.start_segment))
        queue: deque[TaskRecord] = deque([start])
        while queue or self.held:
            if not queue:  # wait only with nothing else to do: the deadlock-freedom argument needs it
                queue.extend((yield from self._wait_held()))
                continue
            record = queue.popleft()
            self.current = record.tid
            if self.clock() - self.last_check >= CHECK_INTERVAL:
                yield from self._check_ended()
            value, blob = yield from self._run_task(record)
            if blob is not None and self.job.max_output_size is not None and len(blob) > self.job.max_output_size:
                return FailTask(record.key, OutputTooLargeError(
                    f"the output of task {record.key!r} is {len(blob):,} bytes serialized, over "
                    f"max_output_size={self.job.max_output_size:,}; split the work into smaller chunks or "
                    f"raise the limit"))
            if self.clock() - self.last_check >= CHECK_INTERVAL:  # after a long task: write nothing if over
                yield from self._check_ended()
            local, from_holds = yield from self._schedule_after(record, value, blob)
            if local:
                segment_of = {ref.tid: ref.path for ref in record.dependents}
                for tid in local:
                    queue.append(self.records.get(tid) or (yield from self._read(tid, segment_of[tid])))
                self.memory[record.tid] = value
            queue.extend(from_holds)
            keep = decisions.still_needed(list(queue))
            for tid in [t for t in self.memory if t not in keep]:
                del self.memory[tid]
        return None

    def _read(self, tid: int, segment: int | None) -> Generator[Instruction, Any, TaskRecord]:
        """The record of ``tid``, reading the segment that owns it (records already known stay)."""
        if segment is None:
            raise LookupError(f"invocation for task id {tid} carries neither its record nor its path")
        read = yield ReadSegment(segment)
        for t, rec in read.records.items():
            self.records.setdefault(t, rec)
        return self.records[tid]

    def _check_ended(self) -> Generator[Instruction, Any, None]:
        self.last_check = self.clock()
        checked = yield CheckEnded()
        if checked.ended:
            raise _Ended()

    def _run_task(self, record: TaskRecord) -> Generator[Instruction, Any, tuple[Any, bytes | None]]:
        missing = tuple(tid for tid, _ in record.deps if tid not in self.memory)
        if missing:
            fetched = yield FetchInputs(record, missing)
            self.memory.update(fetched.values)
        args = {key: self.memory[tid] for tid, key in record.deps}
        done = yield RunTask(record, args, decisions.needs_size(record))
        self.counts.tasks += 1
        self.counts.task_seconds += done.seconds
        return done.value, done.blob

    def _schedule_after(self, record: TaskRecord, value: Any, blob: bytes | None
                        ) -> Generator[Instruction, Any, tuple[list[int], list[TaskRecord]]]:
        """Store, publish, bump counters and invoke as decided; returns (the tasks to run here,
        the records of fan-ins that held outputs completed, also to run here)."""
        job = self.job
        steps = decisions.after_task(record, None if blob is None else len(blob), job.payload_limit,
                                     job.big_task_threshold)
        if steps.publish_result:
            published = yield PublishResult(record.tid, blob)
            if published.last:
                yield NotifyJobEnded()
        if self.proxy and decisions.hand_off(steps, job.max_task_fanout):
            return (yield from self._hand_off(record, blob, steps)), []
        delay = decisions.delays_io(steps, job.delayed_io_max_wait)
        stored = steps.store_value and not delay
        claimed: list[int] = []
        if steps.fan_in and not delay:  # the value (when stored) goes first, in the same call
            bumped = yield BumpCounters(steps.fan_in, (record.tid, blob) if stored else None, **self._claim)
            claimed = list(bumped.claimed)
        elif stored:
            yield StoreValue(record.tid, blob)
        from_holds: list[TaskRecord] = []
        if delay:
            now = self.clock()
            deadline = decisions.delay_deadline(now, self.started, job.delayed_io_max_wait, job.function_timeout)
            self.held.append(_Held(record, value, blob, steps.fan_in, deadline, now))
            yield Hold(record.tid, len(blob), deadline)
            from_holds = yield from self._poll_held()  # we may be the last upstream already
        local, remote = decisions.split_ready(list(steps.ready) + claimed, record.become, steps.clustered)
        if remote:
            inline = blob is not None and decisions.inline_value(len(blob), job.payload_limit)
            if not inline and not stored:
                yield StoreValue(record.tid, blob)
            yield from self._send(self._payloads(record, remote, blob if inline else None))
        return local, from_holds

    def _poll_held(self) -> Generator[Instruction, Any, list[TaskRecord]]:
        """Poll the counters of every held output, claim what our bits complete, write what must
        be written; returns the records of the fan-ins now ours, their held inputs in memory."""
        now = self.clock()
        graces = [decisions.backlog_grace(len(h.blob)) for h in self.held]
        want_backlog = any(now - h.since >= grace for h, grace in zip(self.held, graces))
        polled = yield PollHeld(tuple(h.refs for h in self.held), self.start_tid, want_backlog)
        polls = list(polled.polls)
        ours = decisions.completable([pair for h, poll in zip(self.held, polls) if poll is not None
                                      for pair in zip(h.refs, poll)])
        claimed: list[int] = []
        claims: list[tuple[_Held, tuple[DependentRef, ...]]] = []
        written: set[int] = set()
        for h, poll, grace in zip(self.held, polls, graces):
            waited = now - h.since
            backlog = polled.backlog if waited >= grace else 0
            step = decisions.after_poll(h.refs, poll, now, h.deadline, backlog, waited, ours, grace)
            if step.write:  # written, then its remaining bits set, as without the delay
                self.counts.delayed_writes += 1
                claimed += (yield BumpCounters(step.rest, (h.record.tid, h.blob), **self._claim)).claimed
                h.refs = ()
                written.add(h.record.tid)
            else:
                h.refs = step.rest
            if step.claim:
                claims.append((h, step.claim))
        expected = {ref.tid for _, refs in claims for ref in refs}
        won: list[int] = []
        if claims:
            won = list((yield BumpCounters(tuple(r for _, refs in claims for r in refs), None, **self._claim)).claimed)
        self.counts.delayed_claims += len(won)
        for h, _ in claims:
            # a fan-in we expected to complete but did not was completed with our bit by a concurrent
            # attempt of this invocation, whose claimer then needs our value stored
            if not expected <= set(won) | set(claimed):
                yield StoreValue(h.record.tid, h.blob)
            self.memory[h.record.tid] = h.value
        segment_of = {ref.tid: ref.path for h in self.held for ref in h.record.dependents}
        for h in self.held:
            if not h.refs:
                yield ReleaseHold(h.record.tid, written=h.record.tid in written)
        self.held = [h for h in self.held if h.refs]
        out = []
        for tid in claimed + won:
            out.append(self.records.get(tid) or (yield from self._read(tid, segment_of[tid])))
        return out

    def _wait_held(self) -> Generator[Instruction, Any, list[TaskRecord]]:
        """Back off, then poll every held output; returns the records of the fan-ins now ours."""
        if self.clock() - self.last_check >= CHECK_INTERVAL:
            yield from self._check_ended()
        until_deadline = min(h.deadline for h in self.held) - self.clock()
        yield Sleep(decisions.poll_interval(self.n_polls, until_deadline))
        self.n_polls += 1
        return (yield from self._poll_held())

    def _hand_off(self, record: TaskRecord, blob: bytes | None, steps: decisions.NextSteps
                  ) -> Generator[Instruction, Any, list[int]]:
        """Give a wide fan-out (store, bump, invoke) to the KV proxy; returns the tasks to run here.

        Every fan-in dependent gets a payload up front, since any may be claimed: the proxy only moves
        these bytes and never unpickles user code. If the proxy cannot take the work, do it here.
        """
        limit = self.job.payload_limit
        inline = blob is not None and decisions.inline_value(len(blob), limit)
        value = blob if steps.store_value or not inline else None
        if value is not None and len(value) > limit:
            yield StoreValue(record.tid, value)  # too big to ship twice: the proxy only bumps
            value = None
        candidates = list(steps.ready) + [ref.tid for ref in steps.fan_in]
        payloads = dict(zip(candidates, self._payloads(record, candidates, blob if inline else None)))
        reply = yield HandOffToProxy(record.tid, value, steps.fan_in, steps.ready, record.become, payloads,
                                     **self._claim)
        if isinstance(reply, ProxyRefused):
            # retry=True: the proxy may have bumped counters before failing, and those are ours to claim
            bumped = yield BumpCounters(steps.fan_in, None if value is None else (record.tid, value),
                                        self.start_tid, True)
            local, remote = decisions.split_ready(list(steps.ready) + list(bumped.claimed), record.become, False)
            yield from self._send([payloads[tid] for tid in remote])  # a value not inline was stored by now
            return local
        self.counts.payload_bytes += reply.payload_bytes
        self.counts.invoked += reply.invoked
        return list(reply.local)

    def _send(self, payloads: list[bytes]) -> Generator[Instruction, Any, None]:
        if payloads:
            self.counts.invoked += len(payloads)
            self.counts.payload_bytes += sum(map(len, payloads))
            yield Invoke(tuple(payloads))

    def _payloads(self, upstream: TaskRecord, tids: list[int], blob: bytes | None) -> list[bytes]:
        """The serialized invocations starting ``tids``, carrying ``blob`` inline when given; a
        task whose record makes the payload too big travels without it (its executor reads the
        record's segment instead)."""
        payloads = []
        segment_of = {ref.tid: ref.path for ref in upstream.dependents}
        for tid in tids:
            rec = self.records.get(tid)
            inv = Invocation(job=self.job, start=tid, start_path=segment_of[tid],
                             inline_values={upstream.tid: blob} if blob is not None else {},
                             records_blob=self.encode({tid: rec}) if rec is not None else None)
            data = self.encode(inv)
            if len(data) > self.job.payload_limit and inv.records_blob is not None:
                inv.records_blob = None
                data = self.encode(inv)
            payloads.append(data)
        return payloads
