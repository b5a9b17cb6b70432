"""``Client``: the user's entry point. ``x.compute(scheduler=client.get)`` runs a graph on Wukong.

``client.get`` follows Dask's scheduler protocol: it takes any graph form Dask hands a
scheduler plus a key or nested list of keys, and returns values in the same nesting.
"""

from __future__ import annotations

from typing import Any

from wukong.config import WukongConfig
from wukong.graph import normalize_graph
from wukong.job import JobRun
from wukong.local.cluster import LocalCluster
from wukong.progress import ProgressBar
from wukong.report import JobReport


class Client:
    """Submits graphs to a cluster. With no cluster, starts (and owns) an embedded LocalCluster."""

    def __init__(self, cluster: LocalCluster | None = None, *, progress: bool | None = None,
                 config: WukongConfig | None = None, **settings: Any):
        self._owns_cluster = cluster is None
        self.cluster = cluster if cluster is not None else LocalCluster(config=config, **settings)
        self.progress = self.cluster.config.progress if progress is None else progress
        self.last_report: JobReport | None = None

    @property
    def config(self) -> WukongConfig:
        return self.cluster.config

    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Compute ``keys`` from ``dsk``. Dask passes scheduler options in ``kwargs``; they are
        ignored, except ``progress=`` which turns the progress bar on or off for this call."""
        if self.cluster.stores is None:
            raise RuntimeError("this client's cluster is closed; start a new LocalCluster")
        graph = normalize_graph(dsk, keys)
        show = kwargs.get("progress", self.progress)
        bar = ProgressBar() if show else None
        run = JobRun(graph, self.cluster.stores, self.cluster.invoker, self.config, progress=bar)
        try:
            return run.run()
        finally:
            if bar is not None:
                bar.close()
            self.last_report = run.report

    def close(self) -> None:
        if self._owns_cluster:
            self.cluster.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<wukong.Client cluster={self.cluster!r}>"
