"""The executor's OnFailure destination under moto and a real Redis: Lambda's record of an executor it
gave up on fails the job within seconds, naming the task and the reason; decoding the record imports
no task code; and a Lambda retry of a dead executor really re-runs its start task."""

from __future__ import annotations

import base64
import json
import pickle
import sys
import time
import types
import uuid
from collections import OrderedDict
from dataclasses import replace

import pytest

from wukong.aws.control_plane import ControlPlaneKeys
import redis

from aws_harness import LambdaContext, load_handler
from wukong.aws.executor_failure import RecordError, decode_record, failure_error
from task_bodies import wait_for_key
from wukong.aws.submit import submit_job, wait_for
from wukong.config import make_config
from wukong.errors import ExecutorCrashedError, FunctionTimeoutError
from wukong.graph import normalize_graph
from wukong.planning import plan_job
from wukong.job_events import JobEvent
from wukong.schedule import TaskRecord
from wukong.serialization import dumps
from wukong.storage import JobStorage
from wukong.task_keys import peek_key, task_key

pytestmark = pytest.mark.timeout(120)

TIMED_OUT = {"errorType": "Sandbox.Timedout",
             "errorMessage": "RequestId: 5b1f Error: Task timed out after 900.00 seconds"}
KILLED = {"errorType": "Runtime.ExitError",
          "errorMessage": "RequestId: 5b1f Error: Runtime exited with error: signal: killed"}


class SimulatedCrash(BaseException):
    """Escapes the executor's error handling, as a killed process would: Lambda then retries."""


def crash_once(host: str, port: int, password: str, flag: str) -> int:
    client = redis.Redis(host=host, port=port, password=password)
    first = client.set(flag, 1, nx=True, ex=60)
    client.close()
    if first:
        raise SimulatedCrash("the first attempt dies")
    return 42


def destination_record(executor_event: dict, response: dict, attempts: int = 3,
                       condition: str = "RetriesExhausted") -> dict:
    """What Lambda sends an OnFailure destination after the executor's last attempt."""
    return {
        "version": "1.0", "timestamp": "2026-11-29T08:00:00.000Z",
        "requestContext": {"requestId": str(uuid.uuid4()), "condition": condition,
                           "approximateInvokeCount": attempts,
                           "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:wukong-executor:$LATEST"},
        "requestPayload": executor_event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": response,
    }


def planned(redis_stores, dsk, keys):
    job = plan_job(normalize_graph(dsk, keys), redis_stores, make_config(None, job_ttl=120),
                   spec=replace(redis_stores.spec, password=None))
    storage = JobStorage(redis_stores, job.settings.job_id, job.settings.ttl, job.settings.n_outputs)
    return job, storage


def event_of(payload: bytes) -> dict:
    return {"payload": base64.b64encode(payload).decode()}


# --- decoding the record ------------------------------------------------------------------------

def test_decoding_a_record_names_the_start_task_from_the_mds_or_the_payload(redis_stores):
    job, storage = planned(redis_stores, {"a": 1, ("b", 0): (sum, ["a", "a"])}, [("b", 0)])
    try:
        (payload,) = job.leaf_payloads()
        failed = decode_record(destination_record(event_of(payload), TIMED_OUT))
        inv = failed.invocation
        assert (inv.job.job_id, inv.start, failed.attempts, failed.condition) == (
            job.settings.job_id, job.plan.paths[0].leaf, 3, "RetriesExhausted")
        assert failed.timed_out
        assert task_key(inv, storage) == repr("a")  # read from the path record in the MDS
        storage.stores.mds.delete(storage.keys.path(inv.start_path))
        assert task_key(inv, storage) == repr("a")  # the path sent along, once the MDS lost it
        assert task_key(replace(inv, path_blob=None), storage) == f"<task id {inv.start}>"

        error = failure_error(failed, repr("a"))
        assert isinstance(error, FunctionTimeoutError) and "'a' timed out on each of its 3 attempts" in str(error)
        crashed = failure_error(decode_record(destination_record(event_of(payload), KILLED, attempts=1)), "'a'")
        assert type(crashed) is ExecutorCrashedError
        assert "signal: killed" in str(crashed) and "on its only attempt" in str(crashed)
        aged = failure_error(decode_record(destination_record(event_of(payload), {}, attempts=0,
                                                              condition="EventAgeExceeded")), "'a'")
        assert type(aged) is ExecutorCrashedError and "was never run" in str(aged) and "attempt" not in str(aged)
    finally:
        storage.cleanup(job.plan.n_tasks, len(job.plan.paths))


def test_a_record_that_is_not_an_executor_invocation_is_refused(redis_stores):
    job, storage = planned(redis_stores, {"a": 1}, ["a"])
    try:
        (payload,) = job.leaf_payloads()
        with pytest.raises(RecordError, match="not an executor event"):
            decode_record(destination_record({"ORDER_IDS": [1]}, KILLED))
        # an envelope may hold only Wukong's own plain classes: nothing else is even imported
        foreign = replace(pickle.loads(payload), inline_values=OrderedDict(x=b"1"))
        with pytest.raises(RecordError, match="collections.OrderedDict is not allowed"):
            decode_record(destination_record(event_of(pickle.dumps(foreign)), KILLED))
    finally:
        storage.cleanup(job.plan.n_tasks, len(job.plan.paths))


def test_peeking_a_task_key_never_imports_the_task_code(monkeypatch):
    gone = types.ModuleType("wukong_test_module_that_is_gone")
    exec("def work(x):\n    return x\n", gone.__dict__)
    monkeypatch.setitem(sys.modules, gone.__name__, gone)
    from dask._task_spec import Task

    record = TaskRecord(tid=7, key=("chunk", 3), node=Task(("chunk", 3), gone.work, 1), deps=(),
                        dependents=(), become=None, is_output=True, path=0)
    blob = dumps({7: record})
    monkeypatch.delitem(sys.modules, gone.__name__)
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(blob)  # what a plain unpickle would have to import
    assert peek_key(blob, 7) == ("chunk", 3)
    assert gone.__name__ not in sys.modules


# --- end to end ---------------------------------------------------------------------------------

def test_an_executor_lambda_gave_up_on_fails_the_execution_naming_the_task(aws, redis_server, redis_stores):
    host, port = redis_server.endpoint
    release = f"wukong-test:release-{uuid.uuid4().hex[:8]}"
    dsk = {"slow": (wait_for_key, host, port, redis_server.password, release), "out": (str, "slow")}
    handle = submit_job(dsk, "out", state_machine_arn=aws.state_machine_arn, bucket="wukong-test-jobs",
                        sfn_client=aws.sfn, s3_client=aws.s3, config={"job_timeout": 110})
    try:
        # the leaf executor is running its stuck task and the await state holds its token
        deadline = time.monotonic() + 60
        while not (aws.router.async_events and redis_stores.mds.exists(ControlPlaneKeys(handle.job_id).task_token)):
            assert time.monotonic() < deadline, "the job never reached its await state"
            time.sleep(0.05)
        (executor_event,) = aws.router.async_events
        # what Lambda sends after the executor timed out on all three attempts
        response = aws.lambda_.invoke(FunctionName="wukong-executorFailed", InvocationType="RequestResponse",
                                      Payload=json.dumps(destination_record(executor_event, TIMED_OUT)))
        assert "FunctionError" not in response, response["Payload"].read()
        assert json.loads(response["Payload"].read())["failed"] is True

        described = wait_for(handle, aws.sfn, timeout=60)
        assert described["status"] == "FAILED"
        assert described["error"] == "wukong.errors.FunctionTimeoutError"
        cause = json.loads(described["cause"])
        assert cause["key"] == repr("slow") and cause["job_id"] == handle.job_id
        assert "timed out" in cause["message"] and "Task timed out after 900.00 seconds" in cause["message"]

        # a second record (a duplicate delivery) for a job already failed and cleaned up changes nothing
        again = aws.lambda_.invoke(FunctionName="wukong-executorFailed", InvocationType="RequestResponse",
                                   Payload=json.dumps(destination_record(executor_event, KILLED)))
        assert json.loads(again["Payload"].read())["failed"] is False
    finally:
        redis_stores.mds.set(release, 1, ex=60)  # let the stuck task return; its executor stops quietly


def test_a_lambda_retry_of_a_dead_executor_reruns_its_start_task(aws, redis_server, redis_stores):
    host, port = redis_server.endpoint
    flag = f"wukong-test:crashed-{uuid.uuid4().hex[:8]}"
    job, storage = planned(redis_stores, {"x": (crash_once, host, port, redis_server.password, flag)}, ["x"])
    try:
        (payload,) = job.leaf_payloads()
        executor = load_handler("functions/executor/handler.handler")
        # Lambda retries an asynchronous invoke with the same event and the same request id
        context = LambdaContext("wukong-executor", aws.function_arns["executor"])
        with pytest.raises(SimulatedCrash):
            executor(event_of(payload), context)
        assert storage.first_event() is None  # the dead attempt ended nothing
        result = executor(event_of(payload), context)
        assert result["attempt"] == 1
        assert storage.first_event() == JobEvent.done()
        assert pickle.loads(storage.results([0])[0]) == 42
        # a late duplicate of the delivery that finished (same request id) runs nothing
        assert executor(event_of(payload), context).get("duplicate") is True
        # a new invoke of the same start task (another request id) is still a duplicate, not a retry
        assert executor(event_of(payload), LambdaContext("wukong-executor", aws.function_arns["executor"]))[
            "attempt"] == 0
    finally:
        storage.cleanup(job.plan.n_tasks, len(job.plan.paths))


def test_a_copy_of_a_delivery_that_is_still_running_does_nothing(aws, redis_stores):
    job, storage = planned(redis_stores, {"x": (max, 40, 42)}, ["x"])
    try:
        (payload,) = job.leaf_payloads()
        executor = load_handler("functions/executor/handler.handler")
        context = LambdaContext("wukong-executor", aws.function_arns["executor"])
        lease = f"{ControlPlaneKeys(job.settings.job_id).lambda_deliveries}:lease:{job.record.leaves[0]}:{context.aws_request_id}"
        redis_stores.mds.set(lease, 1, ex=30)  # the first delivery of this request is running elsewhere
        assert executor(event_of(payload), context).get("duplicate") is True
        assert storage.first_event() is None  # the copy ran nothing
        redis_stores.mds.delete(lease)  # that delivery died (its renewals stopped); Lambda retries it
        assert executor(event_of(payload), context)["attempt"] == 1
        assert storage.first_event() == JobEvent.done()
        assert not redis_stores.mds.exists(lease)  # released at the end
    finally:
        storage.cleanup(job.plan.n_tasks, len(job.plan.paths))
