"""GET /jobs/{id} (API Gateway Lambda proxy integration): the execution's status and task progress.

Progress comes from the MDS while the job runs; once the finalizer has cleaned up, from the report
in the execution's output.
"""

from __future__ import annotations

import json
from typing import Any

from wukong.aws.observability import Observability
from wukong.aws.services import Services, check_job_id, execution_arn, job_config
from wukong.job import load_job


def _response(status: int, body: dict) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def job_status(event: dict, obs: Observability, context: Any = None) -> dict:
    try:
        job_id = check_job_id((event.get("pathParameters") or {}).get("id"))
    except ValueError as exc:
        return _response(400, {"message": str(exc)})
    obs.logger.append_keys(job_id=job_id)
    config = job_config()
    if not config.state_machine_arn:
        raise ValueError("no state machine configured: set WUKONG_STATE_MACHINE_ARN")
    with Services(config) as services:
        sfn = services.client("stepfunctions")
        try:
            execution = sfn.describe_execution(executionArn=execution_arn(config.state_machine_arn, job_id))
        except sfn.exceptions.ExecutionDoesNotExist:
            return _response(404, {"message": f"no job {job_id}"})
        body: dict = {"job_id": job_id, "status": execution["status"],
                      "started": execution["startDate"].isoformat(), "tasks_done": None, "tasks_total": None}
        if execution.get("stopDate"):
            body["stopped"] = execution["stopDate"].isoformat()
        try:
            record, storage = load_job(services.stores(), job_id)
            body.update(tasks_done=storage.tasks_done(), tasks_total=record.n_tasks)
        except LookupError:  # not planned yet, or already cleaned up
            pass
    if execution["status"] == "SUCCEEDED":
        output = json.loads(execution.get("output") or "{}")
        report = output.get("report") or {}
        body.update(results=output.get("results"), report=report,
                    tasks_done=report.get("tasks_run"), tasks_total=report.get("n_tasks"))
    elif execution["status"] == "FAILED":
        body.update(error=execution.get("error"), cause=execution.get("cause"))
    return _response(200, body)
