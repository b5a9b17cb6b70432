"""The job service on a LocalCluster: each submitted job is a :class:`~wukong.job.JobRun` on its own
thread, so submit returns at once. Finished jobs and their pickled results are kept in memory,
bounded by count, age and bytes (``max_jobs_kept``, ``result_ttl``, ``max_result_bytes``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from wukong.config import WukongConfig, make_config
from wukong.job_events import REDIS_UNAVAILABLE, EndReason, EventKind, JobEvent
from wukong.graph import TaskGraph
from wukong.job import JobRun
from wukong.planning import new_job_id
from wukong.report import JobReport
from wukong.serialization import dumps
from wukong.service.base import (
    MAX_STATUS_WAIT,
    JobNotFinishedError,
    JobService,
    ResultGoneError,
    UnknownJobError,
)
from wukong.service.models import (
    JobConfig,
    JobError,
    JobState,
    JobStatus,
    JobTimings,
    error_from_event,
    error_from_exception,
)
from wukong.storage import JobStorage

log = logging.getLogger(__name__)

#: How long cancel() waits for the job to wind down, so its answer usually shows the final state.
CANCEL_WAIT = 5.0


@dataclass
class _Job:
    run: JobRun
    tasks_total: int
    submitted_at: float
    state: JobState = JobState.planning
    tasks_done: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: JobError | None = None
    report: JobReport | None = None
    result: bytes | None = None
    result_note: str = ""  # why there is no result, once it is gone
    fetched: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def job_id(self) -> str:
        return self.run.job_id


#: How long /health waits for the metadata store to answer a PING.
HEALTH_TIMEOUT = 2.0


class LocalJobService(JobService):
    """Runs jobs on ``cluster`` (a LocalCluster) in background threads; thread-safe."""

    def __init__(self, cluster: Any, config: WukongConfig | None = None):
        self.cluster = cluster
        self.config = config or cluster.config
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()

    # --- the interface ---------------------------------------------------------------------
    def unhealthy(self) -> str | None:
        stores = self.cluster.stores
        if stores is None:
            return "the cluster is closed"
        # a client of its own, with a short timeout and no retries: a hung server must not hang /health
        probe = redis.Redis(*stores.spec.mds, password=stores.spec.password, socket_timeout=HEALTH_TIMEOUT,
                            socket_connect_timeout=HEALTH_TIMEOUT, ssl=stores.spec.tls,
                            retry=Retry(NoBackoff(), retries=0))
        try:
            probe.ping()
        except redis.RedisError as exc:
            return f"the metadata store {stores.spec.mds} does not answer ({type(exc).__name__}: {exc})"
        finally:
            probe.close()
        return None

    def submit(self, graph: TaskGraph, config: JobConfig | None = None) -> JobStatus:
        if self.cluster.stores is None:
            raise RuntimeError("the cluster behind this job service is closed")
        cfg = make_config(self.config, **(config.overrides() if config else {}))
        job: _Job | None = None

        def progress(done: int, total: int) -> None:
            job.state = JobState.running
            job.tasks_done = done

        # the tasks' warnings travel in the job's status, to be raised in the caller's process
        run = JobRun(graph, self.cluster.stores, self.cluster.invoker, cfg, progress=progress,
                     job_id=new_job_id(), reissue_warnings=False, scratch=self.cluster.scratch)
        job = _Job(run=run, tasks_total=len(graph), submitted_at=time.time())
        with self._lock:
            self._jobs[job.job_id] = job
            self._forget_old()
        threading.Thread(target=self._run, args=(job,), name=f"wukong-job-{job.job_id}", daemon=True).start()
        return self._status(job)

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        job = self._get(job_id)
        if wait > 0 and not job.state.finished:
            job.done.wait(min(wait, MAX_STATUS_WAIT))
        return self._status(job)

    def result_blob(self, job_id: str) -> bytes:
        job = self._get(job_id)
        with self._lock:
            if job.state is not JobState.succeeded:
                why = "is still " + job.state.value if not job.state.finished else job.state.value
                raise JobNotFinishedError(f"job {job_id} {why}; it has no result" +
                                          ("" if job.state.finished else " yet"))
            if job.result is None:
                raise ResultGoneError(f"the result of job {job_id} is gone: {job.result_note}")
            job.fetched = True
            return job.result

    def jobs(self, limit: int = 50) -> list[JobStatus]:
        with self._lock:
            recent = list(self._jobs.values())[-limit:]
        return [self._status(j) for j in reversed(recent)]

    def cancel(self, job_id: str) -> JobStatus:
        job = self._get(job_id)
        if not job.state.finished:
            settings = job.run.config
            storage = JobStorage(self.cluster.stores, job_id, settings.job_ttl, len(job.run.graph.output_ids))
            # executors see the ended flag at their next check; the job's thread sees the event
            storage.end_job(JobEvent.cancelled(f"job {job_id} was cancelled"))
            job.done.wait(CANCEL_WAIT)
        return self._status(job)

    def redis_restarted(self, message: str) -> None:
        """The cluster's Redis died and came back empty: fail every job still running, with ``message``
        (what died, and how). Their threads, waiting on the new server, see the failure and end."""
        with self._lock:
            running = [j for j in self._jobs.values() if not j.state.finished]
        for job in running:
            settings = job.run.config
            storage = JobStorage(self.cluster.stores, job.job_id, settings.job_ttl, len(job.run.graph.output_ids))
            event = JobEvent(EventKind.ERROR, EndReason.FAILED, internal=True, key="<job>", worker="wukong serve",
                             type=REDIS_UNAVAILABLE,
                             message=f"job {job.job_id} lost its data: {message} while it ran. The server "
                                     "restarted Redis; submit the job again")
            try:
                storage.end_job(event)
            except redis.RedisError as exc:  # Redis gone again: the job's thread fails on its own
                log.warning("could not fail job %s after the Redis restart: %s", job.job_id, exc)
        if running:
            log.warning("failed %d running job(s): their data was in the Redis that died", len(running))

    def close(self) -> None:
        """Cancel the jobs still running and wait briefly for their threads."""
        with self._lock:
            running = [j for j in self._jobs.values() if not j.state.finished]
        for job in running:
            try:
                self.cancel(job.job_id)
            except Exception:  # the cluster may already be gone; the threads are daemons
                log.debug("could not cancel job %s at close", job.job_id, exc_info=True)

    # --- internals -----------------------------------------------------------------------------
    def _run(self, job: _Job) -> None:
        job.started_at = time.time()
        try:
            values = job.run.run()
            blob = dumps(values)
        except BaseException as exc:  # the job's own failure, or Wukong's: either way it is over
            event = job.run.event
            if event is not None and not event.is_done:
                job.error = error_from_event(event)
            else:
                job.error = error_from_exception(exc)
            state = JobState.cancelled if job.error.kind == "cancelled" else JobState.failed
            blob = None
        else:
            state = JobState.succeeded
        with self._lock:
            job.report = job.run.report
            job.result = blob
            job.finished_at = time.time()
            job.state = state
            if state is JobState.succeeded:
                job.tasks_done = job.tasks_total
            self._trim_results(keep=job)
        job.done.set()

    def _get(self, job_id: str) -> _Job:
        with self._lock:
            self._expire_results()
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(f"no job {job_id!r} on this server (never submitted, or forgotten)")
        return job

    def _status(self, job: _Job) -> JobStatus:
        report = job.report
        return JobStatus(
            job_id=job.job_id,
            state=job.state,
            tasks_done=job.tasks_done,
            tasks_total=job.tasks_total,
            timings=JobTimings(
                submitted_at=job.submitted_at, started_at=job.started_at, finished_at=job.finished_at,
                plan_seconds=report.plan_seconds if report else None,
                wall_seconds=report.wall_seconds if report else None,
            ),
            error=job.error,
            result_available=job.result is not None,
            report=report.as_dict() if report else None,
            warnings=[w.as_dict() for w in job.run.warnings] if job.finished_at else [],
        )

    def _forget_old(self) -> None:
        """Drop the oldest finished jobs beyond ``max_jobs_kept`` (running ones always stay)."""
        excess = len(self._jobs) - self.config.max_jobs_kept
        for job_id in [j.job_id for j in self._jobs.values() if j.state.finished][:max(0, excess)]:
            del self._jobs[job_id]

    def _expire_results(self) -> None:
        cutoff = time.time() - self.config.result_ttl
        for job in self._jobs.values():
            if job.result is not None and job.finished_at is not None and job.finished_at < cutoff:
                job.result, job.result_note = None, f"results are kept {self.config.result_ttl} s"

    def _trim_results(self, keep: _Job) -> None:
        """Stay under ``max_result_bytes``: fetched results go first, then the oldest; never ``keep``."""
        self._expire_results()
        held = [j for j in self._jobs.values() if j.result is not None and j is not keep]
        total = sum(len(j.result) for j in held) + len(keep.result or b"")
        for job in sorted(held, key=lambda j: (not j.fetched, j.finished_at)):
            if total <= self.config.max_result_bytes:
                break
            total -= len(job.result)
            job.result = None
            job.result_note = f"evicted to keep results under max_result_bytes={self.config.max_result_bytes}"
