"""One job's life on any backend: plan, invoke the leaves, await completion, finalize.

:class:`JobRun` is the plain orchestration that the local runtime runs in the client process; on
AWS, Step Functions runs the same steps as states, calling :func:`~wukong.planning.plan_job`,
:func:`~wukong.planning.leaf_payload` and :func:`~wukong.finalize.finalize_job` from separate
Lambdas that share only the :class:`~wukong.planning.JobRecord` in the MDS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from dask._task_spec import DataNode
from dask.local import nested_get

from wukong.config import WukongConfig
from wukong.errors import RedisUnavailableError, job_interrupted
from wukong.finalize import SETTLE_TIMEOUT, describe_unfinished, finalize_job
from wukong.graph import TaskGraph
from wukong.invocation import Invoker
from wukong.job_events import REDIS_UNAVAILABLE, JobEvent, raise_job_error
from wukong.planning import JobRecord, new_job_id, plan_job
from wukong.redis_connection import address, unavailable
from wukong.report import JobReport
from wukong.scratch import ScratchDirs, remove_dirs
from wukong.serialization import loads
from wukong.storage import JobStorage, RedisStores
from wukong.task_warnings import TaskWarning, reissue, unpack

log = logging.getLogger(__name__)

#: The most each cleanup call may wait after the job lost a Redis server (and redis_timeout, if less).
LOST_REDIS_BUDGET = 2.0

ProgressCallback = Callable[[int, int], None]  # (tasks done, total)


class JobRun:
    """Drives one job to its end and turns the outcome into results or an exception."""

    def __init__(self, graph: TaskGraph, stores: RedisStores, invoker: Invoker, config: WukongConfig,
                 progress: ProgressCallback | None = None, job_id: str | None = None,
                 reissue_warnings: bool = True, scratch: ScratchDirs | None = None):
        # chosen up front, so a job service can cancel (JobStorage.end_job) even while it plans
        self.job_id = job_id or new_job_id()
        self.event: JobEvent | None = None  # the job's ending event (done or failure) once it has one
        self.graph = graph
        self.stores = stores
        self.invoker = invoker
        self.config = config
        self.progress = progress
        self.report: JobReport | None = None
        # warnings the job's tasks raised; a job service passes them on to its remote caller instead
        self.reissue_warnings = reissue_warnings
        self.scratch = scratch  # keeps the job's partd directories a while (the cluster's); None: removed at once
        self.warnings: list[TaskWarning] = []
        self.redis_error: RedisUnavailableError | None = None  # the job lost a Redis server

    def run(self) -> Any:
        """Run the job; return the requested keys' values in the shape they were asked for."""
        if not self.graph.output_ids:  # e.g. get(dsk, []): nothing to run, nothing to wait for
            return nested_get(self.graph.requested, {})
        started = time.perf_counter()
        with self._redis_errors("planning"):
            job = plan_job(self.graph, self.stores, self.config, job_id=self.job_id)
        storage = JobStorage.for_job(self.stores, job.settings)
        status, interrupted = "failed", None
        payloads = job.leaf_payloads()
        try:
            with self._redis_errors("running"):
                self.invoker.invoke(payloads)
                event = self.event = self._await(storage, job.record, started)
                blobs = storage.results(list(job.plan.output_ids)) if event.is_done else None
                warned = storage.task_warnings()
            self.warnings = unpack(warned)
            if self.reissue_warnings:  # through the caller's filters, before the results or the error
                reissue(self.warnings)
            if blobs is not None:
                values = {self.graph.keys[tid]: loads(blob) for tid, blob in blobs.items()}
                # a requested literal is the caller's own object, as Dask's local schedulers return it
                values.update({self.graph.keys[tid]: self.graph.nodes[tid].value for tid in self.graph.output_ids
                               if isinstance(self.graph.nodes[tid], DataNode)})
                status = "succeeded"
                return nested_get(self.graph.requested, values)
            status = event.status
            raise_job_error(event)
        except KeyboardInterrupt:
            status = interrupted = "cancelled"
            raise self._interrupted(storage) from None
        finally:
            if status != "succeeded":  # what still runs of the job is stopped (the local pool kills it)
                self.invoker.job_ended(self.job_id)
            self._finalize(storage, job.record, status, time.perf_counter() - started,
                           sum(len(p) for p in payloads), interrupted=interrupted is not None)

    def _finalize(self, storage: JobStorage, record: JobRecord, status: str, wall_seconds: float,
                  payload_bytes: int, interrupted: bool = False) -> None:
        """Clean up and report, never hiding the job's own outcome behind a cleanup error.

        After a job lost a Redis server, the cleanup gets one short try (LOST_REDIS_BUDGET per
        call, no settling): a hung server would otherwise cost a whole redis_timeout again, after
        the job already reported its error.
        """
        short: RedisStores | None = None
        settle = 0.0 if interrupted else SETTLE_TIMEOUT  # interrupted: the user wants out now
        if self.lost_redis:
            budget = min(self.stores.spec.timeout, LOST_REDIS_BUDGET)
            short = RedisStores(dataclasses.replace(self.stores.spec, timeout=budget))
            storage, settle = dataclasses.replace(storage, stores=short), 0.0
        try:
            self.report = finalize_job(storage, record, self.config, status, wall_seconds,
                                       payload_bytes=payload_bytes, settle_timeout=settle,
                                       dirs_done=remove_dirs if self.scratch is None else self.scratch.add)
        except redis.RedisError as exc:
            log.warning("could not clean up job %s (%s: %s); its keys expire after job_ttl=%s s",
                        self.job_id, type(exc).__name__, exc, self.config.job_ttl)
        finally:
            if short is not None:
                short.close()

    @property
    def lost_redis(self) -> bool:
        """The job failed because a Redis server was lost or stopped answering (seen here or by an
        executor)."""
        return self.redis_error is not None or (self.event is not None and self.event.type == REDIS_UNAVAILABLE)

    def _interrupted(self, storage: JobStorage) -> KeyboardInterrupt:
        """Cancel the job Ctrl-C interrupted (its executors stop at their next check; the local
        pool stops those inside a task) and say so in one line."""
        message = f"job {self.job_id} interrupted (Ctrl-C): cancelled, and its running tasks stopped"
        try:
            storage.end_job(JobEvent.cancelled(message))
        except redis.RedisError as exc:
            message = f"job {self.job_id} interrupted (Ctrl-C); could not cancel it ({exc})"
        return job_interrupted(message)

    @contextlib.contextmanager
    def _redis_errors(self, doing: str) -> Iterator[None]:
        """A lost or hung server becomes one clear RedisUnavailableError, remembered so the cleanup
        does not wait on it again (tasks' own exceptions are re-raised outside this, so a task that
        uses Redis itself is not mistaken)."""
        spec = self.stores.spec
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # the client's calls go to the MDS, but for a result's chunks: name it when redis-py does not
            self.redis_error = RedisUnavailableError(unavailable(
                exc, spec, f"{doing} job {self.job_id}", server=f"the metadata store {address(spec.mds)}"))
            raise self.redis_error from exc

    def _await(self, storage: JobStorage, record: JobRecord, started: float) -> JobEvent:
        total = len(self.graph)
        deadline = None if self.config.job_timeout is None else started + self.config.job_timeout
        stall_after = self.config.stall_warning
        poll = 0.2 if self.progress else 1.0
        last_done, last_change = -1, time.perf_counter()
        while True:
            wait = poll
            if deadline is not None:  # wake at the deadline, not up to a poll later (0 would block forever)
                wait = max(0.01, min(poll, deadline - time.perf_counter()))
            event = storage.wait_event(timeout=wait)
            done = total if event is not None and event.is_done else storage.tasks_done()
            if self.progress:
                self.progress(done, total)
            if event is not None:
                return event
            now = time.perf_counter()
            if done != last_done:
                last_done, last_change = done, now
            elif stall_after is not None and now - last_change >= stall_after:
                # without job_timeout a lost invocation would hang the job silently: say so, once a period
                log.warning("job %s has finished no task for %.0f s (%d of %d tasks done); %s. It keeps "
                            "waiting: set job_timeout to fail such a job", storage.job_id, now - last_change,
                            done, total, self._unfinished(storage, record) or "every leaf invocation started")
                last_change = now
            if deadline is not None and now > deadline:
                unfinished = self._unfinished(storage, record)
                timeout_event = JobEvent.timed_out(
                    f"job {storage.job_id} did not finish within job_timeout={self.config.job_timeout} s "
                    f"({done} of {total} tasks done)" + (f"; {unfinished}" if unfinished else ""))
                storage.end_job(timeout_event)
                # the first ending event wins: a failure that raced us is reported instead
                return storage.wait_event(timeout=1.0) or timeout_event

    def _unfinished(self, storage: JobStorage, record: JobRecord) -> str:
        return describe_unfinished(storage, record, self.graph.keys.__getitem__)
