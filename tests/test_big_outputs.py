"""Big outputs end to end: clustering keeps a big array's dependents in its executor, delayed I/O
lets it complete its fan-ins itself, both without writing it to the KV store (the job report's KV
bytes show it), and adversarial graphs (diamonds, GEMM grids) finish correctly either way.
"""

from __future__ import annotations

from operator import add

import numpy as np
import pytest

from wukong.config import make_config
from wukong.graph import normalize_graph
from wukong.job import JobRun

N = 200_000  # float64: 1.6 MB serialized, over the 1 MB payload limit, so without clustering it moves
BIG = 100_000  # the test threshold: N-element arrays are big, scalars are not


def run(cluster, dsk, keys, **settings):
    config = make_config(cluster.config, **settings)
    job = JobRun(normalize_graph(dsk, keys), cluster.stores, cluster.invoker, config)
    return job.run(), job.report


def fan_out_of_big_array():
    dsk = {"x": (np.full, N, 2.0)}
    parts = {f"s{i}": (f, "x") for i, f in enumerate([np.sum, np.max, np.min, np.mean])}
    dsk.update(parts)
    dsk["out"] = (sum, list(parts))
    return dsk, "out"


def test_a_big_arrays_fan_out_stays_in_its_executor(cluster):
    dsk, out = fan_out_of_big_array()
    value, report = run(cluster, dsk, out, big_task_threshold=BIG, job_timeout=60)
    assert value == 2.0 * N + 2.0 + 2.0 + 2.0
    assert report.kv_bytes_written < 2_000  # only the four scalars travel to the fan-in
    # the same job unclustered ships the array: the comparison shows what the threshold saves
    _, moved = run(cluster, dsk, out, big_task_threshold=10 * N * 8, job_timeout=60)
    assert moved.kv_bytes_written > N * 8


def diamond():
    """a feeds a small b and a big x; z needs both: whichever finishes last completes z."""
    return {"a": 3.0, "b": (add, "a", 1.0), "x": (np.full, N, "a"), "z": (np.add, "x", "b")}, "z"


def test_delayed_io_completes_a_fan_in_without_writing_the_big_input(cluster):
    dsk, out = diamond()
    value, report = run(cluster, dsk, out, big_task_threshold=BIG, delayed_io_max_wait=30, job_timeout=60)
    np.testing.assert_array_equal(value, np.full(N, 7.0))
    assert report.kv_bytes_written < 2_000
    # the report says what delayed I/O did: either x waited and completed z itself, or b came
    # second and found x's hold, so neither wrote x
    assert (report.delayed_io_claims, report.delayed_io_writes) in ((1, 0), (0, 0))
    # with the wait off, the big input is written before its counter moves
    value, report = run(cluster, dsk, out, big_task_threshold=BIG, delayed_io_max_wait=0, job_timeout=60)
    np.testing.assert_array_equal(value, np.full(N, 7.0))
    assert report.kv_bytes_written > N * 8
    assert report.delayed_io_claims == 0


def gemm_grid(n: int, block: int):
    """C = A @ B over an n x n grid of blocks: every product has two big upstreams that both want
    to hold its counter, and every block feeds n products (the adversarial case for delayed I/O)."""
    rng = np.random.default_rng(5)
    a, b = rng.random((n * block, n * block)), rng.random((n * block, n * block))
    dsk = {}
    for i in range(n):
        for j in range(n):
            dsk[("A", i, j)] = a[i * block:(i + 1) * block, j * block:(j + 1) * block].copy()
            dsk[("B", i, j)] = b[i * block:(i + 1) * block, j * block:(j + 1) * block].copy()
            # an identity step makes each block a task output (a literal would be inlined)
            dsk[("a", i, j)] = (np.ascontiguousarray, ("A", i, j))
            dsk[("b", i, j)] = (np.ascontiguousarray, ("B", i, j))
    for i in range(n):
        for j in range(n):
            for k in range(n):
                dsk[("p", i, j, k)] = (np.matmul, ("a", i, k), ("b", k, j))
            dsk[("C", i, j)] = (sum, [("p", i, j, k) for k in range(n)])
    keys = [[("C", i, j) for j in range(n)] for i in range(n)]
    return dsk, keys, a @ b


@pytest.mark.parametrize("max_wait", [0, 30])
def test_gemm_grid_with_big_blocks_finishes_and_is_exact(cluster, max_wait):
    dsk, keys, expected = gemm_grid(n=2, block=40)  # 12.8 KB blocks, all "big" below
    value, report = run(cluster, dsk, keys, big_task_threshold=4_000, delayed_io_max_wait=max_wait,
                        job_timeout=60)
    np.testing.assert_allclose(np.block([list(row) for row in value]), expected)
    assert report.status == "succeeded"


def test_many_diamonds_sharing_big_inputs_finish(cluster):
    """Big x_i feeds z_i and z_{i+1}: neighbouring waiters contend for the same counters."""
    n = 4
    dsk = {("x", i): (np.full, 2_000, float(i)) for i in range(n)}
    for i in range(n):
        dsk[("z", i)] = (np.add, ("x", i), ("x", (i + 1) % n))
    dsk["total"] = (sum, [(np.sum, ("z", i)) for i in range(n)])
    value, _ = run(cluster, dsk, "total", big_task_threshold=4_000, delayed_io_max_wait=30, job_timeout=60)
    assert value == sum(2_000 * (i + (i + 1) % n) for i in range(n))
