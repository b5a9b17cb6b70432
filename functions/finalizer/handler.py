"""AWS Lambda entry points of the job's last steps: ``await_completion`` and ``handler`` (finalize).

PLACEHOLDER, NOT YET DEPLOYABLE: both raise NotImplementedError until the AWS issue. The
contract is written down so that statemachine/wukong.asl.json and serverless.yml can refer to it.
"""

from __future__ import annotations

from typing import Any

NOT_YET = "the AWS deployment lands with the AWS issue; use wukong.LocalCluster for now"


def await_completion(event: dict, context: Any) -> None:
    """Called through ``lambda:invoke.waitForTaskToken``. In: ``{"job_id", "task_token"}``.

    TODO(AWS issue): store the task token in the MDS. Whoever finishes the last sink task (or
    the first failure) sends SendTaskSuccess / SendTaskFailure with it. Race: the job may have
    ended before the token was stored, so after storing it, check the job's end state and send
    the outcome from here if it is already known (exactly once, guarded by SET NX in Redis).
    """
    raise NotImplementedError(NOT_YET)


def handler(event: dict, context: Any) -> dict:
    """Finalize state, also run on the failure path.

    In: ``{"job_id", "failed": false}`` after success; ``{"input": <the whole state, with
    "error" and, unless Plan failed, "plan">, "failed": true}`` on the failure path.

    TODO(AWS issue): collect the result keys and statistics (a JobReport), delete the job's keys
    (``JobStorage.cleanup``), and return ``{"job_id", "status", "results": {"s3_key": ...},
    "report": {...}}``: results go to S3, never through the state.
    """
    raise NotImplementedError(NOT_YET)
