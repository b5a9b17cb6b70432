"""Graph features that cannot work when tasks run in other processes, found before a job starts.

- A store into a numpy array of the caller (``da.store(x, numpy_array)``): an executor would
  write into its own copy, and the caller's array would stay unchanged without any error.
- A disk shuffle (partd, Dask's default for bags and dataframes outside distributed): its files
  live on one machine's disk, which Lambda executors do not share (the local runtime keeps them,
  see :mod:`wukong.scratch`).

Fused tasks hold their inner tasks as data, so the search walks into task arguments. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from dask._task_spec import DataNode, GraphNode, Task

from wukong.errors import UnsupportedGraphError
from wukong.graph import TaskGraph

def _inside(node: GraphNode) -> Iterator[Any]:
    """Every object a node holds: its tasks (nested and fused ones too), their functions and
    arguments. Data is not searched: a fused subgraph is a dict of graph nodes, and Dask already
    turns lists of tasks into tasks, so plain containers never need a look inside."""
    stack: list[Any] = [node]
    while stack:
        obj = stack.pop()
        yield obj
        if isinstance(obj, Task):
            stack.append(obj.func)
            stack.extend(obj.args)
            stack.extend(obj.kwargs.values())
        elif isinstance(obj, DataNode) and isinstance(obj.value, dict):
            stack.append(obj.value)
        elif isinstance(obj, dict) and obj and isinstance(next(iter(obj.values())), GraphNode):
            stack.extend(obj.values())


def _first(graph: TaskGraph, found: Callable[[Any], bool]) -> int | None:
    for tid, node in enumerate(graph.nodes):
        if isinstance(node, Task) and any(found(obj) for obj in _inside(node)):
            return tid
    return None


def _stores_into_caller_memory(obj: Any) -> bool:
    if not isinstance(obj, Task) or len(obj.args) < 2:
        return False
    from dask.array.core import load_store_chunk

    target = obj.args[1].value if isinstance(obj.args[1], DataNode) else obj.args[1]
    return obj.func is load_store_chunk and _in_caller_memory(target)


def _in_caller_memory(target: Any) -> bool:
    """A numpy array (a memmap pickles as a plain in-memory copy too), or a zarr array whose store
    is in memory (``zarr.zeros``, a dict store): an executor would write into its own copy."""
    if isinstance(target, np.ndarray):
        return True
    store = getattr(target, "store", None)
    return (type(target).__module__ or "").startswith("zarr") and (
        isinstance(store, dict) or type(store).__name__ == "MemoryStore")


def _uses_partd(obj: Any) -> bool:
    return callable(obj) and (getattr(obj, "__module__", None) or "").split(".")[0] == "partd"


def check_out_of_process(graph: TaskGraph) -> None:
    """Refuse a graph whose tasks would write into the caller's memory."""
    tid = _first(graph, _stores_into_caller_memory)
    if tid is not None:
        raise UnsupportedGraphError(
            f"task {graph.keys[tid]!r} stores into an array in this process's memory (da.store or to_zarr "
            "into a numpy array or an in-memory zarr array); Wukong's executors run in other processes and would write into copies, "
            "leaving your array unchanged. Compute the values instead (target[...] = "
            "x.compute(scheduler=client.get)), or store into an on-disk target such as zarr or HDF5")


def check_shared_nothing(graph: TaskGraph) -> None:
    """Refuse, on top of :func:`check_out_of_process`, a graph that needs a disk its executors share."""
    check_out_of_process(graph)
    tid = _first(graph, _uses_partd)
    if tid is not None:
        raise UnsupportedGraphError(
            f"task {graph.keys[tid]!r} uses a disk shuffle (partd), whose files live on one machine's disk; "
            "Lambda executors share no disk. Build the collection with shuffle='tasks' (or inside "
            "`with client:`, which makes 'tasks' Dask's default), or run it on the local runtime")
