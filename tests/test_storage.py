"""JobStorage against real Redis: atomic, idempotent fan-in counters, once-only results and job
ends, job-id namespacing, TTLs on every key, complete cleanup, and values spread over KV shards.
"""

from __future__ import annotations

import json
import threading
import uuid
from operator import add

import pytest

from wukong import Client, LocalCluster
from wukong.job_events import JobEvent
from wukong.schedule import DependentRef
from wukong.storage import JobStorage, RedisStores

TTL = 600


def new_job(stores: RedisStores, n_outputs: int = 1, job_id: str | None = None) -> JobStorage:
    return JobStorage(stores, job_id or f"test-{uuid.uuid4().hex[:12]}", TTL, n_outputs)


def job_keys(stores: RedisStores, job: JobStorage) -> dict[str, list[bytes]]:
    """Every key of ``job`` on every server, by server (SCAN is fine in a test)."""
    servers = {"mds": stores.mds, **stores.shards}
    return {name: list(c.scan_iter(match=f"{job.keys.prefix}*", count=1000)) for name, c in servers.items()}


def fan_in(tid: int, slot: int, n_deps: int) -> DependentRef:
    return DependentRef(tid=tid, path=0, slot=slot, n_deps=n_deps)


def run_threads(n: int, target) -> list:
    """Run ``target(i)`` in ``n`` threads released together by a barrier; results by index."""
    barrier = threading.Barrier(n)
    out: list = [None] * n
    errors: list[BaseException] = []

    def body(i):
        try:
            barrier.wait()
            out[i] = target(i)
        except BaseException as exc:  # surfaced below, so a thread failure fails the test
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


@pytest.fixture
def job(stores):
    j = new_job(stores)
    yield j
    j.cleanup(n_tasks=64, n_paths=8)


# --- fan-in counters --------------------------------------------------------------------------------


def test_same_slot_twice_never_completes(job):
    assert job.bump_counters([fan_in(5, slot=0, n_deps=2)]) == []
    assert job.bump_counters([fan_in(5, slot=0, n_deps=2)]) == []  # a duplicated upstream
    assert job.bump_counters([fan_in(5, slot=1, n_deps=2)]) == [5]
    # once complete, retries of either upstream never claim the task again
    assert job.bump_counters([fan_in(5, slot=1, n_deps=2)]) == []
    assert job.bump_counters([fan_in(5, slot=0, n_deps=2)]) == []


def test_several_counters_in_one_call(job):
    refs = [fan_in(1, 0, 2), fan_in(2, 1, 2), fan_in(3, 0, 1)]
    assert job.bump_counters(refs) == [3]
    assert job.bump_counters([fan_in(1, 1, 2), fan_in(2, 0, 2)]) == [1, 2]
    assert job.bump_counters([]) == []


def test_high_slot_numbers(job):
    # a 300-way fan-in: bits beyond the first bytes of the bitmap
    n = 300
    claimed = [job.bump_counters([fan_in(9, slot, n)]) for slot in range(n)]
    assert claimed[:-1] == [[]] * (n - 1) and claimed[-1] == [9]


def test_exactly_one_concurrent_bumper_claims(stores, job):
    n_deps, tasks = 12, list(range(10))

    def bump(i):
        # each thread is one upstream executor with its own JobStorage, like separate processes
        mine = new_job(stores, job_id=job.job_id)
        return mine.bump_counters([fan_in(t, slot=i, n_deps=n_deps) for t in tasks])

    claims = run_threads(n_deps, bump)
    for t in tasks:
        assert sum(t in c for c in claims) == 1, f"task {t} claimed {sum(t in c for c in claims)} times"


def test_duplicated_concurrent_bumpers_claim_once(stores, job):
    # two threads per slot: duplicated upstream executors racing each other
    n_deps = 6

    def bump(i):
        return new_job(stores, job_id=job.job_id).bump_counters([fan_in(42, slot=i % n_deps, n_deps=n_deps)])

    claims = run_threads(2 * n_deps, bump)
    assert sum(len(c) for c in claims) == 1
    assert [42] in claims


def test_a_retried_claimer_claims_again_and_nobody_else_does(job):
    assert job.bump_counters([fan_in(7, 0, 2)], claimer=1) == []
    assert job.bump_counters([fan_in(7, 1, 2)], claimer=2) == [7]  # invocation 2 completes it
    # invocation 2 died before running task 7: its retry finds the counter complete and claims again
    assert job.bump_counters([fan_in(7, 1, 2)], claimer=2, retry=True) == [7]
    # a duplicate of invocation 2 (not a retry) and a retry of invocation 1 claim nothing
    assert job.bump_counters([fan_in(7, 1, 2)], claimer=2) == []
    assert job.bump_counters([fan_in(7, 0, 2)], claimer=1, retry=True) == []


def test_claim_start_lets_one_delivery_of_each_attempt_run(job):
    assert job.claim_start(4, attempt=0) == "run"
    assert job.claim_start(4, attempt=0) == "duplicate"  # Lambda delivered the invoke twice
    assert job.claim_start(4, attempt=1) == "run"  # the retry of an executor that died
    assert job.claim_start(4, attempt=0) == "duplicate"  # a late copy of the first attempt
    assert job.claim_start(5, attempt=0) == "run"
    job.end_job(JobEvent.cancelled("cancelled"))
    assert job.claim_start(6, attempt=0) == "ended"


def test_a_cleaned_up_job_counts_as_ended_and_takes_no_late_writes(stores):
    job = new_job(stores)
    job.flush_counts({"tasks": 1})
    job.cleanup(n_tasks=4, n_paths=1)
    assert job.has_ended()
    assert job.claim_start(0, attempt=0) == "ended"
    job.flush_counts({"tasks": 1})  # a straggler's late report
    assert all(v == [] for v in job_keys(stores, job).values())


# --- results and job ends -------------------------------------------------------------------------


def test_store_result_once_only_and_done_event_once(stores):
    job = new_job(stores, n_outputs=2)
    try:
        assert job.store_result(0, b"first") is False
        assert job.store_result(0, b"second") is False  # a retry neither overwrites nor counts
        assert job.store_result(1, b"other") is True
        assert job.store_result(1, b"again") is False
        assert stores.mds.llen(job.keys.events) == 1
        assert job.wait_event(timeout=1) == JobEvent.done()
        assert job.results([0, 1]) == {0: b"first", 1: b"other"}
    finally:
        job.cleanup(n_tasks=2, n_paths=0)


def test_concurrent_store_result_pushes_one_done_event(stores):
    n = 8
    job = new_job(stores, n_outputs=n)
    try:
        # every output stored twice, concurrently: exactly one call sees the job complete
        lasts = run_threads(2 * n, lambda i: new_job(stores, n, job.job_id).store_result(i % n, b"v%d" % i))
        assert lasts.count(True) == 1
        assert stores.mds.llen(job.keys.events) == 1
        assert stores.mds.scard(job.keys.outputs_done) == n
        assert set(job.results(list(range(n)))) == set(range(n))
    finally:
        job.cleanup(n_tasks=n, n_paths=0)


def test_results_missing_raises_lookup_error(job):
    with pytest.raises(LookupError, match="task id 3"):
        job.results([3])


def test_end_job_first_caller_wins(stores, job):
    assert not job.has_ended()
    firsts = run_threads(
        8, lambda i: new_job(stores, job_id=job.job_id).end_job(JobEvent.task_failed(f"t{i}", ValueError(i)))
    )
    assert firsts.count(True) == 1
    winner = firsts.index(True)
    assert job.has_ended()
    events = stores.mds.lrange(job.keys.events, 0, -1)
    assert [JobEvent.from_json(e).key for e in events] == [repr(f"t{winner}")]
    assert stores.mds.get(job.keys.ended) == b"failed"


def test_end_job_later_reasons_are_ignored(job):
    assert job.end_job(JobEvent.cancelled("stop")) is True
    assert job.end_job(JobEvent.task_failed("t", ValueError())) is False
    assert job.wait_event(timeout=1) == JobEvent.cancelled("stop")
    assert job.stores.mds.get(job.keys.ended) == b"cancelled"


# --- values, plans, namespacing ---------------------------------------------------------------------


def test_values_round_trip_and_missing_value_is_named(job):
    job.put_value(3, b"three")
    job.put_value(4, b"")
    assert job.get_values([3, 4]) == {3: b"three", 4: b""}
    assert job.stats.kv_bytes_written == 5 and job.stats.kv_bytes_read == 5
    with pytest.raises(LookupError, match="task id 7"):
        job.get_values([3, 7])


def test_plan_round_trip_in_batches(job):
    blobs = [b"path-%d" % p for p in range(2500)]  # more than one pipeline batch
    job.write_plan(blobs, {"n_tasks": 2500})
    assert job.get_path(0) == b"path-0" and job.get_path(2499) == b"path-2499"
    assert json.loads(job.stores.mds.get(job.keys.meta)) == {"n_tasks": 2500}
    with pytest.raises(LookupError, match="path 2500"):
        job.get_path(2500)
    job.cleanup(n_tasks=0, n_paths=2500)
    assert job_keys(job.stores, job) == {name: [] for name in job_keys(job.stores, job)}


def test_values_and_counters_are_namespaced_by_job_id(stores):
    a, b = new_job(stores), new_job(stores)
    try:
        a.put_value(0, b"from-a")
        b.put_value(0, b"from-b")
        assert a.get_values([0]) == {0: b"from-a"}
        assert b.get_values([0]) == {0: b"from-b"}
        # the same counter slot in another job is a different counter
        assert a.bump_counters([fan_in(1, 0, 2)]) == []
        assert b.bump_counters([fan_in(1, 1, 2)]) == []
        assert a.store_result(0, b"ra") is True and b.store_result(0, b"rb") is True
        a.cleanup(n_tasks=2, n_paths=0)
        assert b.get_values([0]) == {0: b"from-b"}  # cleaning one job leaves the other alone
        assert b.results([0]) == {0: b"rb"}
    finally:
        a.cleanup(n_tasks=2, n_paths=0)
        b.cleanup(n_tasks=2, n_paths=0)


def fill_job(job: JobStorage, n_tasks: int) -> None:
    """Write every kind of key a job can have."""
    job.write_plan([b"p0", b"p1"], {"n_tasks": n_tasks})
    for t in range(n_tasks):
        job.put_value(t, b"x" * t)
    job.bump_counters([fan_in(t, 0, 2) for t in range(n_tasks)])
    job.bump_counters([fan_in(3, 1, 2)], claimer=1)  # completes counter 3: records its claimer
    assert job.claim_start(1, attempt=0) == "run"
    job.store_result(0, b"result")
    job.end_job(JobEvent.task_failed("t", ValueError()))
    job.flush_counts({"tasks": 3, "busy_seconds": 0.5})


def test_every_key_has_a_ttl_and_cleanup_removes_all(stores):
    job = new_job(stores, n_outputs=1)
    n_tasks = 20
    fill_job(job, n_tasks)
    keys = job_keys(stores, job)
    # the MDS may also be a KV shard, so count distinct names:
    # meta, 2 paths, values, counters, a claimer, a started mark, result, outputs-done, events, ended, stats
    assert len(set().union(*keys.values())) == 2 * n_tasks + 10
    for name, names in keys.items():
        client = stores.mds if name == "mds" else stores.shards[name]
        for key in names:
            assert 0 < client.ttl(key) <= TTL, f"{key!r} on {name} has no TTL"
    job.cleanup(n_tasks=n_tasks, n_paths=2)
    assert all(v == [] for v in job_keys(stores, job).values())


# --- several KV shards ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharded():
    with LocalCluster(num_kv_shards=3, n_workers=1) as c:
        yield c


def test_values_spread_over_shards_and_read_back(sharded):
    stores = sharded.stores
    assert len(stores.shards) == 3
    job = new_job(stores)
    n = 200
    try:
        for t in range(n):
            job.put_value(t, b"value-%d" % t)
        per_shard = {name: len(v) for name, v in job_keys(stores, job).items() if name != "mds"}
        assert sum(per_shard.values()) == n
        assert sum(1 for count in per_shard.values() if count) > 1, per_shard
        before = job.stats.round_trips
        assert job.get_values(range(n)) == {t: b"value-%d" % t for t in range(n)}
        assert job.stats.round_trips - before == sum(1 for c in per_shard.values() if c)  # one MGET a shard
    finally:
        job.cleanup(n_tasks=n, n_paths=0)
    assert all(v == [] for v in job_keys(stores, job).values())


def test_sharded_cleanup_and_ttl(sharded):
    stores = sharded.stores
    job = new_job(stores)
    fill_job(job, 50)
    for name, names in job_keys(stores, job).items():
        client = stores.mds if name == "mds" else stores.shards[name]
        assert all(0 < client.ttl(k) <= TTL for k in names)
    job.cleanup(n_tasks=50, n_paths=2)
    assert all(v == [] for v in job_keys(stores, job).values())


def test_job_runs_end_to_end_on_three_shards(sharded):
    # a reduction tree: every fan-in value goes through the KV shards
    dsk = {("x", i): i for i in range(32)}
    level, width = 0, 32
    while width > 1:
        for i in range(width // 2):
            dsk[("s", level + 1, i)] = (add, ("x", 2 * i) if level == 0 else ("s", level, 2 * i),
                                         ("x", 2 * i + 1) if level == 0 else ("s", level, 2 * i + 1))
        width //= 2
        level += 1
    client = Client(sharded)
    assert client.get(dsk, ("s", level, 0)) == sum(range(32))
    assert client.last_report.kv_bytes_written > 0
    # the finished job left nothing behind on any server
    leftovers = [k for c in [sharded.stores.mds, *sharded.stores.shards.values()]
                 for k in c.scan_iter(match=f"wk:{client.last_report.job_id}:*")]
    assert leftovers == []


def test_a_cancel_after_cleanup_leaves_no_keys_behind(stores):
    job = JobStorage(stores, f"test-{uuid.uuid4().hex[:12]}", 600, 1)
    assert job.end_job(JobEvent.task_failed("t", ValueError()))  # a job that failed...
    job.cleanup(n_tasks=1, n_paths=0)  # ...and was cleaned up
    assert not job.end_job(JobEvent.cancelled("cancelled"))  # a late cancel
    assert list(stores.mds.scan_iter(match=f"{job.keys.prefix}*")) == []


@pytest.mark.parametrize("cleaned_up", [False, True])
def test_a_result_stored_after_the_job_ended_is_refused_and_leaves_no_key(stores, cleaned_up):
    """An executor whose task returns after a cancel (or its cleanup) within one check interval
    never looks at the job's end; storing its result must still write nothing."""
    job = JobStorage(stores, f"test-{uuid.uuid4().hex[:12]}", 600, 1)
    assert job.end_job(JobEvent.cancelled("cancelled"))
    if cleaned_up:
        job.cleanup(n_tasks=1, n_paths=0)
    assert job.store_result(0, b"late") is False
    left = sorted(stores.mds.scan_iter(match=f"{job.keys.prefix}*"))
    assert left == ([] if cleaned_up else sorted([job.keys.ended.encode(), job.keys.events.encode()]))
