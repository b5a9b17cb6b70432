"""The AwaitCompletion state's Lambda: keep the task token where the finishing executor will find it.

If the job finished before the token arrived (a tiny graph, or a slow Map), the token store says
so and this function sends the outcome itself; see control_plane.py for why it goes out once.
"""

from __future__ import annotations

from typing import Any

from wukong.aws.control_plane import TaskTokenStore, send_outcome
from wukong.aws.observability import Observability
from wukong.aws.services import Services, check_job_id, job_config
from wukong.planning import load_job


def store_token(event: dict, obs: Observability, context: Any = None) -> dict:
    job_id = check_job_id(event.get("job_id"))
    token = event["task_token"]
    obs.logger.append_keys(job_id=job_id)
    with Services(job_config()) as services:
        _, storage = load_job(services.stores(), job_id)
        finished = TaskTokenStore(storage.context).store(token)
        if finished is not None:
            send_outcome(services.client("stepfunctions"), token, job_id, finished)
            obs.logger.info("the job had already finished: sent its outcome", extra={"outcome": finished.kind.value})
    return {"job_id": job_id, "notified_by_waiter": finished is not None}
