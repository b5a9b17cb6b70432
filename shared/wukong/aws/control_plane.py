"""The Step Functions side of a job's end: the await state's task token in the MDS, and who sends it.

The waiter Lambda stores the token; the executor that stores the last result (or the first failure)
claims it and sends SendTaskSuccess / SendTaskFailure. Either may come first, so both sides run
one Lua script each that also checks the other's half: the waiter sends the outcome itself when the
job has already finished, and a ``notified`` key (holding the token that was sent) makes the
outcome go out exactly once per token. The outcome is always the job's *first* event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wukong.hooks import ExecutorHooks, JobContext
from wukong.invocation import JobSettings
from wukong.job_events import EndReason, JobEvent
from wukong.keyspace import KeySpace

log = logging.getLogger(__name__)

# KEYS: token hash, notified, events. ARGV: token, ttl. Stores the token; if the job already has its
# first event and this token was not notified yet, claims it and returns that event.
_STORE_TOKEN = """
redis.call('HSET', KEYS[1], 'token', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local first = redis.call('LINDEX', KEYS[3], 0)
if first and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  return first
end
return false
"""

# KEYS: token hash, notified, events. ARGV: ttl. Claims the stored token for the job's first event;
# returns {token, event}, or nothing when no token is stored yet (the waiter will send) or it was sent.
_CLAIM_TOKEN = """
local token = redis.call('HGET', KEYS[1], 'token')
if not token or redis.call('GET', KEYS[2]) == token then return false end
local first = redis.call('LINDEX', KEYS[3], 0)
if not first then return false end
redis.call('SET', KEYS[2], token, 'EX', ARGV[1])
return {token, first}
"""

# KEYS: heartbeat lease, token hash. ARGV: lease seconds. The token, for the one caller per lease.
_HEARTBEAT_LEASE = """
local token = redis.call('HGET', KEYS[2], 'token')
if not token then return false end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return token end
return false
"""

#: Answers that mean the token is already used or gone: the other side sent first, or the state timed out.
STALE_TOKEN_ERRORS = frozenset({"InvalidToken", "TaskTimedOut", "TaskDoesNotExist"})
#: Step Functions' limits on SendTaskFailure.
MAX_ERROR, MAX_CAUSE = 256, 32768


@dataclass(frozen=True)
class ControlPlaneKeys:
    """The AWS control plane's keys of one job, in the MDS next to the job's own (``wk:<job>:``):
    the await state's task token, which token was notified, the lease that lets one executor per
    interval send a heartbeat, and how often Lambda delivered each (start task, request id)."""

    job_id: str

    @property
    def task_token(self) -> str:
        return f"{KeySpace(self.job_id).prefix}task-token"

    @property
    def notified(self) -> str:
        return f"{KeySpace(self.job_id).prefix}notified"

    @property
    def heartbeat_lease(self) -> str:
        return f"{KeySpace(self.job_id).prefix}heartbeat-lease"

    @property
    def lambda_deliveries(self) -> str:
        """Lambda's retries reuse the request id, so deliveries are counted per (start, request id)."""
        return f"{KeySpace(self.job_id).prefix}lambda-deliveries"


def control_plane_keys(job_id: str) -> list[str]:
    """What the job's cleanup deletes besides the job's own keys (``finalize_job(runtime_keys=...)``)."""
    k = ControlPlaneKeys(job_id)
    return [k.task_token, k.notified, k.heartbeat_lease, k.lambda_deliveries]


class TaskTokenStore:
    """The await state's token for one job, in the MDS next to the job's events."""

    def __init__(self, job: JobContext):
        self.job = job
        self.mds = job.mds
        self.control = ControlPlaneKeys(job.job_id)

    def _run(self, source: str, keys: list[str], args: list) -> Any:
        # register_script runs EVALSHA and loads the script only when the server lacks it
        return self.mds.register_script(source)(keys=keys, args=args)

    def store(self, token: str) -> JobEvent | None:
        """Keep ``token``; returns the job's first event if it already finished (send it now)."""
        k = self.control
        first = self._run(_STORE_TOKEN, [k.task_token, k.notified, self.job.events_key], [token, self.job.ttl])
        return None if first is None else JobEvent.from_json(first)

    def claim(self) -> tuple[str, JobEvent] | None:
        """(token, first event) if the job has finished and its token is stored and not yet sent."""
        k = self.control
        claimed = self._run(_CLAIM_TOKEN, [k.task_token, k.notified, self.job.events_key], [self.job.ttl])
        return None if not claimed else (claimed[0].decode(), JobEvent.from_json(claimed[1]))

    def heartbeat_token(self, lease_seconds: int) -> str | None:
        """The token if this caller holds the heartbeat lease for the next ``lease_seconds``."""
        token = self._run(_HEARTBEAT_LEASE, [self.control.heartbeat_lease, self.control.task_token], [lease_seconds])
        return None if token is None else token.decode()


def error_name(event: JobEvent) -> str:
    """The Step Functions error of a failure event: the exception type, e.g. builtins.ZeroDivisionError."""
    return (event.type or "WukongJobFailed")[:MAX_ERROR]


def cause_of(job_id: str, event: JobEvent) -> dict:
    """The failing task and its exception, from a failure event (without the pickled exception); a
    cancel or timeout says so in ``reason``."""
    cause = {"job_id": job_id, "key": event.key, "type": event.type, "message": event.message[:4000],
             "traceback": event.traceback[-8000:], "internal": event.internal, "worker": event.worker}
    if event.reason not in (None, EndReason.FAILED):
        cause["reason"] = event.reason.value
    return cause


def failure_cause(job_id: str, event: JobEvent) -> str:
    """A JSON cause naming the failing task and its exception; carries the pickled exception when it
    fits, so a Python client can re-raise the task's own exception type."""
    cause = cause_of(job_id, event)
    text = json.dumps(cause)
    exception = event.exception
    if exception and len(text) + len(exception) + 20 < MAX_CAUSE:
        text = json.dumps({**cause, "exception": exception})
    return text[:MAX_CAUSE]


def send_outcome(sfn: Any, token: str, job_id: str, event: JobEvent) -> bool:
    """SendTaskSuccess or SendTaskFailure for the job's first event; False if the token was stale."""
    from botocore.exceptions import ClientError

    try:
        if event.is_done:
            sfn.send_task_success(taskToken=token, output=json.dumps({"job_id": job_id, "status": "done"}))
        else:
            sfn.send_task_failure(taskToken=token, error=error_name(event), cause=failure_cause(job_id, event))
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in STALE_TOKEN_ERRORS:
            log.info("job %s: the await state's token was already used or timed out", job_id)
            return False
        raise


def send_heartbeat(sfn: Any, token: str) -> None:
    from botocore.exceptions import ClientError

    try:
        sfn.send_task_heartbeat(taskToken=token)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in STALE_TOKEN_ERRORS:
            raise


class StepFunctionsHooks(ExecutorHooks):
    """Executor hooks on Lambda: X-Ray spans, log keys, the job-end callback, heartbeats, metrics."""

    def __init__(self, obs: Any, sfn_factory: Any, job: JobSettings):
        self.obs = obs
        self.sfn_factory = sfn_factory  # the Step Functions client is made only when it is needed
        self.job = job
        self.span = obs.span if obs.tracing else None

    def task_started(self, key: object) -> None:
        self.obs.logger.append_keys(task_key=repr(key))

    def job_ended(self, job: JobContext) -> None:
        claimed = TaskTokenStore(job).claim()
        if claimed is not None:
            token, event = claimed
            send_outcome(self.sfn_factory(), token, job.job_id, event)
            self.obs.logger.info("sent the job's outcome to Step Functions", extra={"outcome": event.kind.value})

    def progress(self, job: JobContext) -> None:
        if self.job.heartbeat_interval:
            token = TaskTokenStore(job).heartbeat_token(self.job.heartbeat_interval)
            if token is not None:
                send_heartbeat(self.sfn_factory(), token)

    def invocation_done(self, counts: Mapping[str, float]) -> None:
        count = self.obs.count
        count("TasksRun", counts.get("tasks", 0))
        count("ExecutorsInvoked", counts.get("invoked", 0))
        count("KVBytesWritten", counts.get("kv_bytes_written", 0), "Bytes")
        count("KVBytesRead", counts.get("kv_bytes_read", 0), "Bytes")
        count("PayloadBytes", counts.get("payload_bytes", 0), "Bytes")
        count("RedisRoundTrips", counts.get("round_trips", 0))
