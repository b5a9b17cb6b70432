"""Lambda entry point of the executorFailed function: the executor's OnFailure destination.

Thin on purpose: the logic is `wukong.aws.executor_failure.fail_job`, wrapped in Powertools (docs/aws-runtime.md).
"""

from wukong.aws.executor_failure import fail_job
from wukong.aws.observability import lambda_handler

handler = lambda_handler("executorFailed", fail_job)
