"""The in-process job service on the session cluster: jobs run in the background, and finished
jobs and results are kept within their bounds (count, bytes), fetched results going first.
"""

from __future__ import annotations

import pytest
from graph_shapes import tree_sum_graph

from wukong.config import make_config
from wukong.graph import normalize_graph
from wukong.service.base import JobHandle, ResultGoneError, UnknownJobError
from wukong.service.local import LocalJobService
from wukong.service.models import JobConfig, JobState


def run_to_end(service: LocalJobService, n: int, prefix: str) -> JobHandle:
    dsk, root = tree_sum_graph(n, prefix)
    handle = JobHandle(service, service.submit(normalize_graph(dsk, root)).job_id)
    assert handle.wait().state is JobState.succeeded
    return handle


@pytest.mark.timeout(60)
def test_old_jobs_are_forgotten_beyond_max_jobs_kept(cluster):
    service = LocalJobService(cluster, make_config(cluster.config, max_jobs_kept=2))
    first, second, third = (run_to_end(service, 4, f"keep-{i}") for i in range(3))
    assert [s.job_id for s in service.jobs()] == [third.job_id, second.job_id]
    with pytest.raises(UnknownJobError):
        first.status()
    assert third.result() == sum(range(4))


@pytest.mark.timeout(60)
def test_results_over_the_byte_bound_are_evicted_fetched_first(cluster):
    service = LocalJobService(cluster, make_config(cluster.config, max_result_bytes=0))
    older = run_to_end(service, 4, "bytes-a")
    fetched = run_to_end(service, 8, "bytes-b")
    assert fetched.result() == sum(range(8))  # the newest result always stays; this one is now fetched
    newest = run_to_end(service, 16, "bytes-c")
    assert newest.result() == sum(range(16))
    for gone in (older, fetched):
        with pytest.raises(ResultGoneError, match="max_result_bytes"):
            gone.result()
        assert gone.status().state is JobState.succeeded and not gone.status().result_available


@pytest.mark.timeout(60)
def test_per_job_config_reaches_the_run(cluster):
    service = LocalJobService(cluster)

    def sleepy(x):
        import time

        time.sleep(3)
        return x

    graph = normalize_graph({"a": 1, "b": (sleepy, "a")}, "b")
    handle = JobHandle(service, service.submit(graph, JobConfig(job_timeout=0.5)).job_id)
    final = handle.wait()
    assert final.state is JobState.failed
    assert final.error.kind == "timeout" and "job_timeout" in final.error.message
