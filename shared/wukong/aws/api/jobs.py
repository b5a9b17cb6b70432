"""The jobs function: GET /jobs, GET /jobs/{id}, GET /jobs/{id}/result and DELETE /jobs/{id}.

Step Functions says where a job is; the MDS says how far it got. Results are not proxied: Lambda and
API Gateway cap a response at 6 and 10 MB, so the result route answers 303 with a presigned S3 GET.
"""

from __future__ import annotations

import json
import time
from typing import Any

from wukong.aws.api.http import ApiError, ApiRequest, dispatch, respond
from wukong.aws.api.status import NOT_PLANNED, Progress, status_from_execution
from wukong.service.models import JobState
from wukong.aws.control_plane import control_plane_keys
from wukong.aws.finalizer import FAILURE_SETTLE_SECONDS
from wukong.aws.observability import Observability
from wukong.aws.services import Services, check_job_id, execution_arn, job_config
from wukong.finalize import finalize_job
from wukong.planning import JobRecord, load_job
from wukong.job_events import JobEvent
from wukong.storage import JobStorage

#: How long a result URL works: the client follows it at once.
RESULT_URL_SECONDS = 300
MAX_LIST = 1000


class JobsApi:
    """One invocation's routes, over its :class:`Services`."""

    def __init__(self, services: Services, obs: Observability):
        self.services, self.obs = services, obs
        if not services.config.state_machine_arn:
            raise ValueError("no state machine configured: set WUKONG_STATE_MACHINE_ARN")
        self.machine = services.config.state_machine_arn
        self.sfn = services.client("stepfunctions")

    def routes(self) -> dict:
        return {("GET", "/jobs"): self.list_jobs, ("GET", "/jobs/{id}"): self.status,
                ("GET", "/jobs/{id}/result"): self.result, ("DELETE", "/jobs/{id}"): self.cancel}

    # --- routes ------------------------------------------------------------------------------
    def list_jobs(self, request: ApiRequest) -> dict:
        request.only_query("limit")
        limit = _limit(request.query.get("limit", "50"))
        executions = self.sfn.list_executions(stateMachineArn=self.machine, maxResults=limit)["executions"]
        executions.sort(key=lambda e: e["startDate"], reverse=True)
        jobs = [status_from_execution(e, self._progress(e["name"]) if e["status"] == "RUNNING" else NOT_PLANNED)
                for e in executions[:limit]]
        return respond(200, {"jobs": [j.model_dump(mode="json") for j in jobs]})

    def status(self, request: ApiRequest) -> dict:
        request.only_query("wait")  # accepted and ignored: the client paces its own polls
        job_id, execution = self._execution(request)
        progress = self._progress(job_id) if execution["status"] == "RUNNING" else NOT_PLANNED
        return respond(200, status_from_execution(execution, progress))

    def result(self, request: ApiRequest) -> dict:
        request.only_query()
        job_id, execution = self._execution(request)
        if execution["status"] != "SUCCEEDED":
            state = status_from_execution(execution).state
            raise ApiError(409, f"job {job_id} is {state.value}; it has no result" + ("" if state.finished else " yet"))
        location = json_output(execution)["results"]
        url = self.services.client("s3").generate_presigned_url(
            "get_object", Params={"Bucket": location["bucket"], "Key": location["key"]}, ExpiresIn=RESULT_URL_SECONDS)
        body = {"detail": f"the result of job {job_id} is at the Location URL for {RESULT_URL_SECONDS} s", "url": url}
        return respond(303, body, {"Location": url})

    def cancel(self, request: ApiRequest) -> dict:
        request.only_query()
        job_id, execution = self._execution(request)
        if execution["status"] == "RUNNING":
            # stop the workflow first: an executor finishing now then finds a stale task token
            # (which it ignores) instead of moving the execution on to Finalize
            self.sfn.stop_execution(executionArn=execution["executionArn"], error="Wukong.Cancelled",
                                    cause=f"job {job_id} was cancelled (DELETE /jobs/{job_id} by {request.caller})")
            self._stop_executors(job_id)
            self.obs.logger.info("cancelled", extra={"caller": request.caller})
            execution = self._stopped(execution["executionArn"])
            if execution["status"] == "RUNNING":  # the stop is not visible yet, but the job is over
                status = status_from_execution(execution, Progress(planned=True))
                return respond(200, status.model_copy(update={"state": JobState.cancelled}))
        return respond(200, status_from_execution(execution))

    def _stopped(self, arn: str, patience: float = 2.0) -> dict:
        """DescribeExecution until it shows the stop (it may lag StopExecution), for a while."""
        deadline = time.monotonic() + patience
        while True:
            execution = self.sfn.describe_execution(executionArn=arn)
            if execution["status"] != "RUNNING" or time.monotonic() > deadline:
                return execution
            time.sleep(0.1)

    # --- helpers -----------------------------------------------------------------------------
    def _execution(self, request: ApiRequest) -> tuple[str, dict]:
        try:
            job_id = check_job_id(request.path_params.get("id"))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        self.obs.logger.append_keys(job_id=job_id)
        try:
            return job_id, self.sfn.describe_execution(executionArn=execution_arn(self.machine, job_id))
        except self.sfn.exceptions.ExecutionDoesNotExist:
            raise ApiError(404, f"no job {job_id!r} (never submitted, or its execution history expired)") from None

    def _load(self, job_id: str) -> tuple[JobRecord, JobStorage] | None:
        try:
            return load_job(self.services.stores(), job_id)
        except LookupError:  # not planned yet, or already cleaned up
            return None

    def _progress(self, job_id: str) -> Progress:
        loaded = self._load(job_id)
        if loaded is None:
            # between the finalizer's cleanup and the execution's end the job is over, not unplanned
            ended = JobStorage(self.services.stores(), job_id, ttl=60, n_outputs=0).has_ended()
            return Progress(planned=True) if ended else NOT_PLANNED
        record, storage = loaded
        return Progress(True, storage.tasks_done(), record.n_tasks, record.plan_seconds)

    def _stop_executors(self, job_id: str) -> None:
        """Mark the job cancelled (executors stop at their next check) and delete its keys: no
        finalizer runs after StopExecution. A job still planning leaves keys that expire after job_ttl."""
        loaded = self._load(job_id)
        if loaded is None:
            return
        record, storage = loaded
        storage.end_job(JobEvent.cancelled(f"job {job_id} was cancelled"))
        finalize_job(storage, record, self.services.config, "cancelled", time.time() - record.created,
                     settle_timeout=FAILURE_SETTLE_SECONDS, runtime_keys=control_plane_keys(job_id))


def json_output(execution: dict) -> dict:
    return json.loads(execution.get("output") or "{}")


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIST:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIST}, got {text!r}")
    return int(text)


def jobs_api(event: dict, obs: Observability, context: Any = None) -> dict:
    with Services(job_config()) as services:
        return dispatch(event, JobsApi(services, obs).routes())
