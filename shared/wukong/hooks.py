"""What a runtime can plug into an executor: tracing spans, job-end notification, progress, metrics.

The defaults do nothing, which is all the local runtime needs; the AWS runtime's hooks add X-Ray
subsegments, Step Functions callbacks and CloudWatch metrics without the core importing AWS code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wukong.storage import SpanFactory


@dataclass(frozen=True)
class JobContext:
    """What a hook knows of the job it runs in: its id and TTL, and the metadata store holding the
    job's event list, next to which a runtime keeps its own keys (the AWS task token). Not the
    job's storage: a hook cannot store values, bump counters or end the job."""

    job_id: str
    ttl: int
    mds: Any  # a redis.Redis client; None in the in-memory backend
    events_key: str


class ExecutorHooks:
    """No-op hooks. Subclasses override what they need; every method must be cheap and thread-safe."""

    #: Opens a span around each task and storage call; None skips the bookkeeping entirely.
    span: SpanFactory | None = None

    def task_started(self, key: object) -> None:
        """A task is about to run (e.g. tag log lines with its key)."""

    def task_finished(self) -> None:
        """The task last started returned (its count is not reported to the job yet)."""

    def running_counts_reported(self) -> None:
        """The running invocation's counts so far were added to its job's totals."""

    def counts_pending(self, pending: Mapping[str, tuple[int, Mapping[str, float]]]) -> None:
        """Counts of finished invocations not yet reported, by job id: (job ttl, counts); the
        running invocation's are among them now. Called again with ``{}`` once they are reported."""

    def job_ended(self, job: JobContext) -> None:
        """This executor stored the job's last requested result, or recorded the job's first failure.

        Called at most once per job and executor; whoever awaits the job can be told now.
        """

    def progress(self, job: JobContext) -> None:
        """The job is making progress (an invocation started, or a periodic check passed)."""

    def invocation_done(self, counts: Mapping[str, float]) -> None:
        """The counts (tasks, invoked, bytes, ...) of one finished invocation."""
