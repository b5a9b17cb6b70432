"""Lambda entry point of the submit function: POST /uploads and POST /jobs through API Gateway.

Thin on purpose: the logic is `wukong.aws.api.intake.submit_api`, wrapped in Powertools (docs/aws-runtime.md).
"""

from wukong.aws.api.intake import submit_api
from wukong.aws.observability import lambda_handler

handler = lambda_handler("submit", submit_api)
