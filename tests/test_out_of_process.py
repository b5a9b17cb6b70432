"""Nothing a result depends on may live in one executor's memory or disk, and nothing a task does
in its process may be lost: disk shuffles (partd) are right on the local runtime and refused for
AWS, Client sets Dask's shuffle default to "tasks", stores into the caller's numpy arrays are
refused rather than lost, and warnings raised inside tasks reach the caller's filters.

Task functions are defined in the tests so that cloudpickle ships them by value.
"""

from __future__ import annotations

import os
import warnings

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import pytest

from wukong import Client, LocalCluster, UnsupportedGraphError
from wukong.graph import normalize_graph
from wukong.graph_checks import check_shared_nothing


def groups(bag) -> list:
    return sorted((k, sorted(v)) for k, v in bag)


@pytest.mark.timeout(300)
def test_a_disk_shuffle_groups_right_every_time_and_leaves_no_files(tmp_path):
    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        with dask.config.set(temporary_directory=str(tmp_path)):  # where Dask puts partd's files
            for _ in range(20):
                bag = db.from_sequence(range(500), npartitions=8).groupby(lambda x: x % 13, shuffle="disk")
                assert any("partd" in str(k) for k in dict(bag.__dask_graph__()))  # really the disk shuffle
                assert groups(bag.compute(scheduler=client.get)) == [(k, list(range(k, 500, 13))) for k in range(13)]
        # as under dask.multiprocessing, the files outlive compute() a while (Dask's own tests look)
        assert 0 < len(list(tmp_path.glob("*.partd"))) <= 20
        cluster.scratch.grace = 0  # the next job's end removes every finished job's directories
        client.get({"x": 1}, "x")
        assert list(tmp_path.glob("*.partd")) == []
        client.get(bag.__dask_graph__(), bag.__dask_keys__())
    assert list(tmp_path.glob("*.partd")) == []  # and closing the cluster removes the rest


def test_a_disk_shuffle_is_refused_where_executors_share_no_disk():
    bag = db.from_sequence(range(10), npartitions=2).groupby(lambda x: x % 3, shuffle="disk")
    with pytest.raises(UnsupportedGraphError, match=r"partd.*shuffle='tasks'"):
        check_shared_nothing(normalize_graph(bag.__dask_graph__(), bag.__dask_keys__()))
    tasks = db.from_sequence(range(10), npartitions=2).groupby(lambda x: x % 3, shuffle="tasks")
    check_shared_nothing(normalize_graph(tasks.__dask_graph__(), tasks.__dask_keys__()))  # no error


def test_with_client_dask_builds_task_shuffles_and_a_users_choice_is_kept(cluster):
    with dask.config.set({"dataframe.shuffle.method": None}):  # as in a fresh process (the fixture's client is entered)
        with Client(cluster) as client:
            assert dask.config.get("dataframe.shuffle.method") == "tasks"
            bag = db.from_sequence(range(60), npartitions=4).groupby(lambda x: x % 5)
            assert not any("partd" in str(k) for k in dict(bag.__dask_graph__()))
            assert groups(bag.compute(scheduler=client.get)) == [(k, list(range(k, 60, 5))) for k in range(5)]
        assert dask.config.get("dataframe.shuffle.method", None) is None  # restored on exit
        with dask.config.set({"dataframe.shuffle.method": "disk"}), Client(cluster):
            assert dask.config.get("dataframe.shuffle.method") == "disk"
        with Client(cluster).shuffle_defaults():
            assert dask.config.get("dataframe.shuffle.method") == "tasks"


def test_a_store_into_the_callers_numpy_array_is_refused_not_lost(client):
    x = da.arange(16, chunks=4).reshape(4, 4).rechunk(2)
    target = np.zeros((4, 4))
    with pytest.raises(UnsupportedGraphError, match=r"store-map.*array in this process's memory.*zarr or HDF5"):
        da.store(x, target, scheduler=client.get)
    assert (target == 0).all()
    target[...] = x.compute(scheduler=client.get)  # what the message suggests works
    assert (target == np.arange(16).reshape(4, 4)).all()


def test_to_zarr_into_an_in_memory_zarr_array_is_refused_and_on_disk_works(client, tmp_path):
    zarr = pytest.importorskip("zarr")
    x = da.arange(16, chunks=4)
    in_memory = zarr.zeros((16,), chunks=(4,), dtype=x.dtype)
    with dask.config.set(scheduler=client.get):  # to_zarr takes no scheduler argument
        with pytest.raises(UnsupportedGraphError, match="in-memory zarr array"):
            da.to_zarr(x, in_memory)
        on_disk = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=(16,), chunks=(4,), dtype=x.dtype)
        da.to_zarr(x, on_disk)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "x.zarr"))[:], np.arange(16))


def test_a_store_into_a_target_executors_can_reach_works(client, tmp_path):
    class FileTarget:
        """Writes each region to its own file: reachable from any process on this machine."""

        def __init__(self, folder):
            self.folder = str(folder)

        def __setitem__(self, index, value):
            np.save(os.path.join(self.folder, f"{index[0].start}-{index[1].start}.npy"), value)

    x = da.arange(16, chunks=4).reshape(4, 4).rechunk(2)
    da.store(x, FileTarget(tmp_path), scheduler=client.get, lock=False)
    np.testing.assert_array_equal(np.load(tmp_path / "2-0.npy"), [[8, 9], [12, 13]])
    assert len(list(tmp_path.iterdir())) == 4


def warn_twice(x):
    warnings.warn(f"careful with {x}", UserWarning)
    warnings.warn("old API", DeprecationWarning)
    return x + 1


def test_warnings_in_tasks_reach_pytest_warns_and_the_callers_filters(client):
    dsk = {"a": 1, "b": (warn_twice, "a"), "c": (warn_twice, "b")}
    with pytest.warns(UserWarning, match="careful with [12]"), pytest.warns(DeprecationWarning):
        assert client.get(dsk, "c") == 3
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", UserWarning)
        assert client.get(dsk, "c") == 3
    assert sorted(str(w.message) for w in seen) == ["careful with 1", "careful with 2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(UserWarning, match="careful with 1") as info:
            client.get(dsk, "c")
    assert "Wukong: raised by task 'b'" in info.value.__notes__


def test_a_failing_tasks_warnings_come_before_its_error(client):
    def warn_then_fail(x):
        warnings.warn("about to fail", RuntimeWarning)
        raise ValueError("failed")

    with pytest.warns(RuntimeWarning, match="about to fail"), pytest.raises(ValueError, match="failed"):
        client.get({"a": 1, "b": (warn_then_fail, "a")}, "b")


def test_a_requested_literal_is_the_callers_own_object(client):
    class Thing:
        pass

    thing = Thing()
    assert dask.delayed(thing).compute(scheduler=client.get) is thing  # as dask.local returns data
    assert client.get({"t": (type, "x"), "x": thing}, ["x", "t"])[0] is thing


def test_warnings_reach_a_caller_of_the_job_api(cluster):
    from wukong.service.local import LocalJobService

    with Client(cluster) as client:
        handle = client.submit({"a": 1, "b": (warn_twice, "a")}, "b")  # through the job service
        with pytest.warns(UserWarning, match="careful with 1"), pytest.warns(DeprecationWarning, match="old API"):
            assert handle.result() == 2
        assert isinstance(client.service, LocalJobService)
        status = handle.status()
        assert [w.task for w in status.warnings] == ["'b'", "'b'"]
        assert {w.category for w in status.warnings} == {"builtins.UserWarning", "builtins.DeprecationWarning"}
