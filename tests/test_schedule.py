"""Graph intake and static schedule generation, as pure functions (no Redis, no workers).

Checks ``normalize_graph`` (culling, topological numbering, errors) and the invariants every
``JobPlan`` must hold on hand-made, random and very large DAGs.
"""

from __future__ import annotations

import random
from operator import add

import pytest
from dask._task_spec import DataNode, Task, TaskRef
from dask.highlevelgraph import HighLevelGraph
from dask.utils_test import inc
from hypothesis import given, settings
from hypothesis import strategies as st

from wukong.errors import GraphCycleError, InvalidGraphError
from wukong.graph import TaskGraph, normalize_graph
from wukong.schedule import FRONTIER_COPY_MAX_DEGREE, SEGMENT_RECORDS, JobPlan, generate_schedules


def total(*xs):
    return sum(xs)


def random_dag(rng: random.Random, n: int, max_deps: int = 4) -> dict:
    """Task i reads up to ``max_deps`` random earlier tasks: any DAG shape can come out."""
    dsk = {}
    for i in range(n):
        k = rng.randint(0, min(i, max_deps))
        deps = rng.sample(range(i), k)
        dsk[f"t{i}"] = (total, *[f"t{d}" for d in deps]) if deps else i
    return dsk


def check_plan(graph: TaskGraph, plan: JobPlan) -> None:
    """Every invariant a plan must satisfy, with messages that say which one broke."""
    n = len(graph)
    assert plan.n_tasks == n
    assert plan.output_ids == graph.output_ids

    # one path per leaf, each starting at its leaf in segment pid = leaf index; later segments
    # of long paths follow and start at no leaf
    assert sorted(p.leaf for p in plan.leaf_paths) == sorted(graph.leaves)
    assert plan.n_leaves == len(graph.leaves)
    assert all(p.leaf is None for p in plan.paths[plan.n_leaves:])
    assert [p.pid for p in plan.paths] == list(range(len(plan.paths)))

    # every task owned by exactly one path
    owners: dict[int, int] = {}
    for path in plan.paths:
        for tid, rec in path.records.items():
            assert rec.tid == tid
            if rec.path == path.pid:
                assert tid not in owners, f"task {tid} owned by paths {owners[tid]} and {path.pid}"
                owners[tid] = path.pid
        if path.leaf is not None:
            assert path.records[path.leaf].path == path.pid, "a path must own its leaf"
        assert sum(r.path == path.pid for r in path.records.values()) <= SEGMENT_RECORDS, "segment too long"
    assert sorted(owners) == list(range(n)), "some task is owned by no path"

    n_edges = sum(len(d) for d in graph.dependencies)
    assert sum(len(p.records) for p in plan.paths) <= n + n_edges, "schedules are not O(V + E)"

    for path in plan.paths:
        own = {t: r for t, r in path.records.items() if r.path == path.pid}
        foreign = {t for t, r in path.records.items() if r.path != path.pid}
        frontier = {ref.tid for r in own.values() for ref in r.dependents if ref.path != path.pid}
        small = {t for t in frontier
                 if len(graph.dependencies[t]) + len(graph.dependents[t]) <= FRONTIER_COPY_MAX_DEGREE}
        # small frontier records are present, and a path carries no other foreign record
        assert foreign == small
        for tid in own:
            if path.leaf is not None and tid != path.leaf:
                # the DFS only reaches a task through one of its dependencies on the same path, which
                # placed it earlier: in a path's first segment (a prefix), that is the same segment
                assert any(owners[d] == path.pid for d in graph.dependencies[tid]), tid

        for tid, rec in path.records.items():
            assert rec.key == graph.keys[tid]
            assert rec.node is graph.nodes[tid]
            assert rec.deps == tuple((d, graph.keys[d]) for d in graph.dependencies[tid])
            assert rec.is_output == (tid in graph.output_ids)
            assert rec.path == owners[tid]
            assert [ref.tid for ref in rec.dependents] == list(graph.dependents[tid])
            if graph.dependents[tid]:
                assert rec.become in graph.dependents[tid], "become must be a dependent"
            else:
                assert rec.become is None
            for ref in rec.dependents:
                assert ref.path == owners[ref.tid]
                assert ref.n_deps == len(graph.dependencies[ref.tid])
                assert graph.dependencies[ref.tid][ref.slot] == tid
                assert ref.is_fan_in == (ref.n_deps > 1)

    # the slots of a task's dependencies are exactly 0..n_deps-1: its counter can complete
    slots: dict[int, list[int]] = {t: [] for t in range(n)}
    for path in plan.paths:
        for tid, rec in path.records.items():
            if rec.path == path.pid:
                for ref in rec.dependents:
                    slots[ref.tid].append(ref.slot)
    for tid in range(n):
        assert sorted(slots[tid]) == list(range(len(graph.dependencies[tid])))


def test_check_plan_catches_a_broken_plan():
    # the invariant checker itself must be able to fail, or the tests below prove nothing
    import dataclasses

    graph = normalize_graph({"x": 1, "y": 2, "z": (add, "x", "y")}, "z")
    plan = generate_schedules(graph)
    path = plan.paths[0]
    leaf = path.records[path.leaf]
    bad_ref = dataclasses.replace(leaf.dependents[0], slot=1 - leaf.dependents[0].slot)
    path.records[path.leaf] = dataclasses.replace(leaf, dependents=(bad_ref,))
    with pytest.raises(AssertionError):
        check_plan(graph, plan)


def plan_for(dsk, keys) -> tuple[TaskGraph, JobPlan]:
    graph = normalize_graph(dsk, keys)
    plan = generate_schedules(graph)
    check_plan(graph, plan)
    return graph, plan


# --- normalize_graph ---------------------------------------------------------------------------


def test_normalize_culls_to_requested_keys():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b"), "unused": (inc, "a"), "other": 7}
    graph = normalize_graph(dsk, "c")
    assert set(graph.keys) == {"a", "b", "c"}
    assert len(graph) == 3
    assert graph.output_ids == (graph.id_of("c"),)


def test_normalize_numbers_topologically():
    rng = random.Random(7)
    dsk = random_dag(rng, 200)
    keys = [f"t{i}" for i in range(200)]
    rng.shuffle(keys)
    graph = normalize_graph(dsk, keys)
    assert len(graph) == 200
    for tid, deps in enumerate(graph.dependencies):
        assert all(d < tid for d in deps)
        assert graph.index[graph.keys[tid]] == tid
    # dependents is the exact inverse of dependencies
    edges = {(d, t) for t, deps in enumerate(graph.dependencies) for d in deps}
    assert edges == {(d, t) for d, users in enumerate(graph.dependents) for t in users}
    assert graph.leaves == [t for t in range(200) if not graph.dependencies[t]]


def test_normalize_is_deterministic():
    dsk = random_dag(random.Random(3), 80)
    a = normalize_graph(dict(dsk), ["t79", "t40"])
    b = normalize_graph(dict(reversed(list(dsk.items()))), ["t79", "t40"])
    assert a.keys == b.keys and a.dependencies == b.dependencies


def test_normalize_outputs_and_requested_shape():
    dsk = {"x": 1, "y": (inc, "x"), ("z", 0): (add, "x", "y")}
    keys = [["y", [("z", 0)]], "y", "x"]
    graph = normalize_graph(dsk, keys)
    assert graph.requested == keys
    assert [graph.keys[t] for t in graph.output_ids] == ["y", ("z", 0), "x"]  # deduplicated, first-seen


def test_normalize_single_key_and_task_spec_nodes():
    dsk = {"a": DataNode("a", 2), "b": Task("b", add, TaskRef("a"), TaskRef("a"))}
    graph = normalize_graph(dsk, "b")
    assert graph.keys == ("a", "b")
    assert graph.dependencies == ((), (0,))  # a key read twice is still one dependency
    assert graph.requested == "b"


def test_normalize_high_level_graph():
    hlg = HighLevelGraph({"l1": {"x": 1}, "l2": {"y": (inc, "x")}}, {"l1": set(), "l2": {"l1"}})
    graph = normalize_graph(hlg, ["y"])
    assert graph.keys == ("x", "y")


def test_normalize_errors_name_the_key():
    with pytest.raises(KeyError, match="nope"):
        normalize_graph({"x": 1}, ["x", "nope"])
    with pytest.raises(KeyError, match="'missing'"):
        normalize_graph({"y": Task("y", inc, TaskRef("missing"))}, "y")
    with pytest.raises(GraphCycleError, match="'p'|'q'"):
        normalize_graph({"p": (inc, "q"), "q": (inc, "p"), "r": (inc, "q")}, "r")
    with pytest.raises(InvalidGraphError, match="NoneType"):
        normalize_graph(None, "x")


def test_cycle_message_names_a_key_on_the_cycle_not_a_downstream_one():
    # "down1"/"down2" are stuck only because they depend on the cycle
    dsk = {"c1": (inc, "c2"), "c2": (inc, "c1"), "down1": (inc, "c1"), "down2": (inc, "down1")}
    with pytest.raises(GraphCycleError, match="'c1'|'c2'"):
        normalize_graph(dsk, "down2")


def test_normalize_cycle_outside_requested_part_is_ignored():
    dsk = {"ok": 1, "c1": (inc, "c2"), "c2": (inc, "c1")}
    assert normalize_graph(dsk, "ok").keys == ("ok",)


def test_normalize_100k_chain_without_recursion():
    n = 100_000
    dsk = {f"x{i + 1}": (inc, f"x{i}") for i in range(n)}
    dsk["x0"] = 0
    graph = normalize_graph(dsk, f"x{n}")
    assert len(graph) == n + 1
    assert graph.keys[0] == "x0" and graph.keys[-1] == f"x{n}"


# --- generate_schedules: hand-made DAGs ------------------------------------------------------------


def test_single_task():
    graph, plan = plan_for({"x": 1}, "x")
    assert len(plan.paths) == 1
    rec = plan.paths[0].records[0]
    assert rec.become is None and rec.dependents == () and rec.is_output


def test_chain_is_one_path_that_becomes_each_next_task():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b"), "d": (inc, "c")}
    graph, plan = plan_for(dsk, "d")
    assert len(plan.paths) == 1
    records = plan.paths[0].records
    assert [records[t].become for t in range(4)] == [1, 2, 3, None]


def test_diamond():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "a"), "d": (add, "b", "c")}
    graph, plan = plan_for(dsk, "d")
    assert len(plan.paths) == 1  # one leaf
    d = graph.id_of("d")
    refs = [ref for rec in plan.paths[0].records.values() for ref in rec.dependents if ref.tid == d]
    assert sorted(ref.slot for ref in refs) == [0, 1] and all(ref.n_deps == 2 for ref in refs)


def test_a_wide_fan_in_is_not_copied_into_every_upstream_path():
    # 2,000 leaves feeding one sum: copying the sum's record (2,000 deps) into 2,000 paths would make
    # the schedules quadratic; only its owning path holds it
    n = 2000
    dsk = {("x", i): (inc, i) for i in range(n)}
    dsk["total"] = (sum, [("x", i) for i in range(n)])
    graph = normalize_graph(dsk, ["total"])
    plan = generate_schedules(graph)
    total = graph.id_of("total")
    holders = [p.pid for p in plan.paths if total in p.records]
    assert holders == [plan.paths[0].records[total].path]
    assert sum(len(p.records) for p in plan.paths) == n + 1  # each leaf once, and the sum once


def test_two_leaves_fan_in_gives_frontier_record():
    dsk = {"x": 1, "y": 2, "z": (add, "x", "y")}
    graph, plan = plan_for(dsk, "z")
    assert len(plan.paths) == 2
    z = graph.id_of("z")
    owner = next(p for p in plan.paths if z in p.records and p.records[z].path == p.pid)
    other = next(p for p in plan.paths if p.pid != owner.pid)
    assert z in other.records and other.records[z].path == owner.pid
    ref = other.records[other.leaf].dependents[0]
    assert ref.tid == z and ref.path == owner.pid and ref.is_fan_in


def test_fan_out_becomes_first_dependent_and_invokes_others():
    dsk = {"root": 1, **{f"c{i}": (inc, "root") for i in range(5)}}
    graph, plan = plan_for(dsk, [f"c{i}" for i in range(5)])
    root = plan.paths[0].records[graph.id_of("root")]
    assert root.become == graph.dependents[graph.id_of("root")][0]
    assert len(root.dependents) == 5 and not any(ref.is_fan_in for ref in root.dependents)


def test_multiple_outputs_including_intermediate():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b")}
    graph, plan = plan_for(dsk, ["c", "a", "b"])
    flagged = {t for p in plan.paths for t, r in p.records.items() if r.is_output}
    assert flagged == {0, 1, 2}


# --- generate_schedules: random and large DAGs ----------------------------------------------------


@pytest.mark.parametrize("seed", range(60))
def test_random_dag_invariants(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 120)
    dsk = random_dag(rng, n, max_deps=rng.choice([1, 2, 3, 6]))
    keys = rng.sample(sorted(dsk), rng.randint(1, min(n, 5)))
    plan_for(dsk, keys)


@st.composite
def dags(draw):
    n = draw(st.integers(1, 60))
    dsk = {}
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=4, unique=True)) if i else []
        dsk[f"t{i}"] = (total, *[f"t{d}" for d in deps]) if deps else i
    keys = draw(st.lists(st.sampled_from(sorted(dsk)), min_size=1, max_size=4))
    return dsk, keys


@settings(max_examples=150, deadline=None)
@given(dags())
def test_hypothesis_dag_invariants(case):
    dsk, keys = case
    plan_for(dsk, keys)


def test_100k_chain_generates_without_recursion():
    n = 100_000
    dsk = {f"x{i + 1}": (inc, f"x{i}") for i in range(n)}
    dsk["x0"] = 0
    graph = normalize_graph(dsk, f"x{n}")
    plan = generate_schedules(graph)
    check_plan(graph, plan)
    # one leaf, so one path, stored in segments of SEGMENT_RECORDS tasks in chain order
    assert plan.n_leaves == 1 and len(plan.paths) == -(-(n + 1) // SEGMENT_RECORDS)
    first, second = plan.paths[0], plan.paths[1]
    assert sorted(t for t, r in first.records.items() if r.path == 0) == list(range(SEGMENT_RECORDS))
    # the chain's step into the next segment is a frontier copy: crossing costs no read
    last = first.records[SEGMENT_RECORDS - 1]
    assert last.become == SEGMENT_RECORDS and first.records[SEGMENT_RECORDS].path == second.pid


def test_wide_fan_out_tree_and_reduction_tree():
    # a fan-out tree (one root, 10 children per node, 4 levels) ...
    dsk = {"n": 0}
    level = ["n"]
    for depth in range(4):
        nxt = []
        for parent in level:
            for c in range(10):
                key = f"{parent}.{c}"
                dsk[key] = (inc, parent)
                nxt.append(key)
        level = nxt
    graph = normalize_graph(dsk, level)
    plan = generate_schedules(graph)
    check_plan(graph, plan)
    assert plan.n_leaves == 1 and len(graph) == 11_111
    assert len(plan.paths) == -(-11_111 // SEGMENT_RECORDS)  # the one path, in segments

    # ... and a binary reduction tree over 2**13 leaves (one path per leaf)
    width = 2**13
    red = {("r", 0, i): i for i in range(width)}
    level_n, depth = width, 0
    while level_n > 1:
        for i in range(level_n // 2):
            red[("r", depth + 1, i)] = (add, ("r", depth, 2 * i), ("r", depth, 2 * i + 1))
        level_n //= 2
        depth += 1
    graph = normalize_graph(red, ("r", depth, 0))
    plan = generate_schedules(graph)
    check_plan(graph, plan)
    assert len(plan.paths) == width
