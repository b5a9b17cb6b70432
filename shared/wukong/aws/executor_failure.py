"""The executor's OnFailure destination: when Lambda gives up on an executor, the job fails now.

Lambda retries a failed asynchronous executor invoke (crash, out of memory, function timeout), then
sends this function its invocation record. We end the job with a failure event naming the task and
the reason, and send the await state's SendTaskFailure, as a failing executor would have.

Trust boundary: only the executor function's EventInvokeConfig sends here (Lambda, with the executor's
role), so ``requestPayload`` is our own executor event. Still nothing in it imports code: the envelope
is unpickled against an allow-list, and the task key is read with every class outside the schedule's
own records stubbed out, so a task's functions are never loaded.
"""

from __future__ import annotations

import base64
import io
import pickle
from dataclasses import dataclass
from typing import Any

from wukong.aws.control_plane import StepFunctionsHooks
from wukong.aws.observability import Observability
from wukong.aws.services import Services, check_job_id, job_config
from wukong.errors import ExecutorCrashedError, FunctionTimeoutError
from wukong.job_events import JobEvent
from wukong.invocation import Invocation
from wukong.planning import load_job
from wukong.task_keys import task_key

#: Classes an executor envelope holds (see wukong.invocation); anything else is refused.
ENVELOPE_CLASSES = {
    ("wukong.invocation", "Invocation"),
    ("wukong.invocation", "JobSettings"),
    ("wukong.redis_connection", "StorageSpec"),
    ("wukong.storage", "StorageSpec"),  # as pickled before redis_connection existed: payloads in flight
}


class RecordError(ValueError):
    """The destination record is not an executor invocation record we can act on."""


@dataclass(frozen=True)
class FailedInvocation:
    """What Lambda's record says about the executor invocation it gave up on."""

    invocation: Invocation
    condition: str  # RetriesExhausted or EventAgeExceeded
    attempts: int  # approximateInvokeCount: how many times Lambda ran it
    error_type: str
    error_message: str

    @property
    def timed_out(self) -> bool:
        return self.error_type == "Sandbox.Timedout" or "timed out after" in self.error_message.lower()

    def reason(self) -> str:
        if self.condition == "EventAgeExceeded":
            return "was never run: it waited past the maximum event age (throttled or out of concurrency)"
        what = f"{self.error_type}: {self.error_message}" if self.error_type else self.error_message
        return f"failed ({what or 'no error reported'})"


def decode_record(record: dict) -> FailedInvocation:
    """The failed invocation in a Lambda destination record; RecordError if it is not one of ours."""
    context = record.get("requestContext") or {}
    payload = record.get("requestPayload")
    if not isinstance(payload, dict) or not isinstance(payload.get("payload"), str):
        raise RecordError("the record's requestPayload is not an executor event (a Lambda may have "
                          "dropped an oversized payload)")
    try:
        inv = _Envelope(io.BytesIO(base64.b64decode(payload["payload"], validate=True))).load()
    except (ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise RecordError(f"the executor event does not decode: {exc}") from exc
    if not isinstance(inv, Invocation):
        raise RecordError(f"the executor event holds a {type(inv).__name__}, not an Invocation")
    check_job_id(inv.job.job_id)
    response = record.get("responsePayload")
    response = response if isinstance(response, dict) else {}
    return FailedInvocation(
        invocation=inv, condition=str(context.get("condition") or "RetriesExhausted"),
        attempts=int(context.get("approximateInvokeCount") or 0),
        error_type=str(response.get("errorType") or ""), error_message=str(response.get("errorMessage") or ""),
    )


class _Envelope(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ENVELOPE_CLASSES:
            raise pickle.UnpicklingError(f"class {module}.{name} is not allowed in an executor envelope")
        return super().find_class(module, name)


def failure_error(failed: FailedInvocation, key: str) -> ExecutorCrashedError:
    """The exception the job fails with, naming the task, the reason and the attempts."""
    attempts = (f" on each of its {failed.attempts} attempts" if failed.attempts > 1
                else " on its only attempt" if failed.attempts == 1 else "")
    if failed.timed_out:
        return FunctionTimeoutError(
            f"the executor running task {key} timed out{attempts} ({failed.error_message.strip()}); "
            f"Lambda gave up ({failed.condition}). Raise executorTimeout (Lambda allows up to 900 s) "
            f"or split the task into smaller ones.")
    return ExecutorCrashedError(
        f"the executor running task {key} {failed.reason()}{attempts}; Lambda gave up "
        f"({failed.condition}). A task that exhausts memory or kills its process does this: raise "
        f"executorMemory or run the task alone to see why.")


def fail_job(record: dict, obs: Observability, context: Any = None) -> dict:
    """Handle one destination record: end the job as failed and tell Step Functions, once."""
    failed = decode_record(record)
    inv = failed.invocation
    job_id = inv.job.job_id
    obs.logger.append_keys(job_id=job_id, start_task=inv.start, condition=failed.condition)
    with Services(job_config()) as services:
        try:
            _, storage = load_job(services.stores(), job_id)
        except LookupError:  # finalized and cleaned up already: nothing left to fail
            obs.logger.info("the job's record is gone; it has already ended")
            return {"job_id": job_id, "failed": False}
        key = task_key(inv, storage)
        obs.logger.append_keys(task_key=key)
        first = storage.end_job(JobEvent.task_failed(None, failure_error(failed, key), shown_key=key))
        # the same callback a failing executor sends: claims the token only if it is stored and unsent
        StepFunctionsHooks(obs, lambda: services.client("stepfunctions"), inv.job).job_ended(storage.context)
    obs.count("JobsFailed", int(first))
    obs.logger.warning("failed the job: Lambda gave up on an executor",
                       extra={"reason": failed.reason(), "attempts": failed.attempts})
    return {"job_id": job_id, "failed": first, "key": key, "timed_out": failed.timed_out}
