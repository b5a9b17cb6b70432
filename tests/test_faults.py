"""Fault injection on the local runtime: executors killed mid-task are detected and retried, as
Lambda retries asynchronous invokes; when retries run out (or a task passes the function timeout)
the job fails fast naming the task; duplicated invocations run nothing twice; a lost invocation is
named by the stall warning and the job timeout; cancellation and job_timeout stop every executor of
the job; a lost Redis server gives a clear error, not a hang.

Tasks record each attempt in files under tmp_path (pid per line), so the test can find and
SIGKILL the worker that is running a task, and count how often each task really ran.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from operator import add
from pathlib import Path

import pytest

from wukong import (
    Client,
    ExecutorCrashedError,
    FunctionTimeoutError,
    JobTimeoutError,
    LocalCluster,
    MemoryLimitError,
    RedisUnavailableError,
)
from wukong.config import make_config
from wukong.graph import normalize_graph
from wukong.invocation import Invoker
from wukong.job import JobRun
from wukong.serialization import loads
from wukong.service.models import JobState

HANG_GUARD = 60.0


def record_attempt(marker: str) -> int:
    """Append this process's pid to ``marker``; returns the attempt number (1-based)."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    return len(Path(marker).read_text().split())


def stall_first_attempt(marker: str, x: int) -> int:
    """Runs slowly the first time (so the test can kill it), then returns x * 2."""
    if record_attempt(marker) == 1:
        time.sleep(HANG_GUARD)
    return x * 2


def counted_add(marker: str, a: int, b: int) -> int:
    record_attempt(marker)
    return a + b


def kill_own_process(marker: str, x: int) -> int:
    record_attempt(marker)
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def wait_for_lines(path: Path, n: int, timeout: float = HANG_GUARD) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            pids = [int(p) for p in path.read_text().split()]
            if len(pids) >= n:
                return pids
        time.sleep(0.02)
    raise AssertionError(f"{path.name} never reached {n} attempts")


@pytest.fixture(scope="module")
def fault_cluster():
    with LocalCluster(n_workers=2) as c:
        yield c


@pytest.mark.timeout(120)
def test_executor_killed_mid_task_is_retried_and_the_job_completes(fault_cluster, tmp_path):
    slow, merge = str(tmp_path / "slow"), str(tmp_path / "merge")
    dsk = {
        "a": 20,
        "b": (stall_first_attempt, slow, "a"),
        "c": 2,
        "total": (counted_add, merge, "b", "c"),
    }
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = Client(fault_cluster).get(dsk, "total")
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    job = threading.Thread(target=run)
    job.start()
    [victim] = wait_for_lines(Path(slow), 1)
    os.kill(victim, signal.SIGKILL)
    job.join(HANG_GUARD)
    assert not job.is_alive(), "the job hung after its executor was killed"
    assert outcome == {"value": 42}
    attempts = [int(p) for p in Path(slow).read_text().split()]
    assert len(attempts) == 2 and attempts[1] != victim, "the killed task was not retried in another worker"
    assert len(Path(merge).read_text().split()) == 1, "the downstream task ran more than once"
    assert any(c["action"] == "retried" and c["cause"] == "killed by SIGKILL" for c in fault_cluster.pool.crashes)


def link(ran: str, prev: int) -> int:
    """A chain link that records its completed runs (one line each) in ``ran``."""
    with open(ran, "a") as f:
        f.write("x\n")
    return prev + 1


def stall_first_attempt_then_link(slow: str, ran: str, prev: int) -> int:
    stall_first_attempt(slow, 0)
    return link(ran, prev)


@pytest.mark.timeout(120)
def test_a_killed_executors_work_is_counted_exactly_in_the_report(fault_cluster, tmp_path):
    # one invocation runs 20 links, then stalls; it is SIGKILLed, and its retry runs it all again.
    # The report counts every task run that completed, the killed attempt's 20 included, and the
    # killed execution as lost: nothing is dropped with the dead process, nothing counted twice
    slow, ran = str(tmp_path / "slow"), str(tmp_path / "ran")
    dsk: dict = {"start": 0, ("link", 0): (link, ran, "start")}
    for i in range(1, 20):
        dsk[("link", i)] = (link, ran, ("link", i - 1))
    dsk["stall"] = (stall_first_attempt_then_link, slow, ran, ("link", 19))
    client = Client(fault_cluster)
    handle = client.submit(dsk, "stall")
    [victim] = wait_for_lines(Path(slow), 1)
    os.kill(victim, signal.SIGKILL)
    assert handle.result(progress=False) == 21
    report = handle.report
    # the literal "start" is a task too, run by both attempts
    assert report.tasks_run == len(Path(ran).read_text().split()) + 2 == (20 + 1) + (21 + 1)
    assert report.executors_lost == 1
    assert report.executors_invoked == report.executors_finished + report.executors_lost == 2


@pytest.mark.timeout(120)
def test_retries_exhausted_fail_the_job_naming_the_task(fault_cluster, tmp_path):
    marker = str(tmp_path / "doomed")
    # the doomed task runs after the invocation's start task: the error still names it
    dsk = {"x": 1, "doomed-task": (kill_own_process, marker, "x"), "out": (add, "doomed-task", 1)}
    started = time.monotonic()
    with pytest.raises(ExecutorCrashedError) as info:
        Client(fault_cluster).get(dsk, "out")
    text = "\n".join([str(info.value), *getattr(info.value, "__notes__", [])])
    assert "doomed-task" in text and "killed by SIGKILL" in text and "max_retries=2" in text
    assert len(Path(marker).read_text().split()) == 3  # the first run and two retries
    assert time.monotonic() - started < HANG_GUARD


@pytest.mark.timeout(120)
def test_dead_workers_are_replaced_and_the_cluster_keeps_working(fault_cluster):
    deadline = time.monotonic() + HANG_GUARD
    while fault_cluster.pool.alive() < fault_cluster.n_workers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fault_cluster.pool.alive() == fault_cluster.n_workers
    before = [p.pid for p in fault_cluster.pool.processes]
    os.kill(before[0], signal.SIGKILL)  # an idle worker: nothing to retry, but it is replaced
    while fault_cluster.pool.processes[0].pid == before[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fault_cluster.pool.processes[0].pid != before[0]
    dsk = {("x", i): i for i in range(50)}
    dsk["sum"] = (sum, [("x", i) for i in range(50)])
    assert Client(fault_cluster).get(dsk, "sum") == sum(range(50))


class DuplicatingInvoker(Invoker):
    """Fault injection: delivers every invocation twice, as Lambda's at-least-once delivery may."""

    def __init__(self, inner: Invoker):
        self.inner = inner

    def invoke(self, payloads):
        self.inner.invoke([p for p in payloads for _ in range(2)])


@pytest.mark.timeout(120)
def test_duplicated_invocations_run_nothing_twice(fault_cluster, tmp_path):
    leaves = [str(tmp_path / f"leaf{i}") for i in range(8)]
    merged = str(tmp_path / "merged")
    dsk = {("leaf", i): (counted_add, leaves[i], i, 0) for i in range(8)}
    dsk["pairs"] = (sum, [("leaf", i) for i in range(8)])
    dsk["total"] = (counted_add, merged, "pairs", 100)
    graph = normalize_graph(dsk, ["total"])
    run = JobRun(graph, fault_cluster.stores, DuplicatingInvoker(fault_cluster.invoker), fault_cluster.config)
    assert list(run.run()) == [sum(range(8)) + 100]
    for marker in [*leaves, merged]:
        assert len(Path(marker).read_text().split()) == 1, f"{Path(marker).name} ran more than once"
    assert run.report.tasks_run == len(dsk)


class DroppingInvoker(Invoker):
    """Fault injection: loses the invocation starting at task id ``lost``, as a dropped async invoke."""

    def __init__(self, inner: Invoker, lost: int):
        self.inner = inner
        self.lost = lost

    def invoke(self, payloads):
        self.inner.invoke([p for p in payloads if loads(p).start != self.lost])


@pytest.mark.timeout(120)
def test_a_lost_leaf_invocation_is_named_by_the_stall_warning_and_the_timeout(fault_cluster, caplog):
    dsk = {("leaf", i): (add, i, 0) for i in range(6)}
    dsk["total"] = (sum, [("leaf", i) for i in range(6)])
    graph = normalize_graph(dsk, ["total"])
    config = make_config(fault_cluster.config, job_timeout=3, stall_warning=0.5)
    run = JobRun(graph, fault_cluster.stores, DroppingInvoker(fault_cluster.invoker, graph.id_of(("leaf", 4))),
                 config, progress=lambda done, total: None)  # a progress callback polls every 0.2 s
    with caplog.at_level(logging.WARNING, logger="wukong.job"), pytest.raises(JobTimeoutError) as info:
        run.run()
    message = str(info.value)
    assert "1 leaf invocation never started" in message and "('leaf', 4)" in message
    assert "('leaf', 3)" not in message  # the leaves that ran are not blamed
    assert "1 requested output never stored: 'total'" in message
    stalls = [r.getMessage() for r in caplog.records if "finished no task" in r.getMessage()]
    assert stalls and all("('leaf', 4)" in m for m in stalls)
    assert run.report.status == "timed out"
    assert Client(fault_cluster).get(dsk, "total") == 15  # nothing of the lost job lingers


def chain_step(marker_dir: str, name: str, prev: int) -> int:
    """One link of a long chain: leaves a marker file, so the test counts the links that really ran."""
    Path(marker_dir, name).touch()
    time.sleep(0.02)
    return prev + 1


def settled_count(directory: Path, quiet: float = 2.5) -> int:
    """The number of files in ``directory`` once none has appeared for ``quiet`` seconds (more than
    an executor's ended-check interval plus one task)."""
    count, since = -1, time.monotonic()
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        now = len(list(directory.iterdir()))
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return count
        time.sleep(0.1)
    raise AssertionError(f"tasks kept running in {directory.name} for {HANG_GUARD} s")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["cancel", "job_timeout"])
def test_cancel_and_job_timeout_stop_every_executor_of_the_job(fault_cluster, tmp_path, how):
    length, markers = 1000, tmp_path / "ran"
    markers.mkdir()
    dsk: dict = {"root": 0}
    for chain in "ab":  # two chains: two executors run the job at once, and both must stop
        dsk[(chain, 0)] = (chain_step, str(markers), f"{chain}0", "root")
        for i in range(1, length):
            dsk[(chain, i)] = (chain_step, str(markers), f"{chain}{i}", (chain, i - 1))
    dsk["join"] = (add, ("a", length - 1), ("b", length - 1))
    client = Client(fault_cluster)
    handle = client.submit(dsk, "join", **({"job_timeout": 3.0} if how == "job_timeout" else {}))
    deadline = time.monotonic() + HANG_GUARD
    while not all((markers / f"{c}5").exists() for c in "ab") and time.monotonic() < deadline:
        time.sleep(0.02)
    if how == "cancel":
        handle.cancel()
    final = handle.wait(progress=False)
    assert final.state is (JobState.cancelled if how == "cancel" else JobState.failed)
    assert final.error.kind == ("cancelled" if how == "cancel" else "timeout")
    ran = settled_count(markers)
    assert ran < length, f"{ran} of {2 * length} chain tasks ran after the job ended"
    assert client.get({"x": 1, "y": (add, "x", 1)}, "y") == 2  # later jobs are unaffected
    assert len(list(markers.iterdir())) == ran  # and the stopped job never resumed


def sleep_then(seconds: float, x: int) -> int:
    time.sleep(seconds)
    return x


def record_then_sleep(marker: str, seconds: float, x: int) -> int:
    record_attempt(marker)
    return sleep_then(seconds, x)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["cancel", "job_timeout"])
def test_an_ended_jobs_running_task_is_stopped_and_the_next_job_starts_at_once(how, tmp_path):
    # one worker, busy with a task that would sleep for 10 minutes: unless the task is stopped
    # when its job ends, the next job waits for it (the pytest timeout fails the test then)
    with LocalCluster(n_workers=1) as cluster:
        client = Client(cluster)
        marker = tmp_path / "sleeping"
        dsk = {"x": 1, "sleepy": (record_then_sleep, str(marker), 600, "x")}
        handle = client.submit(dsk, "sleepy", **({"job_timeout": 3.0} if how == "job_timeout" else {}))
        wait_for_lines(marker, 1)  # the task is running
        if how == "cancel":
            handle.cancel()
        final = handle.wait(progress=False)
        assert final.error.kind == ("cancelled" if how == "cancel" else "timeout")
        assert client.get({"a": 1, "b": (add, "a", 1)}, "b") == 2
        stopped = [c for c in cluster.pool.crashes if c["action"] == "stopped"]
        assert stopped and stopped[0]["job_id"] == handle.job_id  # stopped, not retried
        report = handle.report
        assert report.executors_lost == 1 and report.executors_invoked == report.executors_finished + 1


@pytest.mark.timeout(120)
def test_a_task_past_the_function_timeout_fails_the_job_naming_it():
    # 2 s, not less: on a busy machine the invocation's first task must still be done by then
    with LocalCluster(n_workers=1, function_timeout=2.0, max_retries=1) as cluster:
        dsk = {"x": 1, "sleepy-task": (sleep_then, HANG_GUARD, "x"), "out": (add, "sleepy-task", 1)}
        started = time.monotonic()
        with pytest.raises(FunctionTimeoutError) as info:
            Client(cluster).get(dsk, "out")
        assert time.monotonic() - started < HANG_GUARD  # stopped, not waited out
        text = str(info.value)
        assert "sleepy-task" in text and "function_timeout=2.0" in text and "max_retries=1" in text
        assert isinstance(info.value, TimeoutError)
        assert Client(cluster).get({"a": 1, "b": (add, "a", 1)}, "b") == 2  # a fresh worker took over


def ones(n: int):
    import numpy as np

    return np.ones(n)


@pytest.mark.timeout(120)
def test_a_lost_kv_shard_or_mds_gives_a_clear_error_not_a_hang():
    dsk = {("x", i): (ones, 1000) for i in range(20)}
    dsk["total"] = (sum, [("x", i) for i in range(20)])
    with LocalCluster(n_workers=2, num_kv_shards=2) as cluster:
        client = Client(cluster)
        assert client.get(dsk, "total").sum() == 20 * 1000
        lost_shard = cluster.servers[1]
        port = lost_shard.endpoint[1]
        lost_shard.stop()
        started = time.monotonic()
        with pytest.raises(RedisUnavailableError, match=rf"{port}.*check that the MDS"):
            client.get(dsk, "total")
        cluster.servers[0].stop()  # the MDS itself
        with pytest.raises(RedisUnavailableError, match="lost the metadata store"):
            client.get(dsk, "total")
        assert time.monotonic() - started < HANG_GUARD
    assert cluster.pool is None  # close() still ended every worker


def hold_memory(mb: int, seconds: float) -> int:
    import numpy as np

    block = np.ones(mb * 2**20 // 8)  # touched, so resident
    time.sleep(seconds)
    return int(block[0])


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="memory is read from /proc")
@pytest.mark.timeout(180)
def test_enforce_memory_limit_fails_a_task_over_lambda_memory_mb_naming_it():
    with LocalCluster(n_workers=1, enforce_memory_limit=True, lambda_memory_mb=512, max_retries=1) as cluster:
        client = Client(cluster)
        assert client.get({"small-task": (hold_memory, 50, 0.5)}, "small-task") == 1  # within the limit
        # the big task holds its memory far longer than the monitor takes to notice (it samples every 0.2 s)
        with pytest.raises(MemoryLimitError) as info:
            client.get({"big-task": (hold_memory, 1200, HANG_GUARD), "out": (add, "big-task", 1)}, "out")
        text = str(info.value)
        assert "big-task" in text and "lambda_memory_mb=512" in text and "2 attempts" in text, text
        assert isinstance(info.value, MemoryError)
        assert client.get({"a": 1, "b": (add, "a", 1)}, "b") == 2  # the worker was replaced
