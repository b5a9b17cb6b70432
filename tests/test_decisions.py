"""The executor's pure decisions (wukong.decisions): sizes, storing, clustering, inlining, becoming.

Records are built by hand, or by the real schedule generator, so each rule is checked at its
boundaries without Redis or workers.
"""

from __future__ import annotations

from operator import add

import pytest
from dask._task_spec import DataNode
from dask.utils_test import inc

from wukong.decisions import PAYLOAD_RESERVE, after_task, inline_value, needs_size, split_ready, still_needed
from wukong.graph import normalize_graph
from wukong.schedule import DependentRef, TaskRecord, generate_schedules

LIMIT = 1024 * 1024  # payload limit
BIG = 10_000  # big_task_threshold


def ref(tid: int, n_deps: int = 1, slot: int = 0) -> DependentRef:
    return DependentRef(tid=tid, path=0, slot=slot, n_deps=n_deps)


def record(*dependents: DependentRef, is_output: bool = False, become: int | None = None,
           deps: tuple = ()) -> TaskRecord:
    if become is None and dependents:
        become = dependents[0].tid
    return TaskRecord(tid=0, key="t", node=DataNode("t", 1), deps=deps, dependents=tuple(dependents),
                      become=become, is_output=is_output, path=0)


# --- needs_size --------------------------------------------------------------------------------


def test_chain_link_needs_no_size():
    assert needs_size(record(ref(1))) is False


@pytest.mark.parametrize(
    "rec",
    [
        record(ref(1), is_output=True),  # a requested chain link is still published
        record(),  # a sink
        record(ref(1), ref(2)),  # a fan-out
        record(ref(1, n_deps=2)),  # a single dependent that is a fan-in
    ],
    ids=["output-link", "sink", "fan-out", "fan-in"],
)
def test_everything_but_a_chain_link_needs_size(rec):
    assert needs_size(rec) is True


def test_chain_link_steps_with_no_size():
    steps = after_task(record(ref(1)), None, LIMIT, BIG)
    assert steps.ready == (1,)
    assert not steps.store_value and not steps.fan_in and not steps.publish_result and not steps.clustered


# --- fan-in -------------------------------------------------------------------------------------


@pytest.mark.parametrize("nbytes", [1, BIG - 1, BIG, LIMIT * 4])
def test_fan_in_forces_store(nbytes):
    fan_in = ref(5, n_deps=3, slot=2)
    steps = after_task(record(fan_in), nbytes, LIMIT, BIG)
    assert steps.store_value is True  # the claiming executor reads the value from the KV store
    assert steps.fan_in == (fan_in,)
    assert steps.ready == ()


def test_mixed_fan_in_and_ready_dependents():
    steps = after_task(record(ref(1), ref(2, n_deps=2, slot=1), ref(3)), 100, LIMIT, BIG)
    assert steps.store_value
    assert [r.tid for r in steps.fan_in] == [2]
    assert steps.ready == (1, 3)


# --- clustering ---------------------------------------------------------------------------------


def test_big_output_clusters_ready_dependents_locally():
    rec = record(ref(1), ref(2), ref(3), become=2)
    steps = after_task(rec, BIG, LIMIT, BIG)
    assert steps.clustered and not steps.store_value
    local, remote = split_ready(list(steps.ready), rec.become, steps.clustered)
    assert sorted(local) == [1, 2, 3] and remote == []


def test_just_below_threshold_is_not_clustered():
    steps = after_task(record(ref(1), ref(2)), BIG - 1, LIMIT, BIG)
    assert not steps.clustered
    local, remote = split_ready(list(steps.ready), 1, steps.clustered)
    assert local == [1] and remote == [2]


def test_big_sink_is_not_clustered():
    steps = after_task(record(is_output=True), BIG * 10, LIMIT, BIG)
    assert not steps.clustered and steps.publish_result and not steps.store_value


def test_big_output_with_fan_in_still_stores():
    steps = after_task(record(ref(1), ref(2, n_deps=2)), BIG * 2, LIMIT, BIG)
    assert steps.clustered and steps.store_value


def test_zero_threshold_clusters_everything_with_dependents():
    steps = after_task(record(ref(1), ref(2)), 0, LIMIT, 0)
    assert steps.clustered


# --- inline limit -------------------------------------------------------------------------------


def test_inline_limit_boundary():
    assert inline_value(LIMIT - PAYLOAD_RESERVE, LIMIT)
    assert not inline_value(LIMIT - PAYLOAD_RESERVE + 1, LIMIT)
    assert inline_value(0, PAYLOAD_RESERVE)
    assert not inline_value(1, PAYLOAD_RESERVE)


def test_fan_out_of_inlineable_value_does_not_store():
    steps = after_task(record(ref(1), ref(2)), LIMIT - PAYLOAD_RESERVE, LIMIT, LIMIT * 10)
    assert not steps.store_value and not steps.clustered


def test_fan_out_of_too_big_to_inline_value_stores():
    # too big for a payload but under the clustering threshold: invoked executors read the KVS
    steps = after_task(record(ref(1), ref(2)), LIMIT, LIMIT, LIMIT * 10)
    assert steps.store_value and not steps.clustered


def test_single_ready_dependent_never_needs_store():
    # the executor becomes its only dependent, so even a non-inlineable value stays in memory
    steps = after_task(record(ref(1), is_output=True), LIMIT * 3, LIMIT, LIMIT * 10)
    assert not steps.store_value and steps.publish_result and steps.ready == (1,)


# --- split_ready --------------------------------------------------------------------------------


def test_split_ready_prefers_become():
    assert split_ready([4, 7, 9], 7, False) == ([7], [4, 9])


def test_split_ready_falls_back_to_first_ready():
    assert split_ready([4, 7, 9], 11, False) == ([4], [7, 9])
    assert split_ready([4, 7], None, False) == ([4], [7])


def test_split_ready_nothing_ready():
    assert split_ready([], 3, False) == ([], [])
    assert split_ready([], 3, True) == ([], [])


def test_split_ready_single():
    assert split_ready([3], 3, False) == ([3], [])


# --- still_needed and decisions on real schedules ---------------------------------------------------


def test_still_needed_collects_queued_dependencies():
    a = record(deps=((1, "a"), (2, "b")))
    b = record(deps=((2, "b"), (5, "e")))
    assert still_needed([a, b]) == {1, 2, 5}
    assert still_needed([]) == set()


def test_decisions_on_a_generated_diamond():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "a"), "d": (add, "b", "c")}
    graph = normalize_graph(dsk, "d")
    records = generate_schedules(graph).paths[0].records
    a, b, d = (records[graph.id_of(k)] for k in "abd")

    a_steps = after_task(a, 10, LIMIT, BIG)  # fan-out: two ready dependents
    assert sorted(a_steps.ready) == sorted(graph.dependents[a.tid]) and not a_steps.store_value
    local, remote = split_ready(list(a_steps.ready), a.become, a_steps.clustered)
    assert local == [a.become] and len(remote) == 1

    assert needs_size(b)  # b feeds a fan-in, so its size matters
    b_steps = after_task(b, 10, LIMIT, BIG)
    assert b_steps.store_value and [r.tid for r in b_steps.fan_in] == [d.tid]

    d_steps = after_task(d, 10, LIMIT, BIG)
    assert d_steps.publish_result and d_steps.ready == () and not d_steps.store_value

