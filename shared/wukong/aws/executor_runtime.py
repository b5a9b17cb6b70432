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


def run_executor(event: dict, obs: Observability, context: Any = None) -> dict:
    invocation = decode_event(event)
    job = invocation.job
    obs.logger.append_keys(job_id=job.job_id, start_task=invocation.start)
    config = job_config()
    with Services(config) as services:
        function = config.executor_function or getattr(context, "invoked_function_arn", None)
        invoker = LambdaInvoker(function, lambda: services.client("lambda"), max_workers=config.num_lambda_invokers)
        hooks = StepFunctionsHooks(obs, lambda: services.client("stepfunctions"), job)
        executor = Executor(services.stores(single_connection=True), invoker, hooks=hooks,
                            worker_id=getattr(context, "aws_request_id", "lambda"))
        executor.handle(invocation)  # task failures end the job in Redis; they are not raised here
    return {"job_id": job.job_id, "start": invocation.start}
