"""Pure pieces of the AWS runtime: leaf batching for the Map, the await state's timeouts, payload
limits of asynchronous invokes, per-job configuration, names and the Redis spec."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wukong.aws.lambda_invoker import ASYNC_REQUEST_LIMIT, encode_event, raw_payload_limit
from wukong.aws.planner import MAP_CONCURRENCY, await_settings, leaf_batches
from wukong.aws.services import check_job_id, execution_arn, job_config
from wukong.config import WukongConfig
from wukong.graph import normalize_graph
from wukong.planning import plan_job
from wukong.storage import JobStorage, spec_from_config


def test_ten_thousand_leaves_start_in_forty_parallel_batches():
    batches = leaf_batches("j", 10_000, min_per_batch=50)
    assert len(batches) == MAP_CONCURRENCY == 40
    assert {b["count"] for b in batches} == {250}
    assert leaf_batches("j", 32, min_per_batch=50) == [{"job_id": "j", "first": 0, "count": 32}]
    assert leaf_batches("j", 0, min_per_batch=50) == []


@given(n=st.integers(1, 50_000), minimum=st.integers(1, 500))
def test_batches_cover_every_leaf_once_within_the_map_limit(n, minimum):
    batches = leaf_batches("j", n, minimum)
    assert len(batches) <= MAP_CONCURRENCY
    covered = [pid for b in batches for pid in range(b["first"], b["first"] + b["count"])]
    assert covered == list(range(n))
    assert all(b["count"] >= min(minimum, n) for b in batches[:-1])


def test_await_settings_follow_the_configuration():
    assert await_settings(WukongConfig(job_ttl=3600)) == {"timeout_seconds": 3600, "heartbeat": False}
    assert await_settings(WukongConfig(job_timeout=90.5, heartbeat_timeout=30)) == {
        "timeout_seconds": 91, "heartbeat": True, "heartbeat_seconds": 30}
    # a heartbeat as long as the timeout would mean nothing (and Step Functions refuses it)
    assert await_settings(WukongConfig(job_timeout=20, heartbeat_timeout=20))["heartbeat"] is False


def test_raw_payload_limit_is_what_fits_an_async_invoke_after_base64():
    limit = raw_payload_limit()
    assert len(encode_event(b"x" * limit)) <= ASYNC_REQUEST_LIMIT < len(encode_event(b"x" * (limit + 3)))


def test_job_config_takes_job_settings_and_refuses_deployment_settings(monkeypatch):
    monkeypatch.setenv("WUKONG_JOB_TTL", "7200")
    config = job_config({"job_timeout": 60, "min_leaves_per_invoker": 10})
    assert (config.job_timeout, config.min_leaves_per_invoker, config.job_ttl) == (60, 10, 7200)
    with pytest.raises(ValueError, match="redis_endpoints"):
        job_config({"redis_endpoints": "evil.example:6379"})
    with pytest.raises(ValueError):
        job_config({"job_timeout": -1})  # still validated


def test_the_core_package_imports_without_boto3_or_powertools():
    code = ("import sys; sys.modules['boto3'] = sys.modules['botocore'] = None; "
            "sys.modules['aws_lambda_powertools'] = None; "
            "import wukong, wukong.aws, wukong.aws.services, wukong.aws.submit, wukong.executor, wukong.job")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_names():
    assert check_job_id("abc-123_X") == "abc-123_X"
    for bad in ("", "a b", "x" * 81, None, "a/b"):
        with pytest.raises(ValueError):
            check_job_id(bad)
    machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:wukong-dev"
    assert execution_arn(machine, "j1") == "arn:aws:states:eu-west-1:123456789012:execution:wukong-dev:j1"


def test_spec_from_config_honours_tls_and_a_secret_password():
    spec = spec_from_config(WukongConfig(redis_endpoints="10.0.0.5:6379,10.0.0.6:6380", redis_tls=True,
                                         redis_password="plain"), password="from-secret")
    assert spec.mds == ("10.0.0.5", 6379) and len(spec.kv) == 2 and spec.tls and spec.password == "from-secret"
    assert "from-secret" not in repr(spec)
    url = spec_from_config(WukongConfig(redis_url="rediss://:pw@cache.internal:6380"))
    assert url.tls and url.mds == ("cache.internal", 6380) and url.password == "pw"


@pytest.mark.parametrize("address, expected", [("10.42.1.7", ("10.42.1.7", 8989)), ("", None)])
def test_the_planner_environment_names_the_kv_proxy_in_every_job(monkeypatch, redis_stores, address, expected):
    # serverless.yml gives the planner the MDS host's address (or "" with kvProxy=false) and port
    monkeypatch.setenv("WUKONG_PROXY_ADDRESS", address)
    monkeypatch.setenv("WUKONG_PROXY_PORT", "8989")
    job = plan_job(normalize_graph({"a": 1}, ["a"]), redis_stores, job_config(), job_id=f"proxy-{len(address)}")
    try:
        assert job.settings.proxy == expected
    finally:
        JobStorage(redis_stores, job.settings.job_id, 60, 1).cleanup(job.plan.n_tasks, len(job.plan.paths))
