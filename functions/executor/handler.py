"""AWS Lambda entry point of one Wukong executor: unpickle the Invocation, run it, let it invoke more.

PLACEHOLDER for the AWS issue: the handler itself is real (it runs the same
:class:`wukong.executor.Executor` the local worker processes run), but nothing here is deployed
or tested on AWS yet; see the TODOs. The event is ``{"payload": "<base64 of a pickled Invocation>"}``.
Unpickling runs code, so only the job's own functions may invoke this one (IAM, not this file).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from typing import Any

from wukong.executor import Executor
from wukong.invocation import Invocation, Invoker
from wukong.serialization import loads
from wukong.storage import RedisStores

#: Environment variable naming the executor function; by default an executor invokes itself.
ENV_EXECUTOR_FUNCTION = "WUKONG_EXECUTOR_FUNCTION"


class LambdaInvoker(Invoker):
    """Asynchronous invoke (``InvocationType="Event"``) of the executor function, one per payload.

    TODO(AWS issue): move to shared/wukong/aws/, hand fan-outs of max_task_fanout or more to the
    KV proxy, and account for base64 growing the payload by 4/3 against the 1 MB async limit.
    """

    def __init__(self, function_name: str, lambda_client: Any = None):
        import boto3  # only on AWS: the local path never needs boto3

        self.function_name = function_name
        self.client = lambda_client or boto3.client("lambda")

    def invoke(self, payloads: Sequence[bytes]) -> None:
        for data in payloads:
            body = json.dumps({"payload": base64.b64encode(data).decode("ascii")})
            self.client.invoke(FunctionName=self.function_name, InvocationType="Event", Payload=body)


def decode_event(event: dict) -> Invocation:
    """The Invocation carried by an executor event."""
    return loads(base64.b64decode(event["payload"]))


def handler(event: dict, context: Any, invoker: Invoker | None = None) -> dict:
    """Run one invocation to its end. Task failures end the job in Redis; they are not raised here.

    Everything is built per invocation, so nothing of one job survives into the next on a warm
    Lambda. TODO(AWS issue): reuse Redis connections across warm invocations explicitly (keyed by
    StorageSpec), add Powertools Logger/Tracer/Metrics with the job id and task key.
    """
    invocation = decode_event(event)
    if invoker is None:
        name = os.environ.get(ENV_EXECUTOR_FUNCTION) or context.invoked_function_arn
        invoker = LambdaInvoker(name)
    stores = RedisStores(invocation.job.storage)
    try:
        Executor(stores, invoker, worker_id=getattr(context, "aws_request_id", None) or f"pid{os.getpid()}").handle(
            invocation
        )
    finally:
        stores.close()
    return {"job_id": invocation.job.job_id, "start": invocation.start}
