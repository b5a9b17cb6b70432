"""The three schedulers under comparison, behind one small interface.

Each backend is started once, outside any timing, and warmed with a small job; ``get`` runs a
dict graph through the scheduler's get protocol and ``compute`` a collection through
``.compute(scheduler=...)``. Only Wukong has a job report.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

import dask
import dask.threaded

WARM_GRAPH = {"a": 1, "b": 2, "c": (operator.add, "a", "b"), "d": (operator.mul, "c", 10)}


class ThreadedBackend:
    """Dask's threaded scheduler (``scheduler="threads"``), in this process."""

    name = "threaded"
    label = 'dask threads (scheduler="threads")'

    def start(self) -> "ThreadedBackend":
        return self

    def get(self, dsk: dict, key: Any) -> Any:
        return dask.threaded.get(dsk, key)

    def compute(self, collection: Any) -> Any:
        return collection.compute(scheduler="threads")

    def report(self) -> dict | None:
        return None

    def close(self) -> None:
        pass


class DistributedBackend:
    """``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` + Client."""

    name = "distributed"
    label = "dask.distributed LocalCluster (2 procs x 1 thread)"

    def __init__(self, n_workers: int = 2):
        self.n_workers = n_workers
        self.cluster = None
        self.client = None

    def start(self) -> "DistributedBackend":
        import distributed

        self.cluster = distributed.LocalCluster(
            n_workers=self.n_workers, threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.CRITICAL,  # shutdown chatter
        )
        self.client = distributed.Client(self.cluster, set_as_default=False)
        self.client.wait_for_workers(self.n_workers)
        assert self.get(WARM_GRAPH, "d") == 30
        return self

    def get(self, dsk: dict, key: Any) -> Any:
        return self.client.get(dsk, key)

    def compute(self, collection: Any) -> Any:
        return collection.compute(scheduler=self.client)

    def report(self) -> dict | None:
        return None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class WukongBackend:
    """Wukong local mode: ``wukong.LocalCluster(n_workers=2)`` + ``wukong.Client``."""

    name = "wukong"
    label = "Wukong local (LocalCluster(n_workers=2))"

    def __init__(self, n_workers: int = 2, **settings: Any):
        self.n_workers = n_workers
        self.settings = settings
        self.cluster = None
        self.client = None

    def start(self) -> "WukongBackend":
        from wukong import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=self.n_workers, **self.settings)
        self.client = Client(self.cluster, progress=False)
        assert self.get(WARM_GRAPH, "d") == 30
        return self

    def get(self, dsk: dict, key: Any) -> Any:
        return self.client.get(dsk, key)

    def compute(self, collection: Any) -> Any:
        return collection.compute(scheduler=self.client.get)

    def report(self) -> dict | None:
        rep = self.client.last_report
        return None if rep is None else rep.as_dict()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_backends(names: list[str]) -> list:
    known = {"wukong": WukongBackend, "threaded": ThreadedBackend, "distributed": DistributedBackend}
    return [known[n]() for n in names]
