"""The task-token handshake against a real Redis: whichever of the waiter and the finishing
executor comes second sends the job's first event, exactly once per token; heartbeat leases."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from wukong.aws.control_plane import (ControlPlaneKeys, StepFunctionsHooks, TaskTokenStore, cause_of, error_name,
                                      failure_cause)
from wukong.aws.observability import Observability
from wukong.job_events import JobEvent
from wukong.invocation import JobSettings
from wukong.storage import JobStorage


@pytest.fixture
def storage(redis_stores):
    job = JobStorage(redis_stores, f"tok{uuid.uuid4().hex[:8]}", ttl=60, n_outputs=1)
    yield job
    job.cleanup(n_tasks=1, n_paths=1)


def test_token_stored_first_then_the_finishing_executor_claims_it_once(storage):
    tokens = TaskTokenStore(storage.context)
    assert tokens.store("token-1") is None  # the job is still running: nothing to send yet
    assert tokens.claim() is None  # not finished: nothing to claim
    assert storage.store_result(0, b"value")  # the job's last (only) result
    assert tokens.claim() == ("token-1", JobEvent.done())
    assert tokens.claim() is None  # a second finisher (a retried executor) sends nothing


def test_job_finished_first_then_the_waiter_sends(storage):
    tokens = TaskTokenStore(storage.context)
    assert storage.store_result(0, b"value")
    assert tokens.claim() is None  # no token yet: the executor leaves it to the waiter
    assert tokens.store("token-1") == JobEvent.done()
    assert tokens.claim() is None  # already sent by the waiter
    # a retried await state brings a new token: its outcome is still owed, once
    assert tokens.store("token-2") == JobEvent.done()
    assert tokens.claim() is None


def test_the_outcome_is_always_the_first_event(storage):
    tokens = TaskTokenStore(storage.context)
    tokens.store("token-1")
    event = JobEvent.task_failed("b", ZeroDivisionError("division by zero"))
    assert storage.end_job(event)
    storage.store_result(0, b"value")  # a result that lands after the failure does not win
    token, first = tokens.claim()
    assert token == "token-1" and first == event and first.key == repr("b")


def test_one_heartbeat_per_lease(storage):
    tokens = TaskTokenStore(storage.context)
    assert tokens.heartbeat_token(30) is None  # no token stored yet
    tokens.store("token-1")
    assert tokens.heartbeat_token(30) == "token-1"
    assert tokens.heartbeat_token(30) is None  # another executor inside the same lease stays quiet


def test_failure_cause_names_the_task_and_fits_step_functions_limits():
    event = JobEvent.task_failed(("x", 3), ValueError("bad " * 3000))
    cause = json.loads(failure_cause("job1", event))
    assert cause["key"] == repr(("x", 3)) and cause["type"] == "builtins.ValueError"
    assert cause["exception"]  # small enough to carry the pickled exception
    assert cause_of("job1", event).keys() <= cause.keys()
    assert error_name(event) == "builtins.ValueError"
    huge = dataclasses.replace(event, exception="A" * 40000)
    assert len(failure_cause("job1", huge)) <= 32768 and "exception" not in json.loads(failure_cause("job1", huge))


def test_hooks_send_no_heartbeat_unless_the_job_asks_for_one(storage, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    sent = []
    tokens = TaskTokenStore(storage.context)
    tokens.store("token-1")
    quiet = StepFunctionsHooks(Observability.create("test"), lambda: sent.append("client"), JobSettings(
        job_id=storage.job_id, storage=storage.stores.spec, ttl=60, n_outputs=1, payload_limit=4096,
        big_task_threshold=1024))
    assert quiet.span is None  # tracing off: no span bookkeeping at all
    quiet.progress(storage.context)
    assert not storage.stores.mds.exists(ControlPlaneKeys(storage.job_id).heartbeat_lease) and sent == []
