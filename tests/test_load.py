"""Load and hygiene on one local cluster: 20 jobs at once, a 100,000-task graph, and 100 jobs
(succeeded, failed, timed out and cancelled) that leave no job keys in Redis and no extra processes
behind.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from operator import add

import pytest

from graph_shapes import tree_sum_graph
from wukong import Client, JobTimeoutError, LocalCluster
from wukong.service.models import JobState


def inc(x: int) -> int:
    return x + 1


def boom(x: int) -> int:
    raise ValueError(f"boom on {x}")


def nap(x: float) -> float:
    import time

    time.sleep(x)
    return x


def job_keys(cluster: LocalCluster) -> list[bytes]:
    """Every job key on every Redis server of the cluster (SCAN is fine in a test)."""
    servers = [cluster.stores.mds, *cluster.stores.shards.values()]
    return [k for c in servers for k in c.scan_iter(match="wk:*", count=1000)]


def is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"wukong.local.worker_process" in f.read()
    except OSError:
        return False


def child_pids() -> set[int]:
    """Direct children of this process, from /proc (the worker pool and Redis servers)."""
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                out.add(int(entry))
    return out


@pytest.fixture(scope="module")
def load_cluster():
    with LocalCluster(n_workers=2) as c:
        yield c


@pytest.mark.timeout(300)
def test_twenty_jobs_at_once_are_all_correct(load_cluster):
    client = Client(load_cluster)

    def one(i: int) -> int:
        dsk, root = tree_sum_graph(64, f"job{i}")
        dsk[("scaled", i)] = (add, root, i)
        return client.get(dsk, ("scaled", i))

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert results == [sum(range(64)) + i for i in range(20)]


@pytest.mark.timeout(600)
def test_a_hundred_thousand_task_graph_completes(load_cluster):
    chains, length = 100, 1000  # 100,000 inc tasks in chains, plus one sum over the chain ends
    dsk: dict = {}
    for c in range(chains):
        dsk[("inc", c, 0)] = c
        for i in range(1, length):
            dsk[("inc", c, i)] = (inc, ("inc", c, i - 1))
    dsk["total"] = (sum, [("inc", c, length - 1) for c in range(chains)])
    assert len(dsk) == chains * length + 1
    client = Client(load_cluster)
    expected = sum(c + length - 1 for c in range(chains))
    assert client.get(dsk, "total") == expected
    assert client.last_report.tasks_run == len(dsk)


@pytest.mark.timeout(600)
def test_a_hundred_jobs_leave_no_keys_and_no_processes(load_cluster):
    client = Client(load_cluster)
    servers = {p for p in child_pids() if not is_worker(p)}
    # other clusters' workers (a session fixture's) are children of this process too
    others = {p for p in child_pids() if is_worker(p)} - {w.pid for w in load_cluster.pool.processes}
    outcomes = {"ok": 0, "failed": 0, "timed out": 0, "cancelled": 0}
    for i in range(100):
        kind = ("ok", "ok", "failed", "timed out", "cancelled")[i % 5]
        dsk, root = tree_sum_graph(16, f"leak{i}")
        if kind == "ok":
            assert client.get(dsk, root) == sum(range(16))
        elif kind == "failed":
            dsk["bad"] = (boom, root)
            with pytest.raises(ValueError, match="boom"):
                client.get(dsk, "bad")
        elif kind == "cancelled":
            dsk["slow"] = (nap, 0.5)
            dsk["joined"] = (add, root, "slow")
            handle = client.submit(dsk, "joined")
            handle.cancel()
            assert handle.wait(progress=False).state is JobState.cancelled
        else:
            dsk["slow"] = (nap, 1.0)
            dsk["joined"] = (add, root, "slow")
            load_cluster.config.job_timeout = 0.2  # validated assignment; restored below
            try:
                with pytest.raises(JobTimeoutError):
                    client.get(dsk, "joined")
            finally:
                load_cluster.config.job_timeout = None
        outcomes[kind] += 1
    assert outcomes == {"ok": 40, "failed": 20, "timed out": 20, "cancelled": 20}
    leftover = job_keys(load_cluster)
    assert leftover == [], f"{len(leftover)} job keys left in Redis, e.g. {leftover[:5]}"
    # the timed-out and cancelled jobs' sleeping tasks were stopped: their workers were replaced,
    # so worker pids may differ; the servers are the same and no process was added or lost
    now = child_pids()
    assert {p for p in now if not is_worker(p)} == servers, "server processes were started or lost"
    def workers_as_expected() -> bool:
        pool = {w.pid for w in load_cluster.pool.processes}
        return len(pool) == load_cluster.n_workers and {p for p in child_pids() if is_worker(p)} == others | pool

    deadline = time.monotonic() + 30  # a replacement may still be starting
    while not workers_as_expected() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers_as_expected(), "workers were lost or leaked"
