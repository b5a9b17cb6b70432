"""A Step Functions execution (plus the job's progress in the MDS) as the API's ``JobStatus``. Pure.

Executions are named by job id, so DescribeExecution and ListExecutions answers carry everything
but the progress counts, which come from the executors' counters in the MDS while the job runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wukong.aws.submit import failure_event
from wukong.service.models import JobError, JobState, JobStatus, JobTimings, error_from_event

_RUNNING = {"RUNNING", "PENDING_REDRIVE"}


@dataclass(frozen=True)
class Progress:
    """What the MDS knows about a running job; ``planned`` is False until the planner has written it."""

    planned: bool
    tasks_done: int = 0
    tasks_total: int = 0
    plan_seconds: float | None = None


NOT_PLANNED = Progress(planned=False)


def _seconds(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def job_state(execution_status: str, progress: Progress) -> JobState:
    if execution_status in _RUNNING:
        return JobState.running if progress.planned else JobState.planning
    if execution_status == "SUCCEEDED":
        return JobState.succeeded
    if execution_status == "ABORTED":
        return JobState.cancelled
    return JobState.failed  # FAILED, TIMED_OUT


def job_error(execution: Mapping[str, Any]) -> JobError | None:
    status, job_id = execution.get("status"), execution.get("name")
    if status == "FAILED" and (execution.get("error") or execution.get("cause")):
        return error_from_event(failure_event(execution))
    if status in ("FAILED", "TIMED_OUT"):  # from ListExecutions, or an execution-level timeout
        detail = "timed out" if status == "TIMED_OUT" else "failed (GET /jobs/{id} has the error)"
        return JobError(kind="timeout" if status == "TIMED_OUT" else "internal", type="wukong.errors.JobFailedError",
                        message=f"job {job_id} {detail}")
    if status == "ABORTED":
        return JobError(kind="cancelled", type="wukong.errors.JobFailedError", message=f"job {job_id} was cancelled")
    return None


def status_from_execution(execution: Mapping[str, Any], progress: Progress = NOT_PLANNED) -> JobStatus:
    """``execution``: a DescribeExecution answer, or one item of ListExecutions (which has no output
    or error: a listed job shows its state and timings, GET /jobs/{id} the rest)."""
    state = job_state(execution["status"], progress)
    output = json.loads(execution.get("output") or "{}") if state is JobState.succeeded else {}
    report = output.get("report") or None
    done, total = progress.tasks_done, progress.tasks_total
    if report:
        done = total = int(report.get("n_tasks") or 0)
    return JobStatus(
        job_id=execution["name"],
        state=state,
        tasks_done=min(done, total) if total else done,
        tasks_total=total,
        timings=JobTimings(
            submitted_at=_seconds(execution["startDate"]),
            started_at=_seconds(execution["startDate"]),
            finished_at=_seconds(execution.get("stopDate")),
            plan_seconds=report.get("plan_seconds") if report else progress.plan_seconds,
            wall_seconds=report.get("wall_seconds") if report else None,
        ),
        error=job_error(execution),
        result_available=state is JobState.succeeded,
        report=report,
        warnings=output.get("warnings") or [],
    )
