"""End to end under moto: executions of the deployed state machine (the real ASL file) driving our
real handlers against a real Redis. Success with the right values, a task's failure surfacing in
describe_execution, and the race in which the job finishes before the task token is stored."""

from __future__ import annotations

import base64
import json
import operator
import time

import dask.array as da
import numpy as np
import pytest

from wukong.aws.submit import failure_event, fetch_result, submit_job, wait_for
from wukong.storage import KeySpace

pytestmark = pytest.mark.timeout(120)


def _submit(aws, dsk, keys, **kwargs):
    return submit_job(dsk, keys, state_machine_arn=aws.state_machine_arn, bucket="wukong-test-jobs",
                      sfn_client=aws.sfn, s3_client=aws.s3, **kwargs)


def _job_keys(redis_stores, job_id):
    return redis_stores.mds.keys(KeySpace(job_id).prefix + "*")


def test_tsqr_succeeds_with_the_right_result(aws, redis_stores, redis_server):
    x = da.random.default_rng(7).random((8192, 32), chunks=(512, 32))
    q, r = da.linalg.tsqr(x)
    handle = _submit(aws, r.__dask_graph__(), r.__dask_keys__())
    blocks = fetch_result(handle, sfn_client=aws.sfn, s3_client=aws.s3, timeout=90)
    described = aws.sfn.describe_execution(executionArn=handle.execution_arn)
    assert described["status"] == "SUCCEEDED"
    ((got,),) = blocks  # one 32 x 32 block, in the nesting of r.__dask_keys__()
    expected = np.linalg.qr(x.compute())[1]
    np.testing.assert_allclose(np.abs(got), np.abs(expected), rtol=1e-8, atol=1e-8)  # R is unique up to row signs
    output = json.loads(described["output"])
    assert output["status"] == "succeeded" and output["results"]["key"] == f"results/{handle.job_id}.pkl"
    report = output["report"]
    assert report["tasks_run"] == report["n_tasks"] > 16 and report["n_leaves"] == 16
    assert _job_keys(redis_stores, handle.job_id) == []  # the finalizer deleted every key of the job
    # the Map started every leaf: 16 leaves need one invoker (min_leaves_per_invoker)
    assert sum(r["invoked"] for r in aws.router.results["wukong-invoker"]) == 16
    # executors connect with their own credentials: the Redis password is in no invocation payload
    payloads = [base64.b64decode(event["payload"]) for event in aws.router.async_events]
    assert len(payloads) >= 16 and not any(redis_server.password.encode() in p for p in payloads)


def test_a_raising_task_fails_the_execution_naming_the_task(aws, redis_stores):
    dsk = {"a": 1, "b": (operator.truediv, "a", 0), "c": (operator.add, "b", 1), "d": (operator.add, "a", 2)}
    handle = _submit(aws, dsk, ["c", "d"])
    described = wait_for(handle, aws.sfn, timeout=90)
    assert described["status"] == "FAILED"
    assert described["error"] == "builtins.ZeroDivisionError"
    cause = json.loads(described["cause"])
    assert cause["key"] == repr("b") and cause["job_id"] == handle.job_id
    assert "division by zero" in cause["message"] and "ZeroDivisionError" in cause["traceback"]
    with pytest.raises(ZeroDivisionError) as raised:  # the client re-raises the task's own exception
        fetch_result(handle, sfn_client=aws.sfn, s3_client=aws.s3)
    assert any("'b'" in note for note in raised.value.__notes__)
    assert _job_keys(redis_stores, handle.job_id) == []
    states = [e["type"] for e in aws.sfn.get_execution_history(executionArn=handle.execution_arn)["events"]]
    assert "FailStateEntered" in states


def test_job_finishing_before_the_token_is_stored_still_succeeds(aws, redis_stores):
    events_key = None

    def hold_waiter_until_job_finished(event):
        # the gate runs in moto's state machine thread, before our waiter handler: the last result
        # is stored (and its executor found no token) before the token reaches the MDS
        nonlocal events_key
        events_key = KeySpace(event["job_id"]).events
        deadline = time.monotonic() + 60
        while not redis_stores.mds.llen(events_key):
            assert time.monotonic() < deadline, "the job never finished"
            time.sleep(0.02)

    aws.router.before["wukong-waiter"] = hold_waiter_until_job_finished
    dsk = {"x": 20, "y": (operator.mul, "x", 2), "z": (operator.add, "y", 2)}
    handle = _submit(aws, dsk, "z")
    assert fetch_result(handle, sfn_client=aws.sfn, s3_client=aws.s3, timeout=90) == 42
    assert aws.router.results["wukong-waiter"] == [{"job_id": handle.job_id, "notified_by_waiter": True}]
    assert aws.sfn.describe_execution(executionArn=handle.execution_arn)["status"] == "SUCCEEDED"


def test_a_graph_the_planner_rejects_fails_with_its_error(aws):
    handle = _submit(aws, {"a": 1}, ["missing"])
    described = wait_for(handle, aws.sfn, timeout=60)
    assert described["status"] == "FAILED" and described["error"] == "MissingKeyError"  # a KeyError subclass
    assert "missing" in json.loads(described["cause"])["message"]
    assert failure_event(described).internal
