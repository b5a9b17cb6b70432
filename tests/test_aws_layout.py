"""The AWS layout placeholders stay honest: the executor handler really runs a job against real
Redis, the state machine sketch is well-formed ASL, the not-yet-built handlers say so, and
requirements.txt keeps up with pyproject.toml.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import operator
import re
import tomllib
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from wukong import LocalCluster
from wukong.graph import normalize_graph
from wukong.job import plan_job
from wukong.serialization import loads
from wukong.storage import JobStorage

ROOT = Path(__file__).resolve().parents[1]


def load(relative: str) -> ModuleType:
    """Import a Lambda handler file the way Lambda does: by path, not as part of a package."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"handler_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pool():
    """A cluster of its own (real Redis + 1 worker): the handler's invocations go to its queue."""
    with LocalCluster(n_workers=1) as cluster:
        yield cluster


def test_executor_handler_runs_a_leaf_and_its_fan_out(pool):
    cluster, stores = pool, pool.stores
    # one leaf; "a" fans out to b1 and b2 (the handler becomes one and invokes the other through
    # the cluster's real invoker), and both fan in to "c"
    executor_handler = load("functions/executor/handler.py")
    # operator functions, because the worker processes cannot import this test module
    dsk = {"a": 1, "b1": (operator.add, "a", 1), "b2": (operator.add, "a", 1), "c": (operator.add, "b1", "b2")}
    graph = normalize_graph(dsk, ["c"])
    job = plan_job(graph, stores, cluster.config)
    assert len(job.leaf_payloads) == 1
    event = {"payload": base64.b64encode(job.leaf_payloads[0]).decode()}
    context = SimpleNamespace(invoked_function_arn="arn:aws:lambda:local:0:function:unused",
                              aws_request_id="test-request")
    out = executor_handler.handler(event, context, invoker=cluster.invoker)
    assert out == {"job_id": job.settings.job_id, "start": job.plan.paths[0].leaf}
    storage = JobStorage(stores, job.settings.job_id, job.settings.ttl, job.settings.n_outputs)
    try:
        event = storage.wait_event(timeout=20)
        assert event is not None and event["kind"] == "done", event
        (blob,) = storage.results(list(job.plan.output_ids)).values()
        assert loads(blob) == 4
    finally:
        storage.cleanup(job.plan.n_tasks, len(job.plan.paths))


def test_state_machine_sketch_is_well_formed():
    asl = json.loads((ROOT / "statemachine/wukong.asl.json").read_text())
    assert "NOT YET DEPLOYABLE" in asl["Comment"]

    def check(machine: dict) -> list[str]:
        states = machine["States"]
        assert machine["StartAt"] in states
        types = []
        for name, state in states.items():
            types.append(state["Type"])
            targets = [state.get("Next")] + [c["Next"] for c in state.get("Catch", [])]
            for target in filter(None, targets):
                assert target in states, f"{name} -> {target}"
            assert state["Type"] in ("Fail", "Succeed") or state.get("End") or state.get("Next"), name
            if state["Type"] == "Map":
                types += check(state["ItemProcessor"])
        return types

    types = check(asl)
    states = asl["States"]
    assert list(states)[:4] == ["Plan", "InvokeLeaves", "AwaitCompletion", "Finalize"]
    assert states["InvokeLeaves"]["Type"] == "Map" and states["InvokeLeaves"]["MaxConcurrency"] <= 40
    assert states["AwaitCompletion"]["Resource"].endswith(".waitForTaskToken")
    assert "Fail" in types
    for name in ("Plan", "InvokeLeaves", "AwaitCompletion"):  # every step has a failure path
        assert states[name]["Catch"][0]["Next"] == "CleanUpAfterFailure"


@pytest.mark.parametrize("path, entry", [
    ("functions/invoker/handler.py", "plan"),
    ("functions/invoker/handler.py", "invoke_batch"),
    ("functions/finalizer/handler.py", "await_completion"),
    ("functions/finalizer/handler.py", "handler"),
])
def test_unbuilt_handlers_say_so(path, entry):
    module = load(path)
    with pytest.raises(NotImplementedError, match="AWS issue"):
        getattr(module, entry)({}, None)


def test_serverless_skeleton_names_existing_handlers():
    text = (ROOT / "serverless.yml").read_text()
    assert "NOT YET DEPLOYABLE" in text
    assert re.search(r"^\s+runtime: python3\.12\b", text, re.M)
    for handler in re.findall(r"handler: (\S+)", text):
        file, _, function = handler.rpartition(".")
        assert hasattr(load(file + ".py"), function), handler


def test_requirements_cover_the_package_dependencies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = {line for line in lines if line}
    assert set(deps) <= requirements
    names = {re.split(r"[\[<>=]", line)[0] for line in requirements}
    assert {"boto3", "aws-lambda-powertools"} <= names
