"""AWS Lambda entry points of the job's first steps: ``plan`` and ``invoke_batch``.

PLACEHOLDER, NOT YET DEPLOYABLE: both raise NotImplementedError until the AWS issue. The
contract they will follow is written down here so that statemachine/wukong.asl.json and
serverless.yml can refer to it. Step Functions state stays under 256 KB: only ids and keys
travel between states, never task data.
"""

from __future__ import annotations

from typing import Any

NOT_YET = "the AWS deployment lands with the AWS issue; use wukong.LocalCluster for now"


def plan(event: dict, context: Any) -> dict:
    """Plan state. In: ``{"graph": {"s3_bucket", "s3_key"}, "keys": [...], "settings": {...}}``.

    TODO(AWS issue): load the cloudpickled graph from S3, normalize it, run
    ``wukong.job.plan_job`` against the MDS (schedules + counters in a few round trips), store the
    leaf payloads in the MDS, and return
    ``{"job_id", "n_tasks", "batches": [[first_leaf, last_leaf], ...]}`` with batches sized so
    the Map state's 40 concurrent iterations cover every leaf.
    """
    raise NotImplementedError(NOT_YET)


def invoke_batch(event: dict, context: Any) -> dict:
    """One Map iteration. In: ``{"job_id", "batch": [first_leaf, last_leaf]}``.

    TODO(AWS issue): read that range of leaf payloads from the MDS and invoke one executor
    Lambda per leaf, asynchronously (``functions/executor/handler.LambdaInvoker``), in parallel
    threads (``num_lambda_invokers``); return ``{"job_id", "invoked": n}``.
    """
    raise NotImplementedError(NOT_YET)
