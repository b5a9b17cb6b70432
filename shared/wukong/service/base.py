"""The job service interface every backend implements (in-process on a LocalCluster, or over HTTP
to ``wukong serve`` or API Gateway), and :class:`JobHandle`, the user's view of one submitted job.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from typing import Any

from wukong.errors import WukongError
from wukong.graph import TaskGraph
from wukong.job_events import raise_job_error
from wukong.progress import ProgressBar
from wukong.report import JobReport
from wukong.serialization import loads
from wukong.task_warnings import TaskWarning, reissue
from wukong.service.models import JobConfig, JobState, JobStatus, event_from_error

#: Longest a single status call may block waiting for a job to end (server-side long poll).
MAX_STATUS_WAIT = 20.0


class ServiceError(WukongError):
    """The job service refused a request; ``status`` is the HTTP status it maps to."""

    status = 500

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class BadRequestError(ServiceError):
    status = 400


class UnknownJobError(ServiceError, KeyError):
    status = 404

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.detail


class JobNotFinishedError(ServiceError):
    """The job has no result yet (still running), or never will (it failed or was cancelled)."""

    status = 409


class ResultGoneError(ServiceError):
    """The job succeeded, but its result expired or was evicted to stay under the memory bound."""

    status = 410


class JobService(abc.ABC):
    """Submit, follow, fetch, list and cancel jobs. Results travel as one pickle of the values in
    the nesting the keys were requested in."""

    @abc.abstractmethod
    def submit(self, graph: TaskGraph, config: JobConfig | None = None) -> JobStatus:
        """Start a job; returns at once with its id (state planning or running)."""

    @abc.abstractmethod
    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        """The job's state; with ``wait`` > 0, block up to that long (at most MAX_STATUS_WAIT) for it to end."""

    @abc.abstractmethod
    def result_blob(self, job_id: str) -> bytes:
        """The pickled results of a succeeded job."""

    @abc.abstractmethod
    def jobs(self, limit: int = 50) -> list[JobStatus]:
        """Recent jobs, most recent first."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a job: executors stop at their next check. A finished job is left as it is."""

    def unhealthy(self) -> str | None:
        """Why the service cannot run jobs now (its Redis is gone, say), or None when it can."""
        return None

    def close(self) -> None:
        """Release what the service holds (threads, connections)."""


class JobHandle:
    """One submitted job, on any :class:`JobService`."""

    def __init__(self, service: JobService, job_id: str, progress: bool = False):
        self.service = service
        self.job_id = job_id
        self.progress = progress
        self.last_status: JobStatus | None = None

    def status(self) -> JobStatus:
        self.last_status = self.service.status(self.job_id)
        return self.last_status

    def wait(self, progress: bool | None = None, timeout: float | None = None) -> JobStatus:
        """Block until the job ends (or ``timeout`` seconds pass); returns its last status.

        ``progress`` shows a bar of tasks done on stderr (default: the client's setting).
        """
        show = self.progress if progress is None else progress
        bar = ProgressBar() if show else None
        # with a bar, come back often to move it; without, let the server hold the call longer
        poll = 0.25 if show else 5.0
        deadline = None if timeout is None else time.monotonic() + timeout
        pace = 0.1  # between polls of a server that answers at once; doubles up to ``poll``
        try:
            while True:
                asked = time.monotonic()
                budget = poll if deadline is None else max(0.0, min(poll, deadline - asked))
                st = self.last_status = self.service.status(self.job_id, wait=budget)
                if bar is not None:
                    bar(st.tasks_total if st.state is JobState.succeeded else st.tasks_done, st.tasks_total)
                if st.state.finished or (deadline is not None and time.monotonic() >= deadline):
                    return st
                # a server that does not long-poll (e.g. API Gateway) answers at once: pace the polls,
                # soon at first so short jobs return quickly, then less often
                time.sleep(max(0.0, min(pace, budget) - (time.monotonic() - asked)))
                pace = min(2 * pace, poll)
        finally:
            if bar is not None:
                bar.close()

    def result(self, progress: bool | None = None) -> Any:
        """Wait for the job, then return its values, or re-raise the failing task's own exception."""
        st = self.wait(progress)
        # the tasks' warnings go through this process's filters, before the results or the error
        reissue([TaskWarning.from_dict(w.model_dump()) for w in st.warnings])
        if st.state is not JobState.succeeded:
            if st.error is None:
                raise JobNotFinishedError(f"job {self.job_id} is {st.state.value} and has no error to report")
            raise_job_error(event_from_error(st.error))
        return loads(self.service.result_blob(self.job_id))

    def cancel(self) -> JobStatus:
        self.last_status = self.service.cancel(self.job_id)
        return self.last_status

    @property
    def report(self) -> JobReport | None:
        """The job report, once the job has ended and the service has sent it."""
        if self.last_status is None or self.last_status.report is None:
            return None
        names = {f.name for f in dataclasses.fields(JobReport)}
        return JobReport(**{k: v for k, v in self.last_status.report.items() if k in names})

    def __repr__(self) -> str:
        state = self.last_status.state.value if self.last_status else "?"
        return f"<wukong.JobHandle {self.job_id} {state}>"
