"""More executions under moto: many leaves over several Map iterations, a graph large enough to go
through S3, and per-job timeouts and heartbeats (the HTTP API is in test_jobs_api.py)."""

from __future__ import annotations

import json
import operator

import numpy as np
import pytest

from wukong.aws.control_plane import ControlPlaneKeys

from task_bodies import wait_for_key
from wukong.aws.submit import fetch_result, submit_job, wait_for
from wukong.errors import JobTimeoutError


pytestmark = pytest.mark.timeout(120)


def _submit(aws, dsk, keys, **kwargs):
    return submit_job(dsk, keys, state_machine_arn=aws.state_machine_arn, bucket="wukong-test-jobs",
                      sfn_client=aws.sfn, s3_client=aws.s3, **kwargs)


def _states_entered(aws, handle) -> list[str]:
    events = aws.sfn.get_execution_history(executionArn=handle.execution_arn)["events"]
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def times_21(y: int, _gate: None) -> int:
    return y * 21


def test_many_leaves_go_out_over_several_map_iterations(aws):
    leaves = [f"leaf-{i}" for i in range(120)]
    dsk = {name: i for i, name in enumerate(leaves)}
    dsk["total"] = (sum, leaves)
    handle = _submit(aws, dsk, "total", config={"min_leaves_per_invoker": 10})
    assert fetch_result(handle, sfn_client=aws.sfn, s3_client=aws.s3, timeout=90) == sum(range(120))
    invoked = aws.router.results["wukong-invoker"]
    assert len(invoked) == 12 and sum(r["invoked"] for r in invoked) == 120  # batches of 10, all started
    assert _states_entered(aws, handle).count("Invoke a batch of leaves") == 12


def test_a_large_graph_travels_through_s3(aws):
    data = np.arange(100_000, dtype=np.float64)  # 800 KB: too big to ride in the execution input
    dsk = {"data": data, "total": (np.sum, "data")}
    handle = _submit(aws, dsk, ["total"])
    execution_input = json.loads(aws.sfn.describe_execution(executionArn=handle.execution_arn)["input"])
    assert execution_input["graph"] == {"s3": {"bucket": "wukong-test-jobs", "key": f"graphs/{handle.job_id}.pkl"}}
    assert fetch_result(handle, sfn_client=aws.sfn, s3_client=aws.s3, timeout=90) == (data.sum(),)


def test_job_timeout_fails_the_execution_and_stops_the_job(aws, redis_server, redis_stores):
    host, port = redis_server.endpoint
    release = "wukong-test:release-timeout"
    dsk = {"slow": (wait_for_key, host, port, redis_server.password, release), "out": (str, "slow")}
    handle = _submit(aws, dsk, "out", config={"job_timeout": 2})
    try:
        described = wait_for(handle, aws.sfn, timeout=60)
        assert described["status"] == "FAILED" and described["error"] == "Wukong.Timeout"
        cause = json.loads(described["cause"])
        assert cause["reason"] == "timeout" and "did not finish within 2 s" in cause["message"]
        assert "requested output never stored: 'out'" in cause["message"]  # names what never ran
        with pytest.raises(JobTimeoutError):
            fetch_result(handle, sfn_client=aws.sfn, s3_client=aws.s3)
    finally:
        redis_stores.mds.set(release, 1, ex=60)  # let the stuck task return; its executor stops quietly


def test_a_job_with_a_heartbeat_takes_the_heartbeat_await_state(aws, redis_server, redis_stores):
    host, port = redis_server.endpoint
    # the task waits for the task token, so the await state is set up before the job can finish
    # (moto loses a callback that arrives before its heartbeat timer starts; AWS does not)
    dsk = {"x": 1, "y": (operator.add, "x", 1)}
    handle_id = "heartbeat-job"
    dsk["gate"] = (wait_for_key, host, port, redis_server.password, ControlPlaneKeys(handle_id).task_token)
    dsk["z"] = (times_21, "y", "gate")
    handle = _submit(aws, dsk, "z", job_id=handle_id, config={"heartbeat_timeout": 30, "job_timeout": 90})
    assert fetch_result(handle, sfn_client=aws.sfn, s3_client=aws.s3, timeout=90) == 42
    entered = _states_entered(aws, handle)
    assert "Await completion with heartbeat" in entered and "Await completion" not in entered
