"""The executor: runs one invocation, then schedules itself down its path until no work is left.

This is the I/O half; every decision comes from :mod:`wukong.decisions`. Storage and the invoke
backend are injected, so the same class runs in a local worker process and in a Lambda.
At a fan-in it bumps the counter and, unless it completed the counter, stops; only a big
output may wait, bounded, to complete its fan-ins itself (delayed I/O, see decisions.py).
"""

from __future__ import annotations

import base64
import logging
import os
import time
import traceback
import warnings
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import redis

from wukong import decisions, task_warnings
from wukong.errors import OutputTooLargeError, RedisUnavailableError, SerializationError, ValueNotStoredError
from wukong.hooks import ExecutorHooks
from wukong.invocation import Invocation, Invoker, JobSettings
from wukong.proxy.client import ProxyClient, ProxyUnavailable
from wukong.redis_connection import address, unavailable
from wukong.schedule import DependentRef, Path, TaskRecord
from wukong.scratch import take_over_dirs
from wukong.serialization import dumps, loads
from wukong.storage import JobStorage, RedisStores, StorageStats

log = logging.getLogger(__name__)

#: How often a long-running executor checks whether its job has ended, and reports progress.
CHECK_INTERVAL = 1.0


class JobEnded(Exception):
    """The job failed or was cancelled elsewhere; this executor stops quietly."""


@dataclass
class _Counts:
    tasks: int = 0
    payload_bytes: int = 0
    task_seconds: float = 0.0
    duplicates: int = 0  # invocations dropped because they were duplicates
    delayed_claims: int = 0  # fan-ins a held big output completed itself (its value never written)
    delayed_writes: int = 0  # held big outputs written after all (refused a hold, or the wait ran out)
    invoked: int = 0  # executors invoked; already in the job's totals (see _Run._send): for the hooks only

    def drain(self) -> dict[str, Any]:
        out = {"tasks": self.tasks, "payload_bytes": self.payload_bytes, "invoked": self.invoked,
               "task_seconds": self.task_seconds, "duplicates_dropped": self.duplicates,
               "delayed_io_claims": self.delayed_claims, "delayed_io_writes": self.delayed_writes}
        self.tasks = self.payload_bytes = self.duplicates = self.invoked = 0
        self.delayed_claims = self.delayed_writes = 0
        self.task_seconds = 0.0
        return out


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
        storage = JobStorage.for_job(self.stores, job, span=self.hooks.span)
        try:
            run = _Run(self, inv, storage)  # unpickles the schedule: may fail on a task's module
        except Exception as exc:
            self.fail(storage, failure_event(f"<task id {inv.start}>", exc, internal=True))
            # still counted as finished, so the report settles without waiting for it
            self._add_counts(job, Counter(executors_finished=1, busy_seconds=time.perf_counter() - started))
            return
        reported = True  # False once the MDS did not take the job's failure
        try:
            # Lambda delivers asynchronous invokes at least once, and retries a dead executor: only
            # the first delivery of each attempt runs, so nothing downstream runs twice
            claim = storage.claim_start(inv.start, inv.attempt)
            if claim != "run":
                run.counts.duplicates += claim == "duplicate"
                return
            self.hooks.progress(storage)
            run.execute()
        except JobEnded:
            pass
        except _TaskRaised as raised:
            self.fail(storage, raised.event)
        except ValueNotStoredError as exc:  # a live server refused a write: what, how big, which limit
            key = run.current_key()
            what = exc.what.replace(f"task id {run.current}", f"task {key!r}")
            self.fail(storage, failure_event(key, ValueNotStoredError(what, exc.nbytes, exc.reason)))
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # a lost server: say which, plainly
            key = run.current_key()
            error = RedisUnavailableError(unavailable(
                exc, self.stores.spec, f"task {key!r} ran",
                check=f"check that the MDS {address(self.stores.spec.mds)} and every KV shard are up"))
            try:
                self.fail(storage, failure_event(key, error))
            except redis.RedisError as again:  # the MDS is the lost server: the client sees it itself
                log.warning("could not report the failure of job %s (%s: %s): %s", job.job_id,
                            type(again).__name__, again, error)
                reported = False
        except Exception as exc:  # a Wukong or storage fault: still end the job, never hang it
            self.fail(storage, failure_event(run.current_key(), exc, internal=True))
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

    def fail(self, storage: JobStorage, event: dict) -> None:
        """End the job with ``event``; the first failure is the one reported (and notified)."""
        if storage.end_job("failed", event):
            self.hooks.job_ended(storage)

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
                JobStorage(self.stores, job.job_id, job.ttl, job.n_outputs).flush_counts(dict(counts))
            except redis.RedisError as exc:
                # one line, and no other job tried: a hung MDS would cost each a redis_timeout
                log.warning("could not report counts of job %s (%s: %s)", job.job_id, type(exc).__name__, exc)
                break
            except Exception:  # statistics are best effort; the job's outcome is already decided
                log.warning("could not report counts of job %s", job.job_id, exc_info=True)
        self.hooks.counts_pending({})


class _TaskRaised(Exception):
    def __init__(self, event: dict):
        self.event = event


@dataclass
class _Held:
    """A big output held in memory (delayed I/O) and the fan-in counters still missing our bit."""

    record: TaskRecord
    value: Any
    blob: bytes
    refs: tuple[DependentRef, ...]
    deadline: float
    since: float = field(default_factory=time.monotonic)


class _Run:
    """The state of one invocation: known schedule records, values in memory, local work queue."""

    def __init__(self, executor: Executor, inv: Invocation, storage: JobStorage):
        self.executor = executor
        self.inv = inv
        self.job = inv.job
        self.storage = storage
        self.records: dict[int, TaskRecord] = {} if inv.records_blob is None else loads(inv.records_blob)
        if inv.path_blob is not None:
            self.records.update(loads(inv.path_blob).records)
        self.memory: dict[int, Any] = {tid: loads(blob) for tid, blob in inv.inline_values.items()}
        self.counts = _Counts()
        self.flushed: Counter = Counter()  # counts a mid-run check already added to the job's totals
        self.current: int | None = None
        self.last_check = self.started = time.monotonic()
        self.held: list[_Held] = []
        self.from_holds: list[TaskRecord] = []  # fan-ins claimed by held outputs, to run here next
        self.n_polls = 0
        self.caught: list[warnings.WarningMessage] = []  # warnings raised so far (see execute)

    def current_key(self) -> Any:
        """The key of the task running now (the start task before the first one runs)."""
        tid = self.current if self.current is not None else self.inv.start
        record = self.records.get(tid)
        return record.key if record is not None else f"<task id {tid}>"

    @property
    def claim_args(self) -> dict[str, Any]:
        """How this invocation names itself to the fan-in counters (see JobStorage.bump_counters)."""
        return {"claimer": self.inv.start, "retry": self.inv.attempt > 0}

    def record(self, tid: int, path: int | None) -> TaskRecord:
        """The record of ``tid``, reading the path that owns it the first time it is needed."""
        if tid not in self.records:
            if path is None:
                raise LookupError(f"invocation for task id {tid} carries neither its record nor its path")
            loaded: Path = loads(self.storage.get_path(path))
            for t, rec in loaded.records.items():
                self.records.setdefault(t, rec)
        return self.records[tid]

    def execute(self) -> None:
        # once per invocation, not per task (that cost ~4 us a task): each task's share is sliced out
        with warnings.catch_warnings(record=True) as self.caught:
            warnings.simplefilter("always")  # the caller's filters decide, when the client re-raises them
            self._execute()

    def _execute(self) -> None:
        queue: deque[TaskRecord] = deque([self.record(self.inv.start, self.inv.start_path)])
        while queue or self.held:
            if not queue:  # wait only with nothing else to do: the deadlock-freedom argument needs it
                queue.extend(self._wait_held())
                continue
            record = queue.popleft()
            self.current = record.tid
            self._maybe_check_ended()
            value = self._run_task(record)
            self._maybe_check_ended()  # after a long task the job may be over: write nothing then
            local = self._schedule_after(record, value)
            path_of = {ref.tid: ref.path for ref in record.dependents}
            for tid in local:
                queue.append(self.record(tid, path_of[tid]))
            queue.extend(self.from_holds)
            self.from_holds = []
            if local:
                self.memory[record.tid] = value
            keep = decisions.still_needed(list(queue))
            for tid in [t for t in self.memory if t not in keep]:
                del self.memory[tid]

    def _run_task(self, record: TaskRecord) -> Any:
        missing = [tid for tid, _ in record.deps if tid not in self.memory]
        if missing:
            keys = dict(record.deps)
            for tid, blob in self.storage.get_values(missing).items():
                try:
                    self.memory[tid] = loads(blob)
                except Exception as exc:
                    raise _TaskRaised(failure_event(record.key, SerializationError(
                        f"input {keys[tid]!r} of task {record.key!r} cannot be deserialized in this "
                        f"executor ({type(exc).__name__}: {exc}); is its type's module importable here?"
                    ))) from exc
        args = {key: self.memory[tid] for tid, key in record.deps}
        hooks = self.executor.hooks
        hooks.task_started(record.key)
        t0 = time.perf_counter()
        n_caught = len(self.caught)
        try:
            if hooks.span is None:
                value = record.node(args)
            else:
                with hooks.span("task"):
                    value = record.node(args)
        except Exception as exc:
            self._report_warnings(record, n_caught)
            raise _TaskRaised(failure_event(record.key, exc)) from exc
        self.counts.task_seconds += time.perf_counter() - t0
        self.counts.tasks += 1
        hooks.task_finished()
        self._report_warnings(record, n_caught)
        dirs = take_over_dirs(value)  # a partd object: its files must outlive this executor's copy
        if dirs:
            self.storage.add_scratch_dirs(dirs)
        return value

    def _report_warnings(self, record: TaskRecord, since: int) -> None:
        """Store the warnings the task raised, before anything it computed can end the job."""
        if len(self.caught) > since:
            self.storage.add_warnings(task_warnings.pack(self.caught[since:], record.key), task_warnings.MAX_PER_JOB)
            del self.caught[since:]

    def _schedule_after(self, record: TaskRecord, value: Any) -> list[int]:
        """Store, publish, bump counters and invoke as decided; returns the tasks to run here."""
        blob = self._serialize_output(record, value) if decisions.needs_size(record) else None
        nbytes = None if blob is None else len(blob)
        steps = decisions.after_task(record, nbytes, self.job.payload_limit, self.job.big_task_threshold)
        if steps.publish_result and self.storage.store_result(record.tid, blob):
            self.executor.hooks.job_ended(self.storage)  # this was the job's last result
        proxy = self.executor.proxy_for(self.job)
        if proxy is not None and decisions.hand_off(steps, self.job.max_task_fanout):
            return self._hand_off(proxy, record, blob, steps)
        delay = decisions.delays_io(steps, self.job.delayed_io_max_wait)
        stored = steps.store_value and not delay
        claimed = self.storage.bump_counters(() if delay else steps.fan_in, (record.tid, blob) if stored else None,
                                             **self.claim_args)
        if delay:
            deadline = decisions.delay_deadline(time.monotonic(), self.started, self.job.delayed_io_max_wait,
                                                self.job.function_timeout)
            self.held.append(_Held(record, value, blob, steps.fan_in, deadline))
            self.from_holds += self._poll_held()  # we may be the last upstream already
        local, remote = decisions.split_ready(list(steps.ready) + claimed, record.become, steps.clustered)
        if remote:
            inline = blob is not None and decisions.inline_value(len(blob), self.job.payload_limit)
            if not inline and not stored:
                self.storage.put_value(record.tid, blob)
            self._invoke(record, remote, blob if inline else None)
        return local

    def _poll_held(self) -> list[TaskRecord]:
        """Poll the counters of every held output, claim what our bits complete, write what must
        be written; returns the records of the fan-ins now ours, their held inputs in memory."""
        now = time.monotonic()
        polls = {id(h): self.storage.poll_counters(h.refs, claimer=self.inv.start) for h in self.held}
        ours = decisions.completable([pair for h in self.held if polls[id(h)] is not None
                                      for pair in zip(h.refs, polls[id(h)])])
        bump = self.claim_args
        claimed: list[int] = []
        claims: list[tuple[_Held, tuple[DependentRef, ...]]] = []
        for h in self.held:
            waited = now - h.since
            grace = decisions.backlog_grace(len(h.blob))
            backlog = self.executor.invoker.backlog() if waited >= grace else 0
            step = decisions.after_poll(h.refs, polls[id(h)], now, h.deadline, backlog, waited, ours, grace)
            if step.write:  # written, then its remaining bits set, as without the delay
                self.counts.delayed_writes += 1
                claimed += self.storage.bump_counters(step.rest, (h.record.tid, h.blob), **bump)
                h.refs = ()
            else:
                h.refs = step.rest
            if step.claim:
                claims.append((h, step.claim))
        expected = {ref.tid for _, refs in claims for ref in refs}
        won = self.storage.bump_counters([r for _, refs in claims for r in refs], **bump) if claims else []
        self.counts.delayed_claims += len(won)
        for h, _ in claims:
            # a fan-in we expected to complete but did not was completed with our bit by a concurrent
            # attempt of this invocation, whose claimer then needs our value stored
            if not expected <= set(won) | set(claimed):
                self.storage.put_value(h.record.tid, h.blob)
            self.memory[h.record.tid] = h.value
        path_of = {ref.tid: ref.path for h in self.held for ref in h.record.dependents}
        self.held = [h for h in self.held if h.refs]
        return [self.record(tid, path_of[tid]) for tid in claimed + won]

    def _wait_held(self) -> list[TaskRecord]:
        """Back off, then poll every held output; returns the records of the fan-ins now ours."""
        self._maybe_check_ended()
        now = time.monotonic()
        time.sleep(decisions.poll_interval(self.n_polls, min(h.deadline for h in self.held) - now))
        self.n_polls += 1
        return self._poll_held()

    def _serialize_output(self, record: TaskRecord, value: Any) -> bytes:
        """The task's output as bytes, or a clear error naming the task (raised as the task's)."""
        try:
            blob = dumps(value)
        except Exception as exc:
            raise _TaskRaised(failure_event(record.key, SerializationError(
                f"the output of task {record.key!r} ({type(value).__qualname__}) cannot be serialized to "
                f"send it on ({type(exc).__name__}: {exc}); return picklable data such as numbers, "
                f"numpy arrays, lists or dicts from tasks whose outputs leave their executor"
            ))) from exc
        limit = self.job.max_output_size
        if limit is not None and len(blob) > limit:
            raise _TaskRaised(failure_event(record.key, OutputTooLargeError(
                f"the output of task {record.key!r} is {len(blob):,} bytes serialized, over "
                f"max_output_size={limit:,}; split the work into smaller chunks or raise the limit"
            )))
        return blob

    def _invoke(self, upstream: TaskRecord, tids: list[int], blob: bytes | None) -> None:
        self._send(self._payloads(upstream, tids, blob))

    def _send(self, payloads: list[bytes]) -> None:
        # Counted before they are sent: the job's finish test (executors finished = leaves + invoked)
        # must never see an invoked executor's finish before its invocation, which batched counts allowed.
        if not payloads:
            return
        self.storage.flush_counts({"invoked": len(payloads)})
        self.counts.invoked += len(payloads)
        self.counts.payload_bytes += sum(map(len, payloads))
        self.executor.invoker.invoke(payloads)

    def _payloads(self, upstream: TaskRecord, tids: list[int], blob: bytes | None) -> list[bytes]:
        """The serialized invocations starting ``tids``, carrying ``blob`` inline when given."""
        payloads = []
        path_of = {ref.tid: ref.path for ref in upstream.dependents}
        for tid in tids:
            rec = self.records.get(tid)
            inv = Invocation(
                job=self.job,
                start=tid,
                start_path=path_of[tid],
                inline_values={upstream.tid: blob} if blob is not None else {},
                records_blob=dumps({tid: rec}) if rec is not None else None,
            )
            data = dumps(inv)
            if len(data) > self.job.payload_limit and inv.records_blob is not None:
                inv.records_blob = None  # a huge task spec: the new executor reads its path instead
                data = dumps(inv)
            payloads.append(data)
        return payloads

    def _hand_off(self, proxy: ProxyClient, record: TaskRecord, blob: bytes | None,
                  steps: decisions.NextSteps) -> list[int]:
        """Give a wide fan-out (store, bump, invoke) to the KV proxy; returns the tasks to run here.

        Every fan-in dependent gets a payload up front, since any may be claimed: the proxy only moves
        these bytes and never unpickles user code. If the proxy cannot take the work, do it here.
        """
        inline = blob is not None and decisions.inline_value(len(blob), self.job.payload_limit)
        value = blob if steps.store_value or not inline else None
        if value is not None and len(value) > self.job.payload_limit:
            self.storage.put_value(record.tid, value)  # too big to ship twice: the proxy only bumps
            value = None
        candidates = list(steps.ready) + [ref.tid for ref in steps.fan_in]
        payloads = dict(zip(candidates, self._payloads(record, candidates, blob if inline else None)))
        try:
            reply = proxy.hand_off(self.job, record.tid, value, steps.fan_in, steps.ready, record.become,
                                   payloads=payloads, **self.claim_args)
        except ProxyUnavailable as exc:
            log.warning("task %r: %s; doing its fan-out of %d here", record.key, exc, len(candidates))
            # retry=True: the proxy may have bumped counters before failing, and those are ours to claim
            claimed = self.storage.bump_counters(steps.fan_in, None if value is None else (record.tid, value),
                                                 claimer=self.inv.start, retry=True)
            local, remote = decisions.split_ready(list(steps.ready) + claimed, record.become, False)
            self._send([payloads[tid] for tid in remote])  # a value not inline was stored by now
            return local
        self.counts.payload_bytes += reply["payload_bytes"]
        self.counts.invoked += reply["invoked"]  # the proxy added them to the job's totals itself
        return list(reply["local"])

    def take_counts(self) -> Counter:
        """This invocation's counts since the last take, its storage traffic included."""
        counts = Counter(self.counts.drain())
        counts.update(self.storage.stats.as_dict())
        self.storage.stats = StorageStats()
        return counts

    def _maybe_check_ended(self) -> None:
        now = time.monotonic()
        if now - self.last_check < CHECK_INTERVAL:
            return
        self.last_check = now
        counts = self.take_counts()
        self.flushed.update(counts)
        self.storage.flush_counts(dict(job_totals(counts)))
        self.executor.hooks.running_counts_reported()
        if self.storage.has_ended():
            raise JobEnded()
        self.executor.hooks.progress(self.storage)


def failure_event(key: Any, exc: BaseException, internal: bool = False) -> dict:
    """A JSON-able description of a failed task, carrying the pickled exception when it pickles."""
    try:
        exc_blob = base64.b64encode(dumps(exc)).decode()
        loads(base64.b64decode(exc_blob))
    except Exception:
        exc_blob = None
    return {
        "kind": "error",
        "key": repr(key),
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:4000],
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
        "exception": exc_blob,
        "internal": internal,
        "worker": f"pid{os.getpid()}",
    }
