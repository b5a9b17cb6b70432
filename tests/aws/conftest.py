"""Fixtures for the AWS runtime tests: one real Redis for the module, and per test a moto account
with the eight functions, the bucket, the password secret and the state machine from the real ASL;
``api`` adds API Gateway in front (tests/aws/api_gateway.py) and S3 over HTTP for presigned URLs.
``deployed_aws`` is the same account with the handlers running from the packaged zip bundle in an
isolated Python of Lambda's version, reaching moto over loopback HTTP as a function reaches AWS."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.session
import pytest
from moto import mock_aws

import deploy_bundle
from api_gateway import ApiGateway
from aws_harness import FUNCTIONS, LambdaRouter, definition, zip_of
from bundle_runtime import BundleRuntime
from wukong.local.redis_server import RedisServerProcess
from wukong.storage import RedisStores, StorageSpec

REGION = "us-east-1"
BUCKET = "wukong-test-jobs"
SECRET = "wukong/redis-password"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServerProcess().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_stores(redis_server):
    """A client of the test Redis, for looking at what the functions left behind."""
    host, port = redis_server.endpoint
    stores = RedisStores(StorageSpec(mds=(host, port), kv=((host, port),), password=redis_server.password))
    yield stores
    stores.close()


@dataclass
class Deployment:
    sfn: Any
    s3: Any
    lambda_: Any
    state_machine_arn: str
    router: LambdaRouter
    function_arns: dict[str, str]
    endpoint: str | None = None  # moto over loopback HTTP, when the handlers run in a BundleRuntime


@contextmanager
def moto_deployment(redis_server, monkeypatch, code: deploy_bundle.FunctionCode | None = None):
    """Everything serverless.yml deploys, in moto; the functions' environment is the process's.
    With ``code``, the handlers run from it in a BundleRuntime instead of in this process."""
    host, port = redis_server.endpoint
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION, "WUKONG_REDIS_ENDPOINTS": f"{host}:{port}", "WUKONG_REDIS_PASSWORD_SECRET": SECRET,
        "WUKONG_EXECUTOR_FUNCTION": "wukong-executor", "WUKONG_BUCKET": BUCKET,
        "POWERTOOLS_SERVICE_NAME": "wukong", "POWERTOOLS_METRICS_NAMESPACE": "Wukong",
        "POWERTOOLS_TRACE_DISABLED": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("WUKONG_REDIS_PASSWORD", "REDIS_URL", "WUKONG_JOB_TIMEOUT", "WUKONG_HEARTBEAT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    router = LambdaRouter()
    router.install(monkeypatch)
    server = runtime = endpoint = None
    with mock_aws(config=MOTO_CONFIG):
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="wukong-lambda", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                   "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
        lambda_ = boto3.client("lambda", region_name=REGION)
        arns = {}
        for name, (handler, _) in FUNCTIONS.items():
            arns[name] = lambda_.create_function(
                FunctionName=f"wukong-{name}", Runtime="python3.12", Role=role, Handler=handler,
                Code={"ZipFile": zip_of("# routed to the repository's handler by the test harness\n")},
                Environment={"Variables": {k: v for k, v in env.items() if k.startswith(("WUKONG_", "POWERTOOLS_"))}},
                MemorySize=1024, Timeout=900,
            )["FunctionArn"]
        boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name=SECRET, SecretString=redis_server.password)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        substitutions = {placeholder: arns[name] for name, (_, placeholder) in FUNCTIONS.items() if placeholder}
        machine = sfn.create_state_machine(name="wukong-test", definition=definition(substitutions),
                                           roleArn=role, type="STANDARD")["stateMachineArn"]
        monkeypatch.setenv("WUKONG_STATE_MACHINE_ARN", machine)
        try:
            if code is not None:
                # the runtime's boto3 reaches this account over loopback HTTP (moto's server shares
                # the in-process backends), so its Lambda invokes come back to the router
                from moto.server import ThreadedMotoServer

                server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                server.start()
                endpoint = "http://%s:%d" % server.get_host_and_port()
                router.runtime = runtime = BundleRuntime(code, {
                    **env, "WUKONG_STATE_MACHINE_ARN": machine, "AWS_ENDPOINT_URL": endpoint,
                    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_CONFIG_FILE": "/dev/null"})
            yield Deployment(sfn, s3, lambda_, machine, router, arns, endpoint)
        finally:
            router.close()  # the Event invokes still running finish first, in the runtime too
            if runtime is not None:
                runtime.close()
            if server is not None:
                server.stop()
    assert not router.async_errors, router.async_errors


@pytest.fixture
def aws(redis_server, monkeypatch):
    with moto_deployment(redis_server, monkeypatch) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def zip_code(tmp_path_factory):
    """The packaged zip bundle, unpacked, with the Lambda runtime's Python (packaged once per session)."""
    return deploy_bundle.zip_code(tmp_path_factory)


@pytest.fixture
def deployed_aws(redis_server, monkeypatch, zip_code):
    with moto_deployment(redis_server, monkeypatch, zip_code) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def image_code(tmp_path_factory):
    """The executor image's packages and code, installed without Docker (deploy_bundle.image_code)."""
    return deploy_bundle.image_code(tmp_path_factory)


@pytest.fixture
def deployed_image_aws(redis_server, monkeypatch, image_code):
    """Every function from the image's contents (on AWS only three are: the others never need them)."""
    with moto_deployment(redis_server, monkeypatch, image_code) as deployment:
        yield deployment


@pytest.fixture
def api(aws, monkeypatch):
    """API Gateway over the deployment. S3 is also served over loopback HTTP (moto's server, sharing
    the in-process account), so presigned URLs work with a plain HTTP client, as on AWS."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
    monkeypatch.setenv("WUKONG_AWS_REGION", REGION)
    try:
        yield ApiGateway(aws.lambda_, {"submit": "wukong-submit", "jobs": "wukong-jobs"},
                         botocore.session.get_session().get_credentials(), REGION)
    finally:
        server.stop()
