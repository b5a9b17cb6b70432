"""wukong.testing: the whole executor in memory. Random DAGs give dask.get's answers in any
invocation order and at any payload limit, and the memory store answers every storage call the
way the Redis scripts do (each contract case runs against both)."""

from __future__ import annotations

import random
import uuid
from operator import add

import dask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_property import graphs  # the property suite's graph shapes and node styles

from wukong.job_events import JobEvent
from wukong.schedule import DependentRef
from wukong.storage import JobStorage
from wukong.testing import MemoryJob, MemoryRun, run_in_memory


@settings(max_examples=400, deadline=None)
@given(case=graphs(pads=(0, 10, 3000)), seed=st.integers(0, 2**32 - 1),
       payload_limit=st.sampled_from([70 * 1024, 256 * 1024]), big=st.sampled_from([2000, 200 << 20]))
def test_random_graphs_in_any_invocation_order_match_dask_get(case, seed, payload_limit, big):
    dsk, keys = case
    runs: list[MemoryRun] = []
    got = run_in_memory(dsk, keys, payload_limit=payload_limit, big_task_threshold=big,
                        rng=random.Random(seed), runs=runs)
    assert got == dask.get(dsk, keys)
    (run,) = runs
    # every execution finished and was counted: the job's report would settle
    assert run.job.counts.get("executors_finished") == run.executors


def test_a_task_error_is_raised_as_its_own_type():
    with pytest.raises(ZeroDivisionError) as raised:
        run_in_memory({"a": 1, "b": (lambda x: x / 0, "a"), "c": (add, "b", 1)}, "c")
    assert any("'b'" in note for note in raised.value.__notes__)


def test_a_wide_graph_runs_in_memory_quickly():
    dsk = {("x", i): (add, i, 1) for i in range(2000)}
    dsk["total"] = (sum, list(dsk))
    assert run_in_memory(dsk, "total") == sum(range(1, 2001))


# --- the storage contract, against memory and against Redis -------------------------------------

@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryJob("contract", 2, [])
        return
    stores = request.getfixturevalue("stores")
    job = JobStorage(stores, f"contract-{uuid.uuid4().hex[:12]}", 600, 2)
    yield job
    job.cleanup(n_tasks=16, n_paths=0)


def ref(tid, slot, n):
    return DependentRef(tid=tid, path=0, slot=slot, n_deps=n)


def test_contract_the_bump_that_completes_a_counter_claims_it_once(store):
    assert store.bump_counters([ref(5, 0, 2)], (1, b"v1"), claimer=1) == []
    assert store.bump_counters([ref(5, 0, 2)], claimer=1) == []  # a duplicate bit completes nothing
    assert store.bump_counters([ref(5, 1, 2)], (2, b"v2"), claimer=2) == [5]
    assert store.bump_counters([ref(5, 1, 2)], claimer=2) == []  # a duplicate of the claimer
    assert store.bump_counters([ref(5, 1, 2)], claimer=2, retry=True) == [5]  # its retry claims again
    assert store.bump_counters([ref(5, 0, 2)], claimer=1, retry=True) == []  # a non-claimer's retry does not
    assert store.get_values([1, 2]) == {1: b"v1", 2: b"v2"}


def test_contract_a_start_runs_once_per_attempt_and_not_after_the_end(store):
    assert store.claim_start(3, 0) == "run"
    assert store.claim_start(3, 0) == "duplicate"
    assert store.claim_start(3, 1) == "run"
    store.end_job(JobEvent.cancelled("stop"))
    assert store.claim_start(4, 0) == "ended"


def test_contract_results_count_once_and_the_last_pushes_done(store):
    assert store.store_result(0, b"a") is False
    assert store.store_result(0, b"again") is False
    assert store.store_result(1, b"b") is True
    assert store.store_result(1, b"b") is False
    assert not store.has_ended()


def test_contract_the_first_end_wins_and_a_later_result_is_refused(store):
    assert store.end_job(JobEvent.task_failed("t", ValueError("x"))) is True
    assert store.end_job(JobEvent.cancelled("late")) is False
    assert store.has_ended()
    assert store.store_result(0, b"a") is False and store.store_result(1, b"b") is False


def test_contract_one_holder_per_counter(store):
    store.bump_counters([ref(9, 0, 3)], claimer=1)
    assert store.poll_counters([ref(9, 1, 3)], claimer=2) == [(1, False)]
    assert store.poll_counters([ref(9, 1, 3)], claimer=2) == [(1, False)]  # the holder may poll again
    assert store.poll_counters([ref(9, 0, 3)], claimer=1) is None  # another holds it


def test_contract_a_missing_value_is_a_lookup_error(store):
    with pytest.raises(LookupError, match="task id 8"):
        store.get_values([8])
