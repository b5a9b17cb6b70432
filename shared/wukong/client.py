"""``Client``: the user's entry point. ``x.compute(scheduler=client.get)`` runs a graph on Wukong,
on a LocalCluster in this process or, with ``Client(endpoint=URL, token=T)``, on a remote job API.

``client.get`` follows Dask's scheduler protocol: it takes any graph form Dask hands a
scheduler plus a key or nested list of keys, and returns values in the same nesting.
"""

from __future__ import annotations

import contextlib
from typing import Any

import dask

from wukong.errors import job_interrupted
from wukong.config import WukongConfig, make_config
from wukong.graph import normalize_graph
from wukong.graph_checks import check_out_of_process
from wukong.job import JobRun
from wukong.local.cluster import LocalCluster
from wukong.progress import ProgressBar
from wukong.report import JobReport
from wukong.service.base import JobHandle, JobService
from wukong.service.models import JobConfig, JobStatus


#: Dask's setting for the shuffle of bags and dataframes built from now on ("disk", "tasks", "p2p").
SHUFFLE_METHOD = "dataframe.shuffle.method"


class Client:
    """Submits graphs to a cluster or a job API endpoint.

    - ``Client(cluster)``: run on that LocalCluster.
    - ``Client(endpoint=URL, token=T)``: run on ``wukong serve`` (bearer token) or on API Gateway
      (SigV4; ``auth="sigv4"`` or an execute-api URL). ``WUKONG_ENDPOINT``/``WUKONG_TOKEN`` work too.
    - ``Client()``: start (and own) an embedded LocalCluster.
    """

    def __init__(self, cluster: LocalCluster | None = None, *, endpoint: str | None = None,
                 token: str | None = None, auth: str | None = None, progress: bool | None = None,
                 config: WukongConfig | None = None, **settings: Any):
        if cluster is not None and endpoint is not None:
            raise ValueError("give a cluster or an endpoint, not both")
        self.cluster: LocalCluster | None = cluster
        self._service: JobService | None = None
        self._owns_cluster = False
        if cluster is None:
            cfg = make_config(config, endpoint=endpoint, token=token, auth=auth, **settings)
            if cfg.endpoint:
                self._config = cfg
                self._service = _remote_service(cfg)
            else:
                self._owns_cluster = True
                self.cluster = LocalCluster(config=cfg)
        self.progress = self.config.progress if progress is None else progress
        self.last_report: JobReport | None = None
        self._shuffle: contextlib.AbstractContextManager | None = None  # entered by __enter__

    @property
    def config(self) -> WukongConfig:
        return self.cluster.config if self.cluster is not None else self._config

    @property
    def endpoint(self) -> str | None:
        return None if self.cluster is not None else self._config.endpoint

    @property
    def service(self) -> JobService:
        """The job service behind :meth:`submit`: in-process on the cluster, or the remote API."""
        if self._service is None:
            from wukong.service.local import LocalJobService

            self._service = LocalJobService(self.cluster)
        return self._service

    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Compute ``keys`` from ``dsk``. Dask passes scheduler options in ``kwargs``; they are
        ignored, except ``progress=`` which turns the progress bar on or off for this call."""
        show = kwargs.get("progress", self.progress)
        if self.cluster is None:
            return self._get_remote(dsk, keys, show)
        if self.cluster.stores is None:
            raise RuntimeError("this client's cluster is closed; start a new LocalCluster")
        graph = normalize_graph(dsk, keys)
        check_out_of_process(graph)
        bar = ProgressBar() if show else None
        run = JobRun(graph, self.cluster.stores, self.cluster.invoker, self.config, progress=bar,
                     scratch=self.cluster.scratch)
        try:
            return run.run()
        finally:
            if bar is not None:
                bar.close()
            self.last_report = run.report

    def _get_remote(self, dsk: Any, keys: Any, show: bool) -> Any:
        handle = self.submit(dsk, keys)
        try:
            return handle.result(progress=show)
        except KeyboardInterrupt:  # the user gave up on the job: do not leave it running remotely
            handle.cancel()
            raise job_interrupted(f"job {handle.job_id} interrupted (Ctrl-C): cancelled") from None
        finally:
            self.last_report = handle.report

    def submit(self, dsk: Any, keys: Any, **job_config: Any) -> JobHandle:
        """Start a job and return at once with its :class:`JobHandle` (``status``, ``wait``, ``result``,
        ``cancel``). ``job_config`` overrides job settings such as ``job_timeout`` for this job."""
        graph = normalize_graph(dsk, keys)  # bad keys and cycles fail here, before anything is sent
        check_out_of_process(graph)
        status = self.service.submit(graph, JobConfig(**job_config) if job_config else None)
        handle = JobHandle(self.service, status.job_id, progress=self.progress)
        handle.last_status = status
        return handle

    def job(self, job_id: str) -> JobHandle:
        """A handle on a job submitted earlier (by any client of the same service)."""
        return JobHandle(self.service, job_id, progress=self.progress)

    def jobs(self, limit: int = 50) -> list[JobStatus]:
        return self.service.jobs(limit)

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
        if self._owns_cluster:
            self.cluster.close()

    def shuffle_defaults(self) -> contextlib.AbstractContextManager:
        """While this is entered, Dask builds collections with the task-based shuffle.

        Outside dask.distributed, Dask's default shuffle for bags and dataframes is "disk"
        (partd), whose files live on one machine's disk; Wukong's executors (Lambda) share none.
        This does for Wukong what a distributed Client does for itself. A shuffle method the user
        configured (``dataframe.shuffle.method``) is left as it is. ``with client:`` enters it.
        """
        if dask.config.get(SHUFFLE_METHOD, None) is not None:
            return contextlib.nullcontext()
        return dask.config.set({SHUFFLE_METHOD: "tasks"})

    def __enter__(self) -> "Client":
        self._shuffle = self.shuffle_defaults()
        self._shuffle.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.close()
        finally:
            shuffle, self._shuffle = self._shuffle, None
            if shuffle is not None:
                shuffle.__exit__(*exc_info)

    def __repr__(self) -> str:
        where = f"cluster={self.cluster!r}" if self.cluster is not None else f"endpoint={self.endpoint}"
        return f"<wukong.Client {where}>"


def _remote_service(config: WukongConfig) -> JobService:
    from wukong.service.remote import HttpJobService, make_auth

    token = config.token.get_secret_value() if config.token else None
    auth = make_auth(config.endpoint, token, config.auth, config.aws_region)
    return HttpJobService(config.endpoint, auth, timeout=config.request_timeout,
                          inline_limit=config.inline_graph_limit)
