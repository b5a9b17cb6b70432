"""Lambda entry point of the status function: GET /jobs/{id} through API Gateway; the job's status and progress.

Thin on purpose: the logic is `wukong.aws.status.job_status`, wrapped in Powertools (docs/aws-runtime.md).
"""

from wukong.aws.status import job_status
from wukong.aws.observability import lambda_handler

handler = lambda_handler("status", job_status)
