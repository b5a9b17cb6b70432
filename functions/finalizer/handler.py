"""Lambda entry point of the finalizer function: the Finalize and CleanUpAfterFailure states; results, report, cleanup.

Thin on purpose: the logic is `wukong.aws.finalizer.finalize`, wrapped in Powertools (docs/aws-runtime.md).
"""

from wukong.aws.finalizer import finalize
from wukong.aws.observability import lambda_handler

handler = lambda_handler("finalizer", finalize)
