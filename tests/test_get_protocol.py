"""``client.get`` follows Dask's scheduler ``get`` protocol, end to end on the session cluster.

Runs Dask's own ``GetFunctionTestMixin`` (including the 10,000-long chain), then every graph form
Dask hands a scheduler (Expr, HighLevelGraph, task-spec nodes); intake errors are in test_bad_input.py.
"""

from __future__ import annotations

from operator import add, mul

import dask
import dask.array as da
import numpy as np
import pytest
from dask._task_spec import Alias, DataNode, List, Task, TaskRef
from dask.highlevelgraph import HighLevelGraph
from dask.utils_test import GetFunctionTestMixin, inc

from wukong import JobFailedError


class TestGetFunctionProtocol(GetFunctionTestMixin):
    """Dask's conformance suite; the mixin calls ``self.get(dsk, keys)``."""

    @pytest.fixture(autouse=True)
    def _wire_client(self, client):
        # the mixin has no fixtures of its own, so the session client is attached per test
        self._client = client

    def get(self, dsk, keys, **kwargs):
        return self._client.get(dsk, keys, **kwargs)


# --- graph forms ----------------------------------------------------------------------------------


def test_dask_array_expr_via_compute(client):
    x = da.arange(20, chunks=5)
    y = (x * 2).sum()
    assert y.compute(scheduler=client.get) == int(np.arange(20).sum() * 2)


def test_expr_passed_directly(client):
    # what dask.compute hands a scheduler: an Expr whose keys are nested lists
    from dask.base import collections_to_expr

    x = da.ones((6, 4), chunks=(3, 2))
    expr = collections_to_expr([x.sum(axis=0), x.max()])
    keys = expr.__dask_keys__()
    got = client.get(expr, keys)
    expected = dask.get(expr.__dask_graph__(), keys)
    assert len(got) == 2
    np.testing.assert_array_equal(got[0][0], expected[0][0])
    assert got[1][0] == expected[1][0] == 1.0


def test_dask_array_compute_multiple_collections(client):
    x = da.arange(12, chunks=4).reshape((3, 4)).rechunk((2, 2))
    total, transposed = dask.compute(x.sum(), x.T, scheduler=client.get)
    assert total == 66
    np.testing.assert_array_equal(transposed, np.arange(12).reshape((3, 4)).T)


def test_delayed_collection(client):
    parts = [dask.delayed(mul)(i, i) for i in range(5)]
    total = dask.delayed(sum)(parts)
    assert total.compute(scheduler=client.get) == sum(i * i for i in range(5))


def test_high_level_graph_multiple_layers(client):
    layers = {
        "a": {("a", 0): 1, ("a", 1): 2},
        "b": {("b", 0): (add, ("a", 0), ("a", 1)), ("b", 1): (mul, ("a", 1), 10)},
        "c": {"c": (sum, [("b", 0), ("b", 1)])},
    }
    graph = HighLevelGraph(layers, {"a": set(), "b": {"a"}, "c": {"b"}})
    assert client.get(graph, "c") == 23
    assert client.get(graph, [("b", 0), ("b", 1)]) == (3, 20)


def test_task_spec_nodes(client):
    dsk = {
        "a": DataNode("a", 5),
        "b": Task("b", add, TaskRef("a"), 10),
        "c": Task("c", sum, List(TaskRef("a"), TaskRef("b"), 100)),
        "alias": Alias("alias", "c"),
        "kw": Task("kw", dict, x=TaskRef("b"), y=3),
    }
    assert client.get(dsk, "alias") == 120
    assert client.get(dsk, ["b", "kw"]) == (15, {"x": 15, "y": 3})
    assert client.get(dsk, "a") == 5


def test_alias_chain_and_alias_output(client):
    dsk = {"x": DataNode("x", [1, 2]), "y": Alias("y", "x"), "z": Alias("z", "y"), "w": (len, "z")}
    assert client.get(dsk, ["z", "w"]) == ([1, 2], 2)


def test_nested_key_lists(client):
    dsk = {"x": 1, "y": (inc, "x"), "z": (add, "x", "y"), ("t", 0): (mul, "z", 2)}
    keys = [["x", ["y", [("t", 0)]]], "z", []]
    assert client.get(dsk, keys) == dask.get(dsk, keys) == ((1, (2, (6,))), 3, ())


def test_duplicate_keys_in_request(client):
    dsk = {"x": 1, "y": (inc, "x")}
    assert client.get(dsk, ["y", "y", ["x", "y"]]) == (2, 2, (1, 2))


def test_literals_are_not_keys(client):
    dsk = {
        "s": "not-a-key",
        "n": (len, "s"),
        "d": {"a": 1, "b": [1, 2]},
        "lst": [1, "n", (inc, "n")],  # "n" inside a list is a key reference
        "none": None,
        "arr": np.arange(3),
    }
    assert client.get(dsk, ["s", "n", "d", "lst", "none"]) == ("not-a-key", 9, {"a": 1, "b": [1, 2]}, [1, 9, 10], None)
    np.testing.assert_array_equal(client.get(dsk, "arr"), np.arange(3))


def test_unrequested_part_of_graph_is_culled(client):
    # "bad" would raise if it ran; asking only for "y" must never run it
    dsk = {"x": 1, "y": (inc, "x"), "bad": (int, "not a number")}
    assert client.get(dsk, "y") == 2
    assert client.last_report is not None and client.last_report.n_tasks == 2


# --- intake errors ---------------------------------------------------------------------------------


# missing keys, cycles and non-graph objects: tests/test_bad_input.py


def test_client_still_works_after_intake_errors(client):
    with pytest.raises(KeyError):
        client.get({"x": 1}, "y")
    assert client.get({"x": 1, "y": (inc, "x")}, "y") == 2


@pytest.mark.timeout(120)
def test_function_workers_cannot_import_fails_the_job_instead_of_hanging(client, tmp_path, monkeypatch):
    # a module made importable only after the workers started: they cannot unpickle its function
    (tmp_path / "wukong_late_module.py").write_text("def late(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from wukong_late_module import late

    with pytest.raises(JobFailedError, match="wukong_late_module"):
        client.get({"x": 1, "y": (late, "x")}, "y")
    assert client.get({"x": 1, "y": (inc, "x")}, "y") == 2  # the workers survived
