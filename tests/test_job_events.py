"""The job event type: built in one place, the same wire form as before, parsed back exactly, and
re-raised as the task's own exception (or Wukong's error for a cancel, a timeout, an internal fault)."""

from __future__ import annotations

import json

import pytest

from wukong.errors import JobFailedError, JobTimeoutError, MemoryLimitError, RemoteTaskError
from wukong.job_events import EndReason, EventKind, JobEvent, raise_job_error


def test_the_done_event_is_the_one_line_wire_form_executors_and_clients_always_used():
    assert JobEvent.done().to_json() == json.dumps({"kind": "done"})
    assert JobEvent.from_json(b'{"kind": "done"}').is_done


def test_a_task_failure_round_trips_and_re_raises_as_its_own_type_naming_the_task():
    event = JobEvent.task_failed(("x", 3), ZeroDivisionError("division by zero"), worker="pid7")
    wire = event.to_dict()
    assert wire["kind"] == "error" and wire["reason"] == "failed" and wire["key"] == repr(("x", 3))
    assert wire["type"] == "builtins.ZeroDivisionError" and "exception" in wire and "internal" not in wire
    assert JobEvent.from_json(event.to_json()) == event
    with pytest.raises(ZeroDivisionError) as raised:
        raise_job_error(event)
    assert any("('x', 3)" in note and "pid7" in note for note in raised.value.__notes__)


def test_an_error_without_a_reason_is_a_failure_and_unknown_fields_are_ignored():
    event = JobEvent.from_dict({"kind": "error", "key": "'k'", "type": "mod.Gone", "message": "m", "job_id": "j1"})
    assert (event.kind, event.reason, event.status) == (EventKind.ERROR, EndReason.FAILED, "failed")
    with pytest.raises(RemoteTaskError, match="task 'k' raised mod.Gone: m"):  # no pickle: named, not lost
        raise_job_error(event)


@pytest.mark.parametrize("event, raised, status", [
    (JobEvent.cancelled("job j was cancelled"), JobFailedError, "cancelled"),
    (JobEvent.timed_out("job j did not finish"), JobTimeoutError, "timed out"),
])
def test_cancels_and_timeouts_raise_wukongs_errors_with_their_message(event, raised, status):
    assert JobEvent.from_dict(event.to_dict()) == event and event.status == status
    with pytest.raises(raised, match=event.message):
        raise_job_error(event)


def test_wukongs_own_error_is_rebuilt_from_its_name_when_its_pickle_did_not_travel():
    event = JobEvent(EventKind.ERROR, EndReason.FAILED, key="'t'", type="wukong.errors.MemoryLimitError",
                     message="over lambda_memory_mb")
    with pytest.raises(MemoryLimitError, match="over lambda_memory_mb"):
        raise_job_error(event)


def test_an_internal_failure_says_wukong_failed_with_the_remote_traceback():
    event = JobEvent.task_failed("<task id 3>", RuntimeError("boom"), internal=True)
    with pytest.raises(JobFailedError, match=r"Wukong failed while running task '<task id 3>': builtins.RuntimeError: boom"):
        raise_job_error(event)


def test_an_unpicklable_exception_still_travels_by_name_and_message():
    class Local(Exception):  # a class defined in a function pickles by value with cloudpickle...
        def __reduce__(self):
            raise TypeError("no")  # ...unless it refuses
    event = JobEvent.task_failed("t", Local("kept"))
    assert event.exception is None and event.message == "kept"
    with pytest.raises(RemoteTaskError, match="kept"):
        raise_job_error(event)
