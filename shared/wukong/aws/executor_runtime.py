"""The executor Lambda's body: run one invocation with the same Executor the local workers run.

Redis credentials come from the function's own environment, never from the payload; the hooks add
X-Ray spans, the Step Functions callback at the job's end, heartbeats and metrics.
"""

from __future__ import annotations

from typing import Any

from wukong.aws.control_plane import StepFunctionsHooks
from wukong.aws.lambda_invoker import LambdaInvoker, decode_event
from wukong.aws.observability import Observability
from wukong.aws.services import Services, job_config
from wukong.executor import Executor
from wukong.invocation import Invocation
from wukong.storage import KeySpace, RedisStores


def run_executor(event: dict, obs: Observability, context: Any = None) -> dict:
    invocation = decode_event(event)
    job = invocation.job
    obs.logger.append_keys(job_id=job.job_id, start_task=invocation.start)
    config = job_config()
    with Services(config) as services:
        stores = services.stores(single_connection=True)
        request_id = getattr(context, "aws_request_id", None)
        if request_id:
            invocation.attempt = delivery_attempt(stores, invocation, request_id)
        function = config.executor_function or getattr(context, "invoked_function_arn", None)
        invoker = LambdaInvoker(function, lambda: services.client("lambda"), max_workers=config.num_lambda_invokers)
        hooks = StepFunctionsHooks(obs, lambda: services.client("stepfunctions"), job)
        executor = Executor(stores, invoker, hooks=hooks, worker_id=request_id or "lambda")
        executor.handle(invocation)  # task failures end the job in Redis; they are not raised here
    return {"job_id": job.job_id, "start": invocation.start, "attempt": invocation.attempt}


def delivery_attempt(stores: RedisStores, inv: Invocation, request_id: str) -> int:
    """Which attempt this delivery is. Lambda retries a crashed or timed-out executor with the same
    event and request id; counting deliveries per request id makes the retry a later attempt, which
    re-runs the start task instead of finding it claimed by the dead attempt and doing nothing."""
    key = KeySpace(inv.job.job_id).lambda_deliveries
    pipe = stores.mds.pipeline(transaction=True)
    pipe.hincrby(key, f"{inv.start}:{request_id}", 1)
    pipe.expire(key, inv.job.ttl)
    delivered = pipe.execute()[0]
    return inv.attempt + int(delivered) - 1
