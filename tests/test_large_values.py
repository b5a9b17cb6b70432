"""Values of any size: whatever is too long for one Redis string (intermediate values, final
results, schedules) is chunked over the KV shards and comes back whole, with chunk_large_tasks
off; a live server's refusal is reported as what it is (size, limit, task), not as a lost server.

Most cases run against servers whose string limit (proto-max-bulk-len) is lowered to 1 MB, so
megabytes stand in for the gigabytes of the seed's sizes; one case runs 600 MB values on the
default 512 MB limit.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from wukong import Client, LocalCluster, ValueNotStoredError
from wukong.local.redis_server import RedisServerProcess
from wukong.storage import JobStorage

LIMIT = 1 << 20  # Redis's smallest allowed proto-max-bulk-len
MB = 1 << 20


def job_keys(stores, job_id: str) -> list[bytes]:
    return [k for client in {id(c): c for c in [stores.mds, *stores.shards.values()]}.values()
            for k in client.scan_iter(match=f"wk:{job_id}:*")]


@pytest.fixture(scope="module")
def small_strings():
    """A cluster of two shards that take strings of at most 1 MB."""
    with LocalCluster(n_workers=2, num_kv_shards=2, job_timeout=120) as cluster:
        for client in {id(c): c for c in [cluster.stores.mds, *cluster.stores.shards.values()]}.values():
            client.config_set("proto-max-bulk-len", LIMIT)
        with Client(cluster) as client:
            yield client


def full(n_bytes: int, value: float):
    return np.full(n_bytes // 8, value)


def check_no_keys_left(client: Client) -> None:
    assert job_keys(client.cluster.stores, client.last_report.job_id) == []


def test_the_limit_is_read_from_the_servers(small_strings):
    assert small_strings.cluster.stores.value_limit() == LIMIT


def test_intermediate_values_and_results_over_the_limit_come_back_whole(small_strings):
    assert not small_strings.config.chunk_large_tasks  # the default: no chunking asked for
    dsk = {"a": (full, 3 * MB, 1.0), "b": (full, 3 * MB, 2.0), "c": (np.add, "a", "b"), "s": (np.sum, "c")}
    c, s = small_strings.get(dsk, ["c", "s"])
    np.testing.assert_array_equal(c, np.full(3 * MB // 8, 3.0))
    assert s == 3.0 * (3 * MB // 8)
    assert small_strings.last_report.kv_bytes_written >= 6 * MB  # the fan-in's two inputs went through the KVS
    check_no_keys_left(small_strings)


def test_a_schedule_over_the_limit_is_stored_and_read_back(small_strings):
    literal = np.arange(400_000, dtype=np.float64)  # 3.2 MB inside the task itself
    dsk = {"x": (np.sum, literal), "y": (float, "x")}
    assert small_strings.get(dsk, "y") == float(literal.sum())
    check_no_keys_left(small_strings)


def test_a_write_the_server_refuses_names_the_size_and_the_limit_not_a_lost_server(small_strings):
    stores = small_strings.cluster.stores
    # a storage view that believes the default 512 MB limit, as after the server's limit was lowered
    misinformed = JobStorage(stores, f"test-{uuid.uuid4().hex[:12]}", 600, 1)
    with pytest.raises(ValueNotStoredError) as info:
        misinformed.put_value(7, b"\x80" + bytes(2 * MB))
    text = str(info.value)
    assert "2,097,153 bytes" in text and "task id 7" in text and "proto-max-bulk-len" in text
    assert "stopped answering" not in text
    assert stores.mds.ping()
    misinformed.cleanup(n_tasks=8, n_paths=0)


@pytest.fixture()
def full_shard():
    """Two servers: the first (MDS and a KV shard) roomy, the second a KV shard already over its
    maxmemory, so that every write to it is refused."""
    password = uuid.uuid4().hex
    roomy, full_server = RedisServerProcess(password=password).start(), RedisServerProcess(password=password).start()
    try:
        tight = redis.Redis(*full_server.endpoint, password=password)
        tight.set("filler", bytes(3 * MB))
        tight.config_set("maxmemory", MB)
        tight.close()
        eps = [roomy.endpoint, full_server.endpoint]
        # chunked over both shards, so one chunk of any big value goes to the full one
        with LocalCluster(n_workers=1, redis_endpoints=eps, redis_password=password, job_timeout=60,
                          chunk_large_tasks=True, chunk_size=100_000) as cluster:
            yield cluster, full_server
    finally:
        roomy.stop()
        full_server.stop()


def test_a_value_that_does_not_fit_the_stores_memory_fails_naming_task_size_and_limit(full_shard):
    cluster, _ = full_shard
    with Client(cluster) as client:
        # big fans out to two executors, too big to travel inline: it must be stored; the small
        # results go to the roomy MDS, so only big's write meets the full shard
        dsk = {"big": (full, 2 * MB, 1.0), "a": (np.sum, "big"), "b": (np.max, "big")}
        with pytest.raises(ValueNotStoredError) as info:
            client.get(dsk, ["a", "b"])
        text = str(info.value)
        assert "'big'" in text and "maxmemory is 1,048,576 bytes" in text and "out of memory" in text
        assert "bytes serialized" in text
        # the roomy server took the failure and the cleanup: the cluster works on
        assert client.get({"x": 1, "y": (float, "x")}, "y") == 1.0


@pytest.mark.timeout(600)
def test_seed_sizes_a_600_mb_result_and_a_fan_in_of_two_600_mb_values_on_the_defaults(client):
    """The default 512 MB limit, default settings: what the seed's GEMM (an 800 MB result) needs."""
    n = 600 * 1000 * 1000
    dsk = {"a": (full, n, 1.0), "b": (full, n, 2.0), "c": (np.add, "a", "b")}
    c = client.get(dsk, "c")
    assert c.shape == (n // 8,) and c.dtype == np.float64
    assert (c == 3.0).all()
    assert client.last_report.kv_bytes_written >= 2 * n  # both inputs of the fan-in were stored
    del c
    check_no_keys_left(client)


def test_a_value_over_the_embedded_servers_memory_cap_fails_naming_task_size_and_cap():
    with LocalCluster(n_workers=1, redis_maxmemory=64 * MB, job_timeout=60) as cluster, Client(cluster) as client:
        dsk = {"big": (full, 100 * MB, 1.0), "a": (np.sum, "big"), "b": (np.max, "big")}
        with pytest.raises(ValueNotStoredError) as info:
            client.get(dsk, ["a", "b"])
        text = str(info.value)
        assert "'big'" in text and "104,857,7" in text and "maxmemory is 67,108,864 bytes" in text
        assert client.get({"x": 1, "y": (float, "x")}, "y") == 1.0  # nothing was written: the server is fine
