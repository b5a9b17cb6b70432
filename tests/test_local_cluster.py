"""The embedded runtime: seed keyword arguments, external Redis (redis_endpoints / REDIS_URL),
clean shutdown of every process, sequential and concurrent jobs, KV sharding,
and the job report.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from operator import add

import dask.array as da
import numpy as np
import pytest
from processes import alive, child_processes
from graph_shapes import tree_sum_graph
import redis

from wukong import Client, LocalCluster
from wukong.local.redis_server import RedisServerProcess

SERVER_NAMES = ("redis-server", "valkey-server")

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="process checks read /proc")


def blocks_fan_in(n_blocks: int, block_len: int) -> tuple[dict, str]:
    """n_blocks leaf tasks each making a float64 array, all needed by one sum: a pure fan-in."""
    dsk = {("block", i): (np.full, block_len, float(i)) for i in range(n_blocks)}
    dsk["total"] = (np.sum, [("block", i) for i in range(n_blocks)])
    return dsk, "total"


def commands_processed(endpoint: tuple[str, int], password: str | None) -> int:
    conn = redis.Redis(host=endpoint[0], port=endpoint[1], password=password)
    try:
        return int(conn.info("stats")["total_commands_processed"])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def external_redis():
    """A Redis server this test module owns, standing in for the seed's ("127.0.0.1", 6379)."""
    server = RedisServerProcess().start()
    try:
        yield server
    finally:
        server.stop()


# --- external Redis and the seed's keyword arguments ----------------------------------------------


def test_seed_keyword_arguments_use_the_given_redis(external_redis):
    before = child_processes()
    with LocalCluster(
        host="10.0.88.131:8786",
        proxy_address="10.0.88.131",
        proxy_port=8989,
        num_lambda_invokers=4,
        chunk_large_tasks=False,
        n_workers=2,  # the seed passes 0 (it meant Dask workers); locally this is the executor pool
        use_local_proxy=True,
        local_proxy_path="/home/ec2-user/Wukong/KV Store Proxy/proxy.py",
        redis_endpoints=[external_redis.endpoint],
        use_fargate=False,
        redis_password=external_redis.password,
    ) as cluster:
        started = {pid: name for pid, name in child_processes().items() if pid not in before}
        assert cluster.servers == []
        assert not any(name in SERVER_NAMES for name in started.values()), started
        # the two worker processes, the local KV proxy, and the reaper of its temporary directory
        assert sorted(started.values()) == ["python", "python", "python", "sh"], started
        assert cluster.spec.mds == external_redis.endpoint
        # use_local_proxy wins over the seed's EC2 proxy address (its proxy.py is not here: ours runs)
        assert cluster.proxy is not None and cluster.proxy.running
        assert (cluster.config.proxy_address, cluster.config.proxy_port) == cluster.proxy.address
        assert cluster.config.num_lambda_invokers == 4

        seen = commands_processed(external_redis.endpoint, external_redis.password)
        client = Client(cluster)
        dsk, root = tree_sum_graph(64, "seed")
        assert client.get(dsk, root) == sum(range(64))
        # the job's traffic went to our server
        assert commands_processed(external_redis.endpoint, external_redis.password) > seen + 64
    # closing the cluster must not stop a server it did not start
    assert external_redis.running
    assert commands_processed(external_redis.endpoint, external_redis.password) > 0


def test_redis_url_environment_variable(external_redis, monkeypatch):
    host, port = external_redis.endpoint
    monkeypatch.setenv("REDIS_URL", f"redis://:{external_redis.password}@{host}:{port}/0")
    seen = commands_processed(external_redis.endpoint, external_redis.password)
    with LocalCluster(n_workers=1) as cluster:
        assert cluster.servers == []
        assert cluster.spec.mds == external_redis.endpoint
        x = da.arange(100, chunks=10)
        assert (x * 3).sum().compute(scheduler=Client(cluster).get) == 3 * sum(range(100))
    assert commands_processed(external_redis.endpoint, external_redis.password) > seen


# --- configuration errors ---------------------------------------------------------------------------


# invalid settings and environment variables: tests/test_bad_input.py


# --- shutdown ---------------------------------------------------------------------------------------


def test_context_manager_ends_every_process_and_server():
    before = child_processes()
    with LocalCluster(n_workers=2, num_kv_shards=2) as cluster:
        started = {pid: name for pid, name in child_processes().items() if pid not in before}
        assert len(started) == 5, started  # 2 workers, MDS/KV server, a second KV server, tmp reaper
        assert sum(name in SERVER_NAMES for name in started.values()) == 2
        assert {p.pid for p in cluster.pool.processes} <= started.keys()
        assert Client(cluster).get({"a": 1, "b": (add, "a", 1)}, "b") == 2
    assert [pid for pid in started if alive(pid)] == []
    assert child_processes().keys() <= before.keys()


def test_close_ends_every_process_and_is_idempotent():
    before = child_processes()
    cluster = LocalCluster(n_workers=2)
    started = [pid for pid in child_processes() if pid not in before]
    assert len(started) == 4  # 2 workers, Redis, and the reaper of its temporary directory
    cluster.close()
    assert [pid for pid in started if alive(pid)] == []
    cluster.close()  # a second close is harmless
    with pytest.raises(RuntimeError, match="closed"):
        Client(cluster).get({"a": 1}, "a")


def test_client_without_cluster_starts_and_closes_its_own():
    before = child_processes()
    with Client(n_workers=1) as client:
        started = [pid for pid in child_processes() if pid not in before]
        assert len(started) == 3  # its own Redis, one worker, the temporary directory's reaper
        dsk, root = tree_sum_graph(16, "own")
        assert client.get(dsk, root) == sum(range(16))
    assert [pid for pid in started if alive(pid)] == []


# --- many jobs on one cluster ------------------------------------------------------------------------


def test_jobs_one_after_another(client):
    for n in (2, 8, 32, 128, 8, 2):
        dsk, root = tree_sum_graph(n, "seq")
        assert client.get(dsk, root) == sum(range(n))
    x = da.ones((40, 40), chunks=10)
    for _ in range(3):
        np.testing.assert_array_equal((x @ x).compute(scheduler=client.get), np.full((40, 40), 40.0))


def test_six_jobs_at_the_same_time(client):
    # the graphs share key names ("same-0", i), ...: jobs are namespaced, so they must not collide
    def tree(n):
        dsk, root = tree_sum_graph(n, "same")
        return client.get(dsk, root)

    def array(seed):
        x = da.random.default_rng(seed).random((400, 40), chunks=(50, 40))
        return seed, x.sum(axis=0).compute(scheduler=client.get), x.compute(scheduler="sync").sum(axis=0)

    with ThreadPoolExecutor(max_workers=6) as pool:
        trees = [pool.submit(tree, n) for n in (16, 64, 128, 256)]
        arrays = [pool.submit(array, seed) for seed in (1, 2)]
        assert [f.result(timeout=120) for f in trees] == [sum(range(n)) for n in (16, 64, 128, 256)]
        for future in arrays:
            _, got, expected = future.result(timeout=120)
            np.testing.assert_allclose(got, expected)


def test_three_kv_shards_end_to_end():
    with LocalCluster(n_workers=2, num_kv_shards=3) as cluster:
        assert len(cluster.servers) == 3 and len(cluster.spec.kv) == 3
        client = Client(cluster)
        seen = {ep: commands_processed(ep, cluster.spec.password) for ep in cluster.spec.kv}
        # a 64-way fan-in: at least 63 of the 64 blocks wait in the KV shards for the last one
        dsk, root = blocks_fan_in(64, 2000)
        assert client.get(dsk, root) == 2000 * sum(range(64))
        assert client.last_report.kv_bytes_written > 63 * 2000 * 8
        # consistent hashing spread the blocks: every shard served this job
        for ep in cluster.spec.kv:
            assert commands_processed(ep, cluster.spec.password) > seen[ep] + 1, ep


# --- the job report -----------------------------------------------------------------------------------


def test_report_of_a_simple_graph(client):
    dsk, root = tree_sum_graph(32, "report")
    assert client.get(dsk, root) == sum(range(32))
    report = client.last_report
    assert report.status == "succeeded"
    assert report.n_tasks == len(dsk) == 63
    assert report.tasks_run == report.n_tasks
    assert report.n_leaves == 32
    assert report.executors_invoked >= report.n_leaves
    assert report.executors_finished == report.executors_invoked
    assert report.redis_ops == report.mds_ops + report.kv_ops > 0
    assert report.round_trips > 0
    assert 0 < report.plan_seconds <= report.wall_seconds
    assert report.estimated_cost_usd > 0
    summary = report.summary()
    assert f"{report.tasks_run} run of {report.n_tasks}" in summary
    assert report.as_dict()["redis_ops"] == report.redis_ops


def test_report_counts_kv_bytes_of_a_fan_in(client):
    # 16 blocks of 8 KB meet in one sum: all but the last arrive through the KV shards
    dsk, root = blocks_fan_in(16, 1024)
    assert client.get(dsk, root) == 1024 * sum(range(16))
    report = client.last_report
    assert report.tasks_run == report.n_tasks
    assert report.kv_bytes_written >= 15 * 1024 * 8
    assert report.kv_bytes_read >= 15 * 1024 * 8
    assert report.kv_ops > 0
    assert report.result_bytes > 0


def slow_identity(x, seconds):
    import time

    time.sleep(seconds)
    return x


def test_report_waits_for_the_executor_that_invoked_the_others(client):
    """The leaf's executor invokes three executors and goes on with its own dependent; whichever
    reports first, the report counts every executor and task. (The report once settled when the
    invoked executors' finishes matched one leaf plus no invokes reported yet; that window is
    narrow, so this check catches it only sometimes: the fix is the ordering in Executor._send.)"""
    for attempt in range(4):
        dsk = {"x": (add, attempt, 1), "slow": (slow_identity, "x", 0.3),
               **{f"fast{i}": (add, "x", i) for i in range(3)},
               "out": (sum, ["slow", "fast0", "fast1", "fast2"])}
        assert client.get(dsk, "out") == 4 * (attempt + 1) + 3
        report = client.last_report
        assert report.tasks_run == report.n_tasks == 6, report
        assert report.executors_invoked == 4 and report.executors_finished == 4, report


def test_each_job_gets_its_own_report(client):
    client.get({"a": 1}, "a")
    first = client.last_report
    client.get({"a": 1, "b": (add, "a", 1)}, "b")
    second = client.last_report
    assert first.job_id != second.job_id
    assert (first.n_tasks, second.n_tasks) == (1, 2)
