"""The executor's driver: carries out the instructions of :class:`~wukong.executor_state.ExecutorState`.

The protocol (what to run, store, bump, hold, hand off and invoke) is the state machine's; this
module only knows how: against Redis (:class:`~wukong.storage.JobStorage`), an :class:`Invoker`
and the KV proxy, all injected, so the same class runs in a local worker process and in a Lambda.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import redis

from wukong import task_warnings
from wukong.errors import RedisUnavailableError, SerializationError, ValueNotStoredError
from wukong.executor_state import (BumpCounters, CheckEnded, ClaimStart, CountersBumped, EndedChecked, ExecutorState,
                                   FailTask, FetchInputs, HandedOff, HandOffToProxy, HeldPolled, Hold, InputsFetched,
                                   Invoke, NotifyJobEnded, PollHeld, ProxyRefused, PublishResult, ReadSegment,
                                   ReleaseHold, ReportProgress, ResultPublished, RunTask, SegmentRead, Sleep,
                                   StartClaimed, StoreValue, TaskFinished)
from wukong.hooks import ExecutorHooks
from wukong.job_events import JobEvent
from wukong.invocation import Invocation, Invoker, JobSettings
from wukong.proxy.client import ProxyClient, ProxyUnavailable
from wukong.redis_connection import address, unavailable
from wukong.schedule import TaskRecord
from wukong.scratch import take_over_dirs
from wukong.serialization import dumps, loads
from wukong.storage import JobStorage, RedisStores, StorageStats

log = logging.getLogger(__name__)


def job_totals(counts: Counter) -> Counter:
    """The counts to add to the job's statistics: all but ``invoked``, added before sending."""
    return Counter({name: value for name, value in counts.items() if name != "invoked"})


@dataclass
class Executor:
    """Runs invocations against the given stores, invoking further executors through ``invoker``.

    A local worker keeps one Executor for its lifetime and sets ``flush_interval`` so that the
    per-invocation counts of tiny tasks are reported in batches; a Lambda handler builds one per
    invocation with ``flush_interval=0`` (report at once: a frozen container may never run again).
    ``hooks`` let a runtime trace, notify and measure without the executor knowing the runtime.
    """

    stores: RedisStores
    invoker: Invoker
    hooks: ExecutorHooks = field(default_factory=ExecutorHooks)
    worker_id: str = field(default_factory=lambda: f"pid{os.getpid()}")
    flush_interval: float = 0.0
    _pending: dict[str, tuple[JobSettings, Counter]] = field(default_factory=dict, repr=False)
    _last_flush: float = field(default=0.0, repr=False)
    _proxy: ProxyClient | None = field(default=None, repr=False)
    #: the storage view of one job; by default the Redis one (wukong.testing passes its in-memory one)
    storage_for: Callable[[JobSettings], JobStorage] | None = field(default=None, repr=False)

    def _storage(self, job: JobSettings) -> JobStorage:
        if self.storage_for is not None:
            return self.storage_for(job)
        return JobStorage.for_job(self.stores, job, span=self.hooks.span)

    def proxy_for(self, job: JobSettings) -> ProxyClient | None:
        """The job's KV proxy client (one connection kept across invocations), or None without a proxy
        or without a Redis password to derive the proxy's key from."""
        if job.proxy is None or not self.stores.spec.password:
            return None
        if self._proxy is None or self._proxy.address != tuple(job.proxy):
            self._proxy = ProxyClient(job.proxy, self.stores.spec.password, timeout=self.stores.spec.timeout)
        return self._proxy

    def handle(self, inv: Invocation) -> None:
        """Run one invocation to its end. Task errors end the job; they are not raised here."""
        started = time.perf_counter()
        job = inv.job
        storage = self._storage(job)
        try:
            run = _Run(self, inv, storage)  # unpickles the schedule: may fail on a task's module
        except Exception as exc:
            self.fail(storage, JobEvent.task_failed(f"<task id {inv.start}>", exc, internal=True))
            # still counted as finished, so the report settles without waiting for it
            self._add_counts(job, Counter(executors_finished=1, busy_seconds=time.perf_counter() - started))
            return
        reported = True  # False once the MDS did not take the job's failure
        try:
            # Lambda delivers asynchronous invokes at least once, and retries a dead executor: the
            # state claims the start first, so only the first delivery of each attempt runs
            run.execute()
        except _TaskRaised as raised:
            self.fail(storage, raised.event)
        except ValueNotStoredError as exc:  # a live server refused a write: what, how big, which limit
            key = run.current_key()
            what = exc.what.replace(f"task id {run.state.current}", f"task {key!r}")
            self.fail(storage, JobEvent.task_failed(key, ValueNotStoredError(what, exc.nbytes, exc.reason)))
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # a lost server: say which, plainly
            key = run.current_key()
            error = RedisUnavailableError(unavailable(
                exc, self.stores.spec, f"task {key!r} ran",
                check=f"check that the MDS {address(self.stores.spec.mds)} and every KV shard are up"))
            try:
                self.fail(storage, JobEvent.task_failed(key, error))
            except redis.RedisError as again:  # the MDS is the lost server: the client sees it itself
                log.warning("could not report the failure of job %s (%s: %s): %s", job.job_id,
                            type(again).__name__, again, error)
                reported = False
        except Exception as exc:  # a Wukong or storage fault: still end the job, never hang it
            self.fail(storage, JobEvent.task_failed(run.current_key(), exc, internal=True))
        finally:
            counts = run.take_counts()
            counts["executors_finished"] += 1
            counts["busy_seconds"] += time.perf_counter() - started
            self.hooks.invocation_done(counts + run.flushed)  # the whole invocation, mid-run flushes too
            self._add_counts(job, job_totals(counts))
            self.hooks.counts_pending({jid: (j.ttl, c) for jid, (j, c) in self._pending.items()})
            # not to an MDS that just failed to take the failure: that would wait a redis_timeout more
            if reported and time.monotonic() - self._last_flush >= self.flush_interval:
                self.flush()

    def fail(self, storage: JobStorage, event: JobEvent) -> None:
        """End the job with ``event``; the first failure is the one reported (and notified)."""
        if storage.end_job(event):
            self.hooks.job_ended(storage.context)

    def _add_counts(self, job: JobSettings, counts: Counter) -> None:
        if job.job_id in self._pending:
            self._pending[job.job_id][1].update(counts)
        else:
            self._pending[job.job_id] = (job, counts)

    def flush(self) -> None:
        """Report the counts of finished invocations to their jobs' statistics."""
        pending, self._pending = self._pending, {}
        self._last_flush = time.monotonic()
        if not pending:
            return
        for job, counts in pending.values():
            try:
                self._storage(job).flush_counts(dict(counts))
            except redis.RedisError as exc:
                # one line, and no other job tried: a hung MDS would cost each a redis_timeout
                log.warning("could not report counts of job %s (%s: %s)", job.job_id, type(exc).__name__, exc)
                break
            except Exception:  # statistics are best effort; the job's outcome is already decided
                log.warning("could not report counts of job %s", job.job_id, exc_info=True)
        self.hooks.counts_pending({})


class _TaskRaised(Exception):
    def __init__(self, event: JobEvent):
        self.event = event


class _Run:
    """Carries one invocation's :class:`ExecutorState` instructions out against Redis, the invoker
    and the KV proxy. Every choice of what to do next is the state's; this only knows how."""

    def __init__(self, executor: Executor, inv: Invocation, storage: JobStorage):
        self.executor = executor
        self.storage = storage
        records: dict[int, TaskRecord] = {} if inv.records_blob is None else loads(inv.records_blob)
        if inv.path_blob is not None:
            records.update(loads(inv.path_blob).records)
        memory = {tid: loads(blob) for tid, blob in inv.inline_values.items()}
        self.proxy = executor.proxy_for(inv.job)
        self.state = ExecutorState(inv.job, inv.start, inv.start_path, inv.attempt, records, memory,
                                   encode=dumps, clock=time.monotonic, proxy=self.proxy is not None)
        self.flushed: Counter = Counter()  # counts a mid-run check already added to the job's totals
        self.caught: list[warnings.WarningMessage] = []  # warnings raised so far (see execute)
        self._carry_out = {
            ClaimStart: lambda i: StartClaimed(storage.claim_start(i.tid, i.attempt)),
            ReportProgress: lambda i: executor.hooks.progress(storage.context),
            ReadSegment: lambda i: SegmentRead(loads(storage.get_path(i.segment)).records),
            CheckEnded: self._check_ended,
            FetchInputs: self._fetch_inputs,
            RunTask: self._run_task,
            PublishResult: lambda i: ResultPublished(storage.store_result(i.tid, i.blob)),
            NotifyJobEnded: lambda i: executor.hooks.job_ended(storage.context),
            StoreValue: lambda i: storage.put_value(i.tid, i.blob),
            BumpCounters: lambda i: CountersBumped(storage.bump_counters(i.refs, i.value, i.claimer, i.retry)),
            Invoke: self._invoke,
            HandOffToProxy: self._hand_off,
            Hold: lambda i: None,
            PollHeld: self._poll_held,
            Sleep: lambda i: time.sleep(i.seconds),
            ReleaseHold: lambda i: None,
        }

    def current_key(self) -> Any:
        return self.state.current_key()

    def execute(self) -> None:
        """Run the invocation to its end; a failed task raises _TaskRaised."""
        # once per invocation, not per task (that cost ~4 us a task): each task's share is sliced out
        with warnings.catch_warnings(record=True) as self.caught:
            warnings.simplefilter("always")  # the caller's filters decide, when the client re-raises them
            carry_out = self._carry_out
            instruction = self.state.start()
            while not instruction.terminal:
                instruction = self.state.handle(carry_out[type(instruction)](instruction))
        if isinstance(instruction, FailTask):
            raise _TaskRaised(JobEvent.task_failed(instruction.key, instruction.error))
        if instruction.reason == "duplicate":
            log.debug("dropped a duplicate invocation of task id %d", self.state.start_tid)

    def _check_ended(self, _: CheckEnded) -> EndedChecked:
        counts = self.take_counts()
        self.flushed.update(counts)
        self.storage.flush_counts(dict(job_totals(counts)))
        self.executor.hooks.running_counts_reported()
        if self.storage.has_ended():
            return EndedChecked(True)
        self.executor.hooks.progress(self.storage.context)
        return EndedChecked(False)

    def _fetch_inputs(self, fetch: FetchInputs) -> InputsFetched:
        record, values = fetch.record, {}
        keys = dict(record.deps)
        for tid, blob in self.storage.get_values(fetch.tids).items():
            try:
                values[tid] = loads(blob)
            except Exception as exc:
                raise _TaskRaised(JobEvent.task_failed(record.key, SerializationError(
                    f"input {keys[tid]!r} of task {record.key!r} cannot be deserialized in this "
                    f"executor ({type(exc).__name__}: {exc}); is its type's module importable here?"
                ))) from exc
        return InputsFetched(values)

    def _run_task(self, run: RunTask) -> TaskFinished:
        record, hooks = run.record, self.executor.hooks
        hooks.task_started(record.key)
        n_caught = len(self.caught)
        t0 = time.perf_counter()
        try:
            if hooks.span is None:
                value = record.node(run.args)
            else:
                with hooks.span("task"):
                    value = record.node(run.args)
        except Exception as exc:
            self._report_warnings(record, n_caught)
            raise _TaskRaised(JobEvent.task_failed(record.key, exc)) from exc
        seconds = time.perf_counter() - t0
        hooks.task_finished()
        self._report_warnings(record, n_caught)
        dirs = take_over_dirs(value)  # a partd object: its files must outlive this executor's copy
        if dirs:
            self.storage.add_scratch_dirs(dirs)
        return TaskFinished(value, _serialize_output(record, value) if run.serialize else None, seconds)

    def _report_warnings(self, record: TaskRecord, since: int) -> None:
        """Store the warnings the task raised, before anything it computed can end the job."""
        if len(self.caught) > since:
            self.storage.add_warnings(task_warnings.pack(self.caught[since:], record.key), task_warnings.MAX_PER_JOB)
            del self.caught[since:]

    def _invoke(self, invoke: Invoke) -> None:
        self.storage.flush_counts({"invoked": len(invoke.payloads)})
        self.executor.invoker.invoke(invoke.payloads)

    def _poll_held(self, poll: PollHeld) -> HeldPolled:
        polls = [self.storage.poll_counters(refs, claimer=poll.claimer) for refs in poll.refs]
        return HeldPolled(polls, self.executor.invoker.backlog() if poll.want_backlog else 0)

    def _hand_off(self, h: HandOffToProxy) -> HandedOff | ProxyRefused:
        try:
            reply = self.proxy.hand_off(self.state.job, h.tid, h.value, h.fan_in, h.ready, h.become,
                                        payloads=h.payloads, claimer=h.claimer, retry=h.retry)
        except ProxyUnavailable as exc:
            log.warning("task %r: %s; doing its fan-out of %d here", self.state.current_key(), exc, len(h.payloads))
            return ProxyRefused(str(exc))
        return HandedOff(reply["local"], reply["payload_bytes"], reply["invoked"])

    def take_counts(self) -> Counter:
        """This invocation's counts since the last take, its storage traffic included."""
        counts = Counter(self.state.counts.drain())
        counts.update(self.storage.stats.as_dict())
        self.storage.stats = StorageStats()
        return counts


def _serialize_output(record: TaskRecord, value: Any) -> bytes:
    """The task's output as bytes, or a clear error naming the task (raised as the task's)."""
    try:
        return dumps(value)
    except Exception as exc:
        raise _TaskRaised(JobEvent.task_failed(record.key, SerializationError(
            f"the output of task {record.key!r} ({type(value).__qualname__}) cannot be serialized to "
            f"send it on ({type(exc).__name__}: {exc}); return picklable data such as numbers, "
            f"numpy arrays, lists or dicts from tasks whose outputs leave their executor"
        ))) from exc
