"""The Finalize and CleanUpAfterFailure states: results to S3, the job report, the job's keys deleted.

On success the state output carries only the results' S3 location and the report. On failure the
function stops whatever still runs (the job is marked ended), cleans up, and returns the error and
a JSON cause naming the failing task, which the Fail state shows in the console.
"""

from __future__ import annotations

import json
import time
from typing import Any

from dask.local import nested_get

from wukong.aws.control_plane import MAX_CAUSE, MAX_ERROR, control_plane_keys, error_name, failure_cause
from wukong.aws.observability import Observability
from wukong.aws.services import Services, job_config
from wukong.finalize import describe_unfinished, finalize_job
from wukong.planning import JobRecord, load_job
from wukong.job_events import JobEvent
from wukong.serialization import dumps, loads
from wukong.storage import JobStorage
from wukong.task_warnings import TaskWarning, unpack
from wukong.task_keys import peek_key

#: A failed job's stragglers are not waited for long: the report is best effort.
FAILURE_SETTLE_SECONDS = 0.5
_TIMEOUTS = {"States.Timeout", "States.HeartbeatTimeout"}


def results_key(job_id: str) -> str:
    return f"results/{job_id}.pkl"


#: Warnings carried in a succeeded execution's output (GET /jobs/{id} shows them; the rest are dropped).
STATE_WARNINGS = 100


def finalize(event: dict, obs: Observability, context: Any = None) -> dict:
    if event.get("failed"):
        return clean_up_after_failure(event.get("state") or {}, obs)
    job_id = event["job_id"]
    obs.logger.append_keys(job_id=job_id)
    config = job_config(event.get("config"))
    if not config.bucket:
        raise ValueError("no results bucket configured: set WUKONG_BUCKET")
    with Services(config) as services:
        record, storage = load_job(services.stores(), job_id)
        blobs = storage.results([tid for tid, _ in record.outputs])
        # the values nested as requested, as GET /jobs/{id}/result serves them (through a presigned
        # URL, so this object is the response body as it is)
        body = dumps(nested_get(record.requested, {key: loads(blobs[tid]) for tid, key in record.outputs}))
        with obs.span("write results"):
            services.client("s3").put_object(Bucket=config.bucket, Key=results_key(job_id), Body=body)
        warned = unpack(storage.task_warnings())
        report = finalize_job(storage, record, config, "succeeded", time.time() - record.created,
                              runtime_keys=control_plane_keys(storage.job_id))
    obs.count("JobsSucceeded", 1)
    obs.count("ResultBytes", len(body), "Bytes")
    return {"job_id": job_id, "status": "succeeded",
            "results": {"bucket": config.bucket, "key": results_key(job_id), "bytes": len(body)},
            "report": report.as_dict(), "warnings": state_warnings(warned)}


def state_warnings(warned: list[TaskWarning]) -> list[dict]:
    """The tasks' warnings for the execution's output, which must stay far below Step Functions'
    256 KB: the first STATE_WARNINGS, each message cut to 500 characters."""
    out = []
    for w in warned[:STATE_WARNINGS]:
        item = w.as_dict()
        item["message"] = item["message"][:500]
        out.append(item)
    return out


def describe_failure(state: dict) -> tuple[str, dict]:
    """(error, cause) of the state's caught error: our executors' causes pass through; timeouts and
    Lambda errors are translated to the same shape (job_id, key, type, message, traceback)."""
    caught = state.get("error") or {}
    error = str(caught.get("Error") or "WukongJobFailed")
    raw = caught.get("Cause") or ""
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    job_id = state.get("job_id")
    if isinstance(parsed, dict) and "key" in parsed:  # sent by an executor or the waiter
        return error, parsed
    cause: dict = {"job_id": job_id, "key": None, "type": error, "message": raw}
    if error in _TIMEOUTS:
        settings = state.get("await") or {}
        cause["reason"] = "timeout"
        cause["message"] = (f"no executor reported progress for {settings.get('heartbeat_seconds')} s "
                            "(heartbeat_timeout): an executor may have crashed or timed out"
                            if error == "States.HeartbeatTimeout" else
                            f"job {job_id} did not finish within {settings.get('timeout_seconds')} s")
    elif isinstance(parsed, dict) and "errorType" in parsed:  # a Lambda function of ours raised
        cause.update(type=parsed["errorType"], message=parsed.get("errorMessage", ""),
                     traceback="".join(parsed.get("stackTrace") or [])[-8000:])
    return error, cause


def fail_state_error(error: str) -> str:
    """A Fail state's error may not begin with the reserved "States." prefix: States.Timeout becomes
    Wukong.Timeout, and so on."""
    return f"Wukong.{error.removeprefix('States.')}" if error.startswith("States.") else error


def clean_up_after_failure(state: dict, obs: Observability) -> dict:
    error, cause = describe_failure(state)
    text = json.dumps(cause)[:MAX_CAUSE]
    job_id = state.get("job_id")
    obs.logger.append_keys(job_id=job_id)
    report = None
    if isinstance(job_id, str):
        with Services(job_config(state.get("config"))) as services:
            try:
                record, storage = load_job(services.stores(), job_id)
            except LookupError:  # Plan itself failed: nothing was written
                record = None
            if record is not None:
                first = storage.first_event()
                if first is not None and not first.is_done:
                    # the task's own failure event, in full: a SendTaskFailure cause may be cut short
                    error, text = error_name(first), failure_cause(job_id, first)
                    cause = json.loads(text)
                elif cause.get("reason") == "timeout":  # name what never ran, as the local path does
                    unfinished = describe_unfinished(storage, record, lambda t: _leaf_key(storage, record, t))
                    if unfinished:
                        cause["message"] += f"; {unfinished}"
                        text = json.dumps(cause)[:MAX_CAUSE]
                report = _stop_and_report(storage, record, services, cause)
    obs.count("JobsFailed", 1)
    obs.logger.warning("job failed", extra={"error": error, "key": cause.get("key")})
    return {"job_id": job_id, "status": "failed", "error": fail_state_error(error)[:MAX_ERROR], "cause": text, "report": report}


def _leaf_key(storage: JobStorage, record: JobRecord, leaf: int) -> Any:
    """A leaf's Dask key, peeked from its schedule path (no task code imported); its id if unreadable."""
    try:
        return peek_key(storage.get_path(record.leaves.index(leaf)), leaf)
    except Exception:  # a path already gone: the id is still worth showing
        return f"<task id {leaf}>"


def _stop_and_report(storage: JobStorage, record: JobRecord, services: Services, cause: dict) -> dict:
    # executors still running see the job ended at their next check and stop quietly
    storage.end_job(JobEvent.from_dict({"kind": "error", **cause, "reason": cause.get("reason") or "cancelled"}))
    status = "timed out" if cause.get("reason") == "timeout" else "failed"
    report = finalize_job(storage, record, services.config, status, time.time() - record.created,
                          settle_timeout=FAILURE_SETTLE_SECONDS, runtime_keys=control_plane_keys(storage.job_id))
    return report.as_dict()
