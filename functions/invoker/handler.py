"""Lambda entry point of the invoker function: one InvokeLeaves Map iteration; starts a batch of leaf executors.

Thin on purpose: the logic is `wukong.aws.leaf_invoker.invoke_leaves`, wrapped in Powertools (docs/aws-runtime.md).
"""

from wukong.aws.leaf_invoker import invoke_leaves
from wukong.aws.observability import lambda_handler

handler = lambda_handler("invoker", invoke_leaves)
