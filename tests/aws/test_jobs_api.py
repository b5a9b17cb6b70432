"""The job API on AWS: API Gateway's proxy events into the submit and jobs functions under moto,
and the real HTTP client (SigV4-signed) against them through a loopback API Gateway: submit,
progress, results, the presigned upload of a large graph, failures, listing and cancelling."""

from __future__ import annotations

import base64
import json
import operator
import time

import numpy as np
import pytest

from task_bodies import wait_for_key
from wukong import Client
from wukong.serialization import dumps
from wukong.service.base import UnknownJobError
from wukong.service.models import AWS_INLINE_GRAPH_LIMIT, JobState, JobStatus
from wukong.service.remote import AuthenticationError, BearerAuth, HttpJobService
from wukong.storage import JobStorage, KeySpace

pytestmark = pytest.mark.timeout(120)
JSON = {"Content-Type": "application/json"}


def post_job(api, body: dict | bytes, headers=JSON) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = api.call("POST", "/jobs", raw, headers)
    return answer["statusCode"], json.loads(answer["body"])


def test_submit_refuses_bad_requests_saying_why(api):
    graph = base64.b64encode(dumps(({"a": 1}, "a"))).decode()
    cases = [
        (b"{not json", JSON, 400, "malformed request"),
        ({"config": {}}, JSON, 400, "exactly one of 'graph'"),
        ({"graph": graph, "graph_upload": "x" * 32}, JSON, 400, "exactly one of 'graph'"),
        ({"graph": "%%%"}, JSON, 400, "not valid base64"),
        ({"graph": base64.b64encode(b"hello").decode()}, JSON, 400, "is not a pickle"),
        ({"graph": graph, "config": {"kv_endpoints": "x"}}, JSON, 400, "config.kv_endpoints"),
        ({"graph_upload": "never-uploaded-graph-0001"}, JSON, 400, "no upload"),
        ({"graph": base64.b64encode(b"\x80" * (AWS_INLINE_GRAPH_LIMIT + 1)).decode()}, JSON, 413,
         f"over the limit of {AWS_INLINE_GRAPH_LIMIT} bytes"),
        (b"\x80" * (AWS_INLINE_GRAPH_LIMIT + 1), {"Content-Type": "application/octet-stream"}, 413, "POST /uploads"),
        (b"graph", {"Content-Type": "text/plain"}, 415, "application/json"),
    ]
    for body, headers, status, detail in cases:
        got, answer = post_job(api, body, headers)
        assert (got, detail in answer["detail"]) == (status, True), (body, answer)
    assert api.call("GET", "/jobs/no-such-job")["statusCode"] == 404
    assert api.call("GET", "/jobs/not a job id")["statusCode"] == 400
    assert "unknown query parameter" in json.loads(api.call("GET", "/jobs", query={"limt": "5"})["body"])["detail"]


def test_a_request_without_an_iam_caller_is_refused_unread(aws, api):
    from aws_harness import load_handler, LambdaContext

    handler = load_handler("functions/submit/handler.handler")
    event = {"resource": "/jobs", "httpMethod": "POST", "headers": JSON, "body": "{not even json",
             "requestContext": {"identity": {}}}
    answer = handler(event, LambdaContext("wukong-submit", aws.function_arns["submit"]))
    assert answer["statusCode"] == 401 and "IAM" in json.loads(answer["body"])["detail"]
    assert aws.sfn.list_executions(stateMachineArn=aws.state_machine_arn)["executions"] == []


def test_the_raw_pickle_form_submits_and_the_status_follows(aws, api):
    status, body = post_job(api, dumps(({"a": 20, "b": (operator.add, "a", 22)}, "b")),
                            {"Content-Type": "application/octet-stream"})
    assert status == 202 and body["state"] == "planning"
    deadline = time.monotonic() + 60
    while (st := JobStatus.model_validate_json(api.call("GET", f"/jobs/{body['job_id']}")["body"])).state in (
            JobState.planning, JobState.running):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert st.state is JobState.succeeded and st.tasks_done == st.tasks_total == 2 and st.result_available
    result = api.call("GET", f"/jobs/{body['job_id']}/result")
    assert result["statusCode"] == 303 and "X-Amz-Signature" in result["headers"]["Location"]


def test_client_with_sigv4_runs_uploads_follows_lists_and_cancels(aws, api, redis_server, redis_stores):
    with api.serve() as url:
        client = Client(endpoint=url, auth="sigv4", progress=True)  # a bar polls often
        # small graph inline; the values come back nested as requested
        assert client.get({"a": 2, "b": (operator.mul, "a", 21), "c": (operator.add, "b", 1)}, [["b"], "c"]) == ((42,), 43)

        # larger than the inline limit: presigned S3 upload, then POST /jobs {"graph_upload"}
        data = np.arange(40_000, dtype=np.float64)  # 320 KB
        job = client.submit({"data": data, "total": (np.sum, "data")}, "total")
        assert job.result() == data.sum()
        st = job.status()
        assert st.state is JobState.succeeded and st.tasks_done == st.tasks_total == 2 and st.report["tasks_run"] == 2
        execution_input = json.loads(aws.sfn.describe_execution(
            executionArn=aws.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{job.job_id}")["input"])
        assert execution_input["graph"]["s3"]["key"].startswith("graphs/")

        # a task's failure re-raises its own exception type, naming the task
        with pytest.raises(ZeroDivisionError) as raised:
            client.get({"x": 1, "y": (operator.truediv, "x", 0)}, "y")
        assert any("'y'" in note for note in raised.value.__notes__)

        # cancel a running job: the execution stops and the job's keys are gone
        host, port = redis_server.endpoint
        release = "wukong-test:release-cancel"
        slow = client.submit({"slow": (wait_for_key, host, port, redis_server.password, release),
                              "out": (str, "slow")}, "out")
        try:
            deadline = time.monotonic() + 60
            while slow.status().state is not JobState.running:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            cancelled = slow.cancel()
            # on AWS the execution is now ABORTED (state cancelled, see the test below); moto 5.2.5
            # turns a StopExecution during .waitForTaskToken into a States.Runtime error instead,
            # which the workflow's Catch reports as failed
            assert cancelled.state in (JobState.cancelled, JobState.failed)
            # moto records a stop during .waitForTaskToken only when the await state's thread wakes,
            # which may be never here, so the execution's own status is not waited for; what the
            # cancel must do on our side is end the job, so every executor stops at its next check
            assert JobStorage(redis_stores, slow.job_id, ttl=60, n_outputs=1).has_ended()
            # the job's keys are gone, except the lease of the executor still blocked in its task
            left = redis_stores.mds.keys(KeySpace(slow.job_id).prefix + "*")
            assert all(b":lease:" in key for key in left), left
        finally:
            redis_stores.mds.set(release, 1, ex=60)
        # released, that executor sees the job ended, stops, and drops its lease too
        deadline = time.monotonic() + 30
        while redis_stores.mds.keys(KeySpace(slow.job_id).prefix + "*"):
            assert time.monotonic() < deadline, redis_stores.mds.keys(KeySpace(slow.job_id).prefix + "*")
            time.sleep(0.1)

        listed = {j.job_id: j.state for j in client.service.jobs(limit=10)}
        assert listed[job.job_id] is JobState.succeeded and slow.job_id in listed  # see moto's stop above
        with pytest.raises(UnknownJobError):
            client.service.status("no-such-job")
        # an unsigned request never reaches a function: API Gateway's 403, which the client treats as 401
        with pytest.raises(AuthenticationError):
            HttpJobService(url, BearerAuth("not-a-signature")).jobs()
        client.close()


def test_execution_states_map_to_job_states():
    from datetime import datetime, timezone

    from wukong.aws.api.status import Progress, status_from_execution

    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    base = {"name": "job-1", "startDate": start}
    assert status_from_execution({**base, "status": "RUNNING"}).state is JobState.planning
    running = status_from_execution({**base, "status": "RUNNING"}, Progress(True, 3, 7, 0.5))
    assert (running.state, running.tasks_done, running.tasks_total) == (JobState.running, 3, 7)
    aborted = status_from_execution({**base, "status": "ABORTED", "stopDate": start})
    assert aborted.state is JobState.cancelled and aborted.error.kind == "cancelled"
    assert aborted.timings.finished_at == start.timestamp()
    timed_out = status_from_execution({**base, "status": "TIMED_OUT"})
    assert timed_out.state is JobState.failed and timed_out.error.kind == "timeout"
    cause = {"job_id": "job-1", "key": "'b'", "type": "builtins.ZeroDivisionError", "message": "division by zero",
             "traceback": "...", "internal": False, "worker": "w"}
    failed = status_from_execution({**base, "status": "FAILED", "error": "builtins.ZeroDivisionError",
                                    "cause": json.dumps(cause)})
    assert (failed.error.kind, failed.error.key, failed.error.type) == ("task", "'b'", "builtins.ZeroDivisionError")
