"""Large-object chunking on three KV shards, and the delayed-I/O counter holds: a big value is
spread over every shard, reads back identical (alone and mixed with whole values), a chunked job
computes the right answer, and cleanup leaves no key behind.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from wukong import LocalCluster
from wukong.config import make_config
from wukong.graph import normalize_graph
from wukong.job import JobRun
from wukong.schedule import DependentRef
from wukong.storage import JobStorage

TTL = 600


@pytest.fixture(scope="module")
def three_shards():
    with LocalCluster(n_workers=1, num_kv_shards=3) as c:
        yield c


def job_keys(stores, job_id: str) -> list[bytes]:
    return [k for client in {id(c): c for c in [stores.mds, *stores.shards.values()]}.values()
            for k in client.scan_iter(match=f"wk:{job_id}:*")]


def test_a_chunked_value_spans_every_shard_reads_back_and_is_cleaned_up(three_shards):
    stores = three_shards.stores
    job = JobStorage(stores, f"test-{uuid.uuid4().hex[:12]}", TTL, 1, chunk_size=1000)
    big, small = os.urandom(100_001), b"\x80small"
    job.put_value(1, big)
    job.put_value(2, small)
    shards_holding = {node for node, client in stores.shards.items()
                      if any(client.scan_iter(match=f"{job.keys.prefix}k:v:1.*"))}
    assert shards_holding == set(stores.shards)  # one chunk per shard by default
    for node, client in stores.shards.items():
        for key in client.scan_iter(match=f"{job.keys.prefix}k:v:1.*"):
            assert 0 < client.ttl(key) <= TTL
    reader = JobStorage(stores, job.job_id, TTL, 1)  # readers need no chunk settings
    assert reader.get_values([1, 2]) == {1: big, 2: small}
    assert 0 <= reader.stats.kv_bytes_read - len(big) - len(small) < 100  # plus the small stand-in
    job.cleanup(n_tasks=3, n_paths=0)
    assert job_keys(stores, job.job_id) == []


def test_chunk_count_can_be_set_and_values_under_the_threshold_stay_whole(three_shards):
    stores = three_shards.stores
    job = JobStorage(stores, f"test-{uuid.uuid4().hex[:12]}", TTL, 1, chunk_size=1000, num_chunks_for_large_tasks=7)
    job.put_value(0, b"y" * 999)
    job.put_value(3, b"z" * 5000)
    sets = stores.mds.hgetall(job.keys.chunk_counts)
    assert list(sets.values()) == [b"7"] and list(sets)[0].startswith(b"v:3.")  # one set, of task 3's value
    assert job.get_values([0, 3]) == {0: b"y" * 999, 3: b"z" * 5000}
    job.cleanup(n_tasks=4, n_paths=0)
    assert job_keys(stores, job.job_id) == []


def test_a_job_with_chunked_outputs_is_exact_and_leaves_no_keys(three_shards):
    dsk = {("x", i): (np.full, 50_000, float(i)) for i in range(3)}  # 400 KB each, chunked
    dsk["total"] = (sum, [(np.sum, ("x", i)) for i in range(3)])
    dsk.update({("y", i): (np.add, ("x", i), ("x", (i + 1) % 3)) for i in range(3)})
    dsk["ys"] = (sum, [(np.sum, ("y", i)) for i in range(3)])
    config = make_config(three_shards.config, chunk_large_tasks=True, chunk_size=100_000, job_timeout=60)
    run = JobRun(normalize_graph(dsk, ["total", "ys"]), three_shards.stores, three_shards.invoker, config)
    assert list(run.run()) == [150_000.0, 300_000.0]
    assert run.report.kv_bytes_written > 3 * 400_000
    assert job_keys(three_shards.stores, run.job_id) == []


def ref(tid: int, slot: int, n_deps: int = 2) -> DependentRef:
    return DependentRef(tid=tid, path=0, slot=slot, n_deps=n_deps)


def test_one_holder_per_counter_and_a_retry_of_it_holds_again(three_shards):
    job = JobStorage(three_shards.stores, f"test-{uuid.uuid4().hex[:12]}", TTL, 1)
    assert job.poll_counters([ref(5, 0), ref(6, 0)], claimer=1) == [(0, False), (0, False)]
    assert job.poll_counters([ref(6, 1), ref(7, 0)], claimer=2) is None  # 6 is held by 1
    assert job.poll_counters([ref(7, 0)], claimer=2) == [(0, False)]  # refused holds nothing
    assert job.bump_counters([ref(5, 1)], claimer=3) == []
    assert job.poll_counters([ref(5, 0), ref(6, 0)], claimer=1) == [(1, False), (0, False)]
    assert job.bump_counters([ref(5, 0)], claimer=1) == [5]  # the holder completes it: ours to run
    assert job.poll_counters([ref(5, 0)], claimer=1) == [(2, True)]
    job.cleanup(n_tasks=8, n_paths=0)
    assert job_keys(three_shards.stores, job.job_id) == []
