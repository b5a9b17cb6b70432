"""The executor Lambda's body: run one invocation with the same Executor the local workers run.

Redis credentials come from the function's own environment, never from the payload; the hooks add
X-Ray spans, the Step Functions callback at the job's end, heartbeats and metrics.
"""

from __future__ import annotations

import threading
from typing import Any

from wukong.aws.control_plane import ControlPlaneKeys, StepFunctionsHooks
from wukong.aws.lambda_invoker import LambdaInvoker, decode_event
from wukong.aws.observability import Observability
from wukong.aws.services import Services, job_config
from wukong.executor import Executor
from wukong.invocation import Invocation
from wukong.storage import RedisStores, StorageSpec, connect


def run_executor(event: dict, obs: Observability, context: Any = None) -> dict:
    invocation = decode_event(event)
    job = invocation.job
    obs.logger.append_keys(job_id=job.job_id, start_task=invocation.start)
    config = job_config()
    with Services(config) as services:
        stores = services.stores(single_connection=True)
        request_id = getattr(context, "aws_request_id", None)
        lease = None
        if request_id:
            attempt = delivery_attempt(stores, invocation, request_id)
            if attempt is None:  # a late duplicate of a delivery that already ran to its end
                obs.logger.info("duplicate delivery of a finished invocation: nothing to do")
                return {"job_id": job.job_id, "start": invocation.start, "duplicate": True}
            lease = DeliveryLease(stores.spec, invocation, request_id)
            if not lease.acquire():  # the same delivery is running right now elsewhere
                obs.logger.info("duplicate delivery of a running invocation: nothing to do")
                return {"job_id": job.job_id, "start": invocation.start, "duplicate": True}
            invocation.attempt = attempt
        function = config.executor_function or getattr(context, "invoked_function_arn", None)
        invoker = LambdaInvoker(function, lambda: services.client("lambda"), max_workers=config.num_lambda_invokers)
        hooks = StepFunctionsHooks(obs, lambda: services.client("stepfunctions"), job)
        executor = Executor(stores, invoker, hooks=hooks, worker_id=request_id or "lambda")
        try:
            executor.handle(invocation)  # task failures end the job in Redis; they are not raised here
            if request_id:
                mark_delivery_done(stores, invocation, request_id)
        finally:
            if lease is not None:
                lease.release()
    return {"job_id": job.job_id, "start": invocation.start, "attempt": invocation.attempt}


def delivery_attempt(stores: RedisStores, inv: Invocation, request_id: str) -> int | None:
    """Which attempt this delivery is, or None for a duplicate of one that already finished.

    Lambda retries a crashed or timed-out executor with the same event and request id; counting
    deliveries per request id makes the retry a later attempt, which re-runs the start task instead
    of finding it claimed by the dead attempt and doing nothing. Lambda may also deliver an event
    twice with one request id: a copy arriving after the first delivery finished is recognized by
    its done mark and skipped (a copy running at the same time cannot be told from a retry, and
    re-runs; results stay correct, see docs/aws-runtime.md)."""
    key = ControlPlaneKeys(inv.job.job_id).lambda_deliveries
    field = f"{inv.start}:{request_id}"
    pipe = stores.mds.pipeline(transaction=True)
    pipe.hincrby(key, field, 1)
    pipe.hexists(key, f"{field}:done")
    pipe.expire(key, inv.job.ttl)
    delivered, done, _ = pipe.execute()
    return None if done else inv.attempt + int(delivered) - 1


def mark_delivery_done(stores: RedisStores, inv: Invocation, request_id: str) -> None:
    """Record that this delivery ran to its end, so a late duplicate of it is skipped."""
    key = ControlPlaneKeys(inv.job.job_id).lambda_deliveries
    # only while the job's keys exist: a job cleaned up meanwhile refuses late copies anyway
    stores.run_script("hset_if_exists", [key], [f"{inv.start}:{request_id}:done", 1])


class DeliveryLease:
    """Held while a delivery runs, renewed by a thread: a copy of the same delivery (same request id)
    arriving meanwhile sees it and does nothing, while a Lambda retry, which comes a minute or more
    after its attempt died (and the renewals with it), finds the lease expired and runs."""

    TTL = 30  # seconds; Lambda's first retry comes after about a minute
    RENEW_EVERY = 10

    def __init__(self, spec: StorageSpec, inv: Invocation, request_id: str):
        self.mds = connect(spec.mds, spec)  # its own connection: the executor's is pinned to its thread
        self.key = f"{ControlPlaneKeys(inv.job.job_id).lambda_deliveries}:lease:{inv.start}:{request_id}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self.mds.set(self.key, 1, nx=True, ex=self.TTL):
            self.mds.close()
            return False
        self._thread = threading.Thread(target=self._renew, name="wukong-delivery-lease", daemon=True)
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.RENEW_EVERY):
            try:
                self.mds.expire(self.key, self.TTL)
            except Exception:  # a missed renewal only risks a duplicate running; never fail the executor
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        try:
            self.mds.delete(self.key)
        finally:
            self.mds.close()
