"""Lambda entry point of the waiter function: the AwaitCompletion state; keeps the task token in the MDS.

Thin on purpose: the logic is `wukong.aws.waiter.store_token`, wrapped in Powertools (docs/aws-runtime.md).
"""

from wukong.aws.waiter import store_token
from wukong.aws.observability import lambda_handler

handler = lambda_handler("waiter", store_token)
