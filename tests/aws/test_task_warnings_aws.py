"""Warnings raised by tasks on AWS: the finalizer carries them in the succeeded execution's
output, and the job API's status shows them, as the local job service does."""

from __future__ import annotations

import json
import warnings

import pytest

from wukong.aws.api.status import status_from_execution
from wukong.aws.submit import fetch_result, submit_job, wait_for

pytestmark = pytest.mark.timeout(120)


def warn_and_double(x: int) -> int:
    warnings.warn(f"doubling {x}", UserWarning)
    return 2 * x


def test_a_tasks_warnings_are_in_the_executions_output_and_the_status(aws):
    handle = submit_job({"x": 21, "y": (warn_and_double, "x")}, "y", state_machine_arn=aws.state_machine_arn,
                        bucket="wukong-test-jobs", sfn_client=aws.sfn, s3_client=aws.s3)
    assert fetch_result(handle, sfn_client=aws.sfn, s3_client=aws.s3, timeout=90) == 42
    described = wait_for(handle, aws.sfn, timeout=30)
    output = json.loads(described["output"])
    assert [(w["category"], w["message"], w["task"]) for w in output["warnings"]] == [
        ("builtins.UserWarning", "doubling 21", "'y'")]
    status = status_from_execution(described)
    assert [w.message for w in status.warnings] == ["doubling 21"]
