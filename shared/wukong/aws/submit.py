"""Submit a graph to the deployed state machine and fetch its result: the base of a remote client.

The graph travels inline in the execution input while it is small, else through S3; results come
back through S3 (the finalizer writes them), and a failed job re-raises the task's own exception.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wukong.errors import JobFailedError
from wukong.graph import to_task_mapping
from wukong.planning import new_job_id
from wukong.job_events import JobEvent, raise_job_error
from wukong.serialization import dumps, loads

#: Graphs up to this size (base64) ride in the execution input; the whole input must stay under 256 KB.
INLINE_GRAPH_LIMIT = 128 * 1024
_FINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


@dataclass(frozen=True)
class JobHandle:
    job_id: str
    execution_arn: str


def graph_key(job_id: str) -> str:
    return f"graphs/{job_id}.pkl"


def submit_job(dsk: Any, keys: Any, *, state_machine_arn: str, bucket: str | None, sfn_client: Any,
               s3_client: Any = None, config: Mapping[str, Any] | None = None,
               job_id: str | None = None) -> JobHandle:
    """Start one execution named ``job_id`` computing ``keys`` of ``dsk`` (any graph form Dask hands
    a scheduler). ``config``: per-job overrides (see docs/aws-runtime.md)."""
    job_id = job_id or new_job_id()
    blob = dumps((to_task_mapping(dsk), keys))
    inline = base64.b64encode(blob).decode("ascii")
    if len(inline) <= INLINE_GRAPH_LIMIT:
        graph: dict = {"inline": inline}
    else:
        if not bucket or s3_client is None:
            raise ValueError(f"a graph of {len(blob)} bytes goes through S3: pass bucket= and s3_client=")
        s3_client.put_object(Bucket=bucket, Key=graph_key(job_id), Body=blob)
        graph = {"s3": {"bucket": bucket, "key": graph_key(job_id)}}
    execution = sfn_client.start_execution(
        stateMachineArn=state_machine_arn, name=job_id,
        input=json.dumps({"job_id": job_id, "graph": graph, "config": dict(config or {})}),
    )
    return JobHandle(job_id, execution["executionArn"])


def wait_for(handle: JobHandle, sfn_client: Any, timeout: float | None = None, poll: float = 0.5) -> dict:
    """Poll until the execution ends; returns describe_execution's answer."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        described = sfn_client.describe_execution(executionArn=handle.execution_arn)
        if described["status"] in _FINAL:
            return described
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {handle.job_id} still {described['status']} after {timeout} s")
        time.sleep(poll)


def fetch_result(handle: JobHandle, *, sfn_client: Any, s3_client: Any, timeout: float | None = None) -> Any:
    """Wait for the job and return the requested keys' values in the shape they were asked for."""
    described = wait_for(handle, sfn_client, timeout)
    if described["status"] == "SUCCEEDED":
        results = json.loads(described["output"])["results"]
        body = s3_client.get_object(Bucket=results["bucket"], Key=results["key"])["Body"].read()
        return loads(body)  # the finalizer stored the values nested as requested
    if described["status"] == "FAILED":
        raise_job_error(failure_event(described))
    raise JobFailedError(f"job {handle.job_id} ended {described['status']}")


def failure_event(described: Mapping) -> JobEvent:
    """The failure event (as raise_job_error takes it) behind a FAILED execution's error and cause."""
    try:
        cause = json.loads(described.get("cause") or "")
    except ValueError:
        cause = None
    if not isinstance(cause, dict):
        cause = {"message": described.get("cause") or "", "internal": True}
    event = {"kind": "error", "type": described.get("error"), **cause}
    if not event.get("key"):
        # not a task's failure (a timeout, or one of our functions failed): say which
        event.setdefault("internal", cause.get("reason") is None)
        event["key"] = f"<job {cause.get('job_id')}: {described.get('error')}>"
    return JobEvent.from_dict(event)
