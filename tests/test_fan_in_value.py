"""bump_counters with the upstream's value: the one-call Lua path used when the value's shard is
the MDS server stores the value (with a TTL) before counters move, and still claims each fan-in
exactly once; single-connection stores (as local workers use) behave the same.
"""

from __future__ import annotations

import pickle
import uuid

import pytest

from wukong.schedule import DependentRef
from wukong.storage import JobStorage, RedisStores

TTL = 600


@pytest.fixture(params=[False, True], ids=["pooled", "single-connection"])
def job(cluster, request):
    stores = RedisStores(cluster.spec, single_connection=request.param)
    j = JobStorage(stores, f"test-{uuid.uuid4().hex[:12]}", TTL, 1)
    yield j
    j.cleanup(n_tasks=16, n_paths=1)
    stores.close()


def ref(tid: int, slot: int, n_deps: int) -> DependentRef:
    return DependentRef(tid=tid, path=0, slot=slot, n_deps=n_deps)


def test_value_is_stored_with_ttl_and_the_last_upstream_claims(job):
    assert job.stores.shard_for(job.keys.value(1)) is job.stores.mds  # the one-call path
    blob1, blob2 = pickle.dumps(10), pickle.dumps(32)
    assert job.bump_counters([ref(3, 0, 2)], (1, blob1)) == []
    assert job.bump_counters([ref(3, 1, 2)], (2, blob2)) == [3]
    assert job.get_values([1, 2]) == {1: blob1, 2: blob2}
    assert 0 < job.stores.mds.ttl(job.keys.value(1)) <= TTL
    assert 0 < job.stores.mds.ttl(job.keys.counter(3)) <= TTL
    assert job.stats.kv_bytes_written == len(blob1) + len(blob2)


def test_several_counters_and_a_duplicated_upstream(job):
    blob = pickle.dumps("x")
    assert job.bump_counters([ref(5, 0, 2), ref(6, 0, 1)], (4, blob)) == [6]
    assert job.bump_counters([ref(5, 0, 2), ref(6, 0, 1)], (4, blob)) == []  # the retry claims nothing
    assert job.bump_counters([ref(5, 1, 2)], (7, blob)) == [5]
    assert job.get_values([4, 7]) == {4: blob, 7: blob}


def test_value_without_fan_in_is_only_stored(job):
    assert job.bump_counters([], (9, b"payload")) == []
    assert job.get_values([9]) == {9: b"payload"}
