"""Pytest plugin for running Dask's own test suites on one scheduler: every local scheduler Dask
would pick (the default, "sync", "threads", "processes", ...) is routed to Wukong's ``client.get``
or, for the baseline, to ``dask.multiprocessing.get``; each test's outcome goes to a JSON-lines file.

    pytest -p conformance_plugin --conformance-scheduler=wukong --conformance-results=out.jsonl ...

(``bench/`` must be on ``PYTHONPATH``; ``bench/conformance.py`` does all of this.)
"""

from __future__ import annotations

import json
import os
from functools import partial
from typing import Any

import pytest

SCHEDULERS = ("wukong", "multiprocessing", "native")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "Dask conformance: route Dask's schedulers")
    group.addoption("--conformance-scheduler", choices=SCHEDULERS, default=None,
                    help="the scheduler every local Dask scheduler is routed to "
                         "('native' routes nothing, for debugging the plugin)")
    group.addoption("--conformance-results", default=None,
                    help="append one JSON line per test (nodeid, outcome, message) to this file")
    group.addoption("--conformance-resume", action="store_true",
                    help="deselect the tests the results file already holds (after a crashed session)")
    group.addoption("--conformance-workers", type=int, default=2,
                    help="worker processes of the Wukong cluster or the baseline process pool")


class SchedulerRouter:
    """Replaces ``dask.base.get_scheduler`` so that whatever local scheduler it would return (a
    name, the config's choice, a collection's default) becomes the scheduler under test.

    Wrapping the lookup, rather than editing ``named_schedulers`` alone, also catches collections'
    ``__dask_scheduler__`` defaults (``threaded.get`` for arrays and delayed, ``multiprocessing.get``
    for bags). A distributed ``Client``, an ``Executor`` instance or a callable the test passes
    itself is left alone: the test chose that scheduler on purpose.
    """

    def __init__(self, kind: str, n_workers: int):
        self.kind = kind
        self.n_workers = n_workers
        self.cluster = None
        self.client = None
        self.pool = None
        self._original = None

    def start(self) -> None:
        import dask.base
        from dask import local, multiprocessing, threaded

        if self.kind == "native":
            return
        # the functions Dask's lookup hands out for local schedulers
        self._local = (local.get_sync, threaded.get, multiprocessing.get)
        if self.kind == "wukong":
            from wukong import Client, LocalCluster

            self.cluster = LocalCluster(n_workers=self.n_workers)
            self.client = Client(self.cluster, progress=False)
            self.under_test = self.client.get
        else:
            self.under_test = self._multiprocessing_get
        self._original = dask.base.get_scheduler
        dask.base.get_scheduler = self._route

    def _route(self, get=None, scheduler=None, collections=None, cls=None):
        chosen = self._original(get=get, scheduler=scheduler, collections=collections, cls=cls)
        # by identity: a scheduler object the test brings may define __eq__ or be unhashable
        return self.under_test if any(chosen is f for f in self._local) else chosen

    def _multiprocessing_get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """``dask.multiprocessing.get`` on one session-wide pool: Dask's own default starts a fresh
        spawned pool for every compute, seconds each, thousands of times per suite. Wukong's worker
        processes are long-lived too, so both keep state across tests alike."""
        from dask import multiprocessing

        if self.pool is None or getattr(self.pool, "_broken", False):
            self.pool = self._new_pool()
        kwargs.setdefault("pool", self.pool)
        return multiprocessing.get(dsk, keys, **kwargs)

    def _new_pool(self):
        from concurrent.futures import ProcessPoolExecutor

        from dask import multiprocessing

        # as dask.multiprocessing.get does for its own pools: hashing agrees across processes
        if os.environ.get("PYTHONHASHSEED") in (None, "0"):
            os.environ["PYTHONHASHSEED"] = "6640"
        init = partial(multiprocessing.initialize_worker_process, user_initializer=None)
        return ProcessPoolExecutor(self.n_workers, mp_context=multiprocessing.get_context(),
                                   initializer=init)

    def stop(self) -> None:
        if self._original is not None:
            import dask.base

            dask.base.get_scheduler = self._original
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


class ResultWriter:
    """One JSON line per test: its overall outcome across setup, call and teardown, and the first
    line of the failure, so the comparison can group failures by cause."""

    def __init__(self, path: str):
        self.path = path
        self.done = _recorded_nodeids(path)
        self.file = open(path, "a", encoding="utf-8")
        self.current: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        # the test in progress, for the runner to blame if the whole session dies (a segfault, a
        # timeout that had to kill the process)
        with open(self.path + ".current", "w", encoding="utf-8") as f:
            f.write(nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.current.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed",
                                                        "message": "", "duration": 0.0})
        entry["duration"] += report.duration
        if hasattr(report, "wasxfail"):
            # strict xpasses come back as plain failures; a non-strict xpass counts as a pass
            entry["outcome"] = "xfailed" if report.skipped else "passed"
            entry["message"] = report.wasxfail
        elif report.failed and entry["outcome"] != "failed":
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["message"] = _first_line(report)
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
            entry["message"] = _skip_reason(report)
        if report.when == "teardown":
            self.file.write(json.dumps(self.current.pop(report.nodeid)) + "\n")
            self.file.flush()  # a crashed session still leaves every finished test on disk

    def close(self) -> None:
        self.file.close()


def _recorded_nodeids(path: str) -> set[str]:
    if not os.path.exists(path):
        return set()
    with open(path, encoding="utf-8") as f:
        return {json.loads(line)["nodeid"] for line in f if line.strip()}


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2])[:300]
    return str(report.longrepr)[:300]


# markers Dask's own pytest configuration declares (it is not installed with the tests)
DASK_MARKERS = ("slow", "network", "gpu", "flaky", "array_expr", "normal_and_array_expr",
                "skip_with_pyarrow_strings", "xfail_with_pyarrow_strings")


def pytest_configure(config: pytest.Config) -> None:
    for marker in DASK_MARKERS:
        config.addinivalue_line("markers", f"{marker}: a marker of Dask's test suite")
    kind = config.getoption("--conformance-scheduler")
    if kind is not None:
        router = SchedulerRouter(kind, config.getoption("--conformance-workers"))
        router.start()
        config._conformance_router = router
    path = config.getoption("--conformance-results")
    if path:
        writer = ResultWriter(path)
        config.pluginmanager.register(writer, "conformance-results")
        config._conformance_writer = writer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    writer = getattr(config, "_conformance_writer", None)
    if writer is None or not config.getoption("--conformance-resume") or not writer.done:
        return
    kept = [item for item in items if item.nodeid not in writer.done]
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid in writer.done])
    items[:] = kept


def pytest_unconfigure(config: pytest.Config) -> None:
    router = getattr(config, "_conformance_router", None)
    if router is not None:
        router.stop()
    writer = getattr(config, "_conformance_writer", None)
    if writer is not None:
        writer.close()
