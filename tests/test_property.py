"""Property tests: random DAGs of many shapes give the same answers on Wukong as on Dask's
reference schedulers (dask.get, dask.local.get_sync), requested as single keys or nested lists.
"""

from __future__ import annotations

from operator import add

import dask
import pytest
from dask._task_spec import Alias, DataNode, Task, TaskRef
from dask.local import get_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wukong import Client, LocalCluster
from wukong.graph import normalize_graph

# function-scoped fixtures are fine here: the session client is shared, not reset per example
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- task functions (module level, so they pickle by reference as well as by value) -------------


def combine(tag, *parts):
    """A value that depends on its inputs' values and order, so a wrong wiring shows."""
    return (tag * 31 + sum((i + 1) * p[0] for i, p in enumerate(parts))) % 1_000_003, parts[0][1] if parts else b""


def leaf(tag, pad):
    return tag, b"." * pad


def first(value):
    return value[0]


# --- graph strategies --------------------------------------------------------------------------------


def key_of(i: int, tuple_keys: bool):
    return ("t", i) if tuple_keys else f"t{i}"


def node_for(i: int, deps: list[int], pad: int, style: str, tuple_keys: bool):
    """Task i in one of the forms Dask may hand a scheduler."""
    key = key_of(i, tuple_keys)
    dep_keys = [key_of(d, tuple_keys) for d in deps]
    if not deps:
        if style == "spec":
            return DataNode(key, leaf(i, pad))
        return (leaf, i, pad)
    if style == "spec":
        return Task(key, combine, i, *[TaskRef(k) for k in dep_keys])
    if style == "nested" and len(dep_keys) >= 2:
        # an inner task inside the arguments, as Dask's legacy graphs allow
        return (combine, i, (combine, -i, dep_keys[0]), *dep_keys[1:])
    return (combine, i, *dep_keys)


@st.composite
def shaped_deps(draw) -> list[list[int]]:
    """Dependency lists of a DAG in one of several classic shapes (or a random one)."""
    shape = draw(st.sampled_from(["random", "chain", "fan_out", "fan_in", "diamonds", "tree", "forest"]))
    if shape == "chain":
        n = draw(st.integers(1, 30))
        return [[]] + [[i - 1] for i in range(1, n)]
    if shape == "fan_out":
        width = draw(st.integers(1, 15))
        return [[]] + [[0] for _ in range(width)]
    if shape == "fan_in":
        width = draw(st.integers(1, 15))
        return [[] for _ in range(width)] + [list(range(width))]
    if shape == "diamonds":
        deps: list[list[int]] = [[]]
        for _ in range(draw(st.integers(1, 6))):
            top, width = len(deps) - 1, draw(st.integers(2, 4))
            mids = list(range(len(deps), len(deps) + width))
            deps += [[top] for _ in mids] + [mids]
        return deps
    if shape == "tree":
        width = draw(st.integers(1, 16))
        deps = [[] for _ in range(width)]
        level = list(range(width))
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level), 2):
                nxt.append(len(deps))
                deps.append(level[j:j + 2])
            level = nxt
        return deps
    if shape == "forest":  # several disconnected chains and fan-outs
        deps = []
        for _ in range(draw(st.integers(2, 4))):
            root = len(deps)
            deps.append([])
            deps += [[root] for _ in range(draw(st.integers(0, 4)))]
        return deps
    n = draw(st.integers(1, 25))
    out = []
    for i in range(n):
        out.append(draw(st.lists(st.integers(0, i - 1), max_size=min(i, 4), unique=True)) if i else [])
    return out


def nested_keys(keys: list):
    """A single key, or a nested list of keys (repeats allowed), like dask.compute builds."""
    return st.one_of(
        st.sampled_from(keys),
        st.recursive(
            st.lists(st.sampled_from(keys), min_size=1, max_size=4),
            lambda inner: st.lists(st.one_of(st.sampled_from(keys), inner), min_size=1, max_size=3),
            max_leaves=8,
        ),
    )


@st.composite
def graphs(draw, pads=(0, 10)):
    deps = draw(shaped_deps())
    tuple_keys = draw(st.booleans())
    dsk = {}
    for i, ds in enumerate(deps):
        style = draw(st.sampled_from(["legacy", "spec", "nested"]))
        dsk[key_of(i, tuple_keys)] = node_for(i, ds, draw(st.sampled_from(pads)), style, tuple_keys)
    keys = list(dsk)
    # sinks are the natural outputs; any other key may be requested too
    sinks = [key_of(i, tuple_keys) for i in range(len(deps)) if not any(i in d for d in deps)]
    requested = draw(st.one_of(st.just(sinks), nested_keys(keys)))
    return dsk, requested


# --- properties ---------------------------------------------------------------------------------


@PROPS
@given(case=graphs())
def test_random_graphs_match_dask_get(client, case):
    dsk, keys = case
    assert client.get(dsk, keys) == dask.get(dsk, keys)


@PROPS
@given(case=graphs())
def test_random_graphs_match_get_sync(client, case):
    dsk, keys = case
    assert client.get(dsk, keys) == get_sync(dsk, keys)


@PROPS
@given(case=graphs(), data=st.data())
def test_aliases_and_extra_unrequested_tasks(client, case, data):
    # aliases onto random tasks, and a failing task nobody asked for (culling must drop it)
    dsk, _ = case
    keys = list(dsk)
    targets = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3))
    aliased = dict(dsk)
    for j, target in enumerate(targets):
        aliased[f"alias{j}"] = Alias(f"alias{j}", target)
    aliased["never"] = (first, None)  # raises TypeError if it ever ran
    requested = [f"alias{j}" for j in range(len(targets))] + [data.draw(st.sampled_from(keys))]
    assert client.get(aliased, requested) == dask.get(dsk, targets + [requested[-1]])


@pytest.fixture(scope="module")
def tight_client():
    """A cluster where nothing fits in a payload and 1 KB outputs count as big, so the KV store,
    fan-in reads and clustering paths run on every graph (delayed I/O off: it would let an executor
    holding every input of a fan-in skip the KV store)."""
    with LocalCluster(n_workers=2, payload_limit=4096, big_task_threshold=1024, delayed_io_max_wait=0) as cluster:
        yield Client(cluster)


@PROPS
@given(case=graphs(pads=(0, 100, 3000)))
def test_random_graphs_through_kv_store_and_clustering(tight_client, case):
    dsk, keys = case
    assert tight_client.get(dsk, keys) == dask.get(dsk, keys)
    graph = normalize_graph(dsk, keys)
    if any(len(deps) > 1 for deps in graph.dependencies):  # a fan-in always reads from the KV store
        assert tight_client.last_report.kv_bytes_written > 0


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(20, 60))
def test_wide_fan_out_then_fan_in(client, width):
    # one leaf invokes many executors, which all meet at a single fan-in
    dsk = {"root": 1, **{("mid", i): (add, "root", i) for i in range(width)}}
    dsk["sink"] = (sum, [("mid", i) for i in range(width)])
    assert client.get(dsk, ["sink", ("mid", width - 1)]) == (width + sum(range(width)), width)
