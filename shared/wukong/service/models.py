"""The job API's wire format: pydantic models shared by the HTTP server, the clients and the
OpenAPI document, plus the conversions between a job's ending event and its JSON error. Pure.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wukong.config import MAX_BIG_TASK_THRESHOLD, MAX_JOB_SECONDS, MAX_PAYLOAD
from wukong.job_events import EndReason, EventKind, JobEvent

#: Job ids are also Step Functions execution names on AWS: 1-80 of [A-Za-z0-9_-].
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"
#: Media type of a pickled graph or result body.
PICKLE_MEDIA_TYPE = "application/octet-stream"
#: On AWS an inline graph rides in the Step Functions execution input, which must stay under 256 KB:
#: the client uploads bigger pickles first, and API Gateway's submit function refuses them inline.
AWS_INLINE_GRAPH_LIMIT = 128 * 1024


class JobState(str, Enum):
    planning = "planning"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


class JobError(BaseModel):
    """Why a job failed: the first failure wins, as in the local engine."""

    kind: Literal["task", "internal", "timeout", "cancelled"] = Field(
        description="task: a task raised; internal: Wukong itself failed; timeout: job_timeout passed; "
        "cancelled: DELETE /jobs/{id}."
    )
    key: str | None = Field(default=None, description="The failing task's Dask key (its repr), when a task failed.")
    type: str = Field(description="Exception type, module-qualified, e.g. builtins.ZeroDivisionError.")
    message: str
    traceback: str | None = Field(default=None, description="The remote traceback, when there is one.")
    worker: str | None = Field(default=None, description="Which executor reported the failure.")
    exception: str | None = Field(
        default=None,
        description="Base64 pickle of the exception, so a Python client re-raises the task's own type. "
        "Only unpickle it from a server you trust.",
    )


class JobTimings(BaseModel):
    """Wall-clock times are Unix seconds; durations are seconds."""

    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    plan_seconds: float | None = None
    wall_seconds: float | None = None


class TaskWarningInfo(BaseModel):
    """A warning a task raised; the Python client raises it again through its own filters."""

    category: str = Field(description="Warning class, module-qualified, e.g. builtins.UserWarning.")
    message: str
    filename: str = Field(description="Where the task's code raised it.")
    lineno: int
    module: str | None = Field(default=None, description="The module that raised it, as warning filters match it.")
    task: str = Field(description="The task's Dask key (its repr).")


class JobStatus(BaseModel):
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    state: JobState
    tasks_done: int = Field(ge=0, description="Tasks finished so far (progress; reported in batches).")
    tasks_total: int = Field(ge=0)
    timings: JobTimings
    error: JobError | None = None
    result_available: bool = Field(default=False, description="GET /jobs/{id}/result will answer 200.")
    report: dict[str, Any] | None = Field(default=None, description="The job report (JobReport) once finished.")
    warnings: list[TaskWarningInfo] = Field(
        default_factory=list, description="Warnings the job's tasks raised (at most 1,000), once it has finished.")


class JobList(BaseModel):
    jobs: list[JobStatus] = Field(description="Most recent first.")


class JobConfig(BaseModel):
    """Per-job overrides of job-level settings; storage and server settings cannot be overridden."""

    model_config = ConfigDict(extra="forbid")

    # the same ranges as WukongConfig's, so a value outside one gets 400 naming the setting
    job_timeout: float | None = Field(default=None, gt=0, le=MAX_JOB_SECONDS)
    job_ttl: int | None = Field(default=None, ge=60, le=MAX_JOB_SECONDS)
    payload_limit: int | None = Field(default=None, ge=4096, le=MAX_PAYLOAD)
    big_task_threshold: int | None = Field(default=None, ge=0, le=MAX_BIG_TASK_THRESHOLD)

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class SubmitRequest(BaseModel):
    """``POST /jobs`` as JSON: the graph inline (base64) or a finished upload's id, never both."""

    model_config = ConfigDict(extra="forbid")

    graph: str | None = Field(
        default=None, description="Base64 of the pickled tuple (dsk, keys) (wukong.serialization.dumps)."
    )
    graph_upload: str | None = Field(default=None, description="upload_id of a completed PUT /uploads/{upload_id}.")
    config: JobConfig | None = None

    @model_validator(mode="after")
    def _one_graph(self) -> "SubmitRequest":
        if (self.graph is None) == (self.graph_upload is None):
            raise ValueError("give exactly one of 'graph' (base64) and 'graph_upload' (an upload id)")
        return self


class UploadTicket(BaseModel):
    """Where to PUT a large graph: the local counterpart of an S3 presigned URL."""

    upload_id: str
    url: str = Field(description="PUT the raw bytes here, without an Authorization header; single use.")
    method: Literal["PUT"] = "PUT"
    max_bytes: int
    expires_at: float


class UploadDone(BaseModel):
    upload_id: str
    size: int


class Problem(BaseModel):
    """Every error response: one readable sentence."""

    detail: str


def error_from_event(event: JobEvent) -> JobError:
    """A job's error event (see :mod:`wukong.job_events`) as its wire form."""
    if event.reason in (EndReason.TIMEOUT, EndReason.CANCELLED):
        raised = "JobTimeoutError" if event.reason is EndReason.TIMEOUT else "JobFailedError"
        return JobError(kind=event.reason.value, type=f"wukong.errors.{raised}",
                        message=event.message or f"job {event.reason.value}")
    return JobError(
        kind="internal" if event.internal else "task",
        key=event.key,
        type=event.type or "builtins.Exception",
        message=event.message,
        traceback=event.traceback or None,
        worker=event.worker,
        exception=event.exception,
    )


def error_from_exception(exc: BaseException) -> JobError:
    """A failure that happened outside the executors (planning, storage) as its wire form."""
    return error_from_event(dataclasses.replace(JobEvent.task_failed(None, exc, internal=True), key=None, worker=None))


def event_from_error(error: JobError) -> JobEvent:
    """The inverse of :func:`error_from_event`, for :func:`wukong.job_events.raise_job_error`."""
    if error.kind in ("timeout", "cancelled"):
        return JobEvent(EventKind.ERROR, EndReason(error.kind), message=error.message)
    return JobEvent(EventKind.ERROR, EndReason.FAILED, key=error.key or "<job>", type=error.type,
                    message=error.message, traceback=error.traceback or "", exception=error.exception,
                    internal=error.kind == "internal", worker=error.worker or "?")


def explain_errors(errors: list[dict]) -> str:
    """Pydantic's errors as one sentence a person can act on."""
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "malformed request: " + "; ".join(parts)
