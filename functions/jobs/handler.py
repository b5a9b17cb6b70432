"""Lambda entry point of the jobs function: GET /jobs, GET /jobs/{id}, GET /jobs/{id}/result, DELETE /jobs/{id}.

Thin on purpose: the logic is `wukong.aws.api.jobs.jobs_api`, wrapped in Powertools (docs/aws-runtime.md).
"""

from wukong.aws.api.jobs import jobs_api
from wukong.aws.observability import lambda_handler

handler = lambda_handler("jobs", jobs_api)
