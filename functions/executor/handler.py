"""Lambda entry point of the executor function: runs one executor invocation (asynchronous invokes only).

Thin on purpose: the logic is `wukong.aws.executor_runtime.run_executor`, wrapped in Powertools (docs/aws-runtime.md).
"""

from wukong.aws.executor_runtime import run_executor
from wukong.aws.observability import lambda_handler

handler = lambda_handler("executor", run_executor)
