"""Lambda entry point of the planner function: the Plan state; schedules and counters to the MDS, leaf batches out.

Thin on purpose: the logic is `wukong.aws.planner.plan`, wrapped in Powertools (docs/aws-runtime.md).
"""

from wukong.aws.planner import plan
from wukong.aws.observability import lambda_handler

handler = lambda_handler("planner", plan)
