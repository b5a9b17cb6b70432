"""Local stand-in for AWS Lambda: a pool of warm worker processes fed by a Redis list.

Invoking an executor is an RPUSH of its payload, which returns at once, just as an
asynchronous Lambda invoke does; each worker process BLPOPs payloads and runs the same
:class:`~wukong.executor.Executor` a Lambda runs. The number of workers is the concurrency
limit. Executors never wait on each other, so a fixed pool cannot deadlock.

Like Lambda, the pool retries an invocation whose executor died (SIGKILL, out of memory): each
worker moves the payload it is running into its own "processing" list (LMOVE, the reliable-queue
pattern), and a monitor thread in the cluster's process puts a dead worker's payload back on the
queue, up to ``max_retries`` times, then fails the job naming the task. The dead worker is replaced.

Workers are started as ``python -m wukong.local.worker_process`` rather than with multiprocessing:
a spawned multiprocessing child re-imports the user's ``__main__``, which breaks scripts
written without an ``if __name__ == "__main__"`` guard, as the seed's examples are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from wukong.errors import ExecutorCrashedError, FunctionTimeoutError, MemoryLimitError
from wukong.job_events import JobEvent
from wukong.invocation import Invocation, Invoker
from wukong.local.worker_status import (
    STOP, WorkerStatus, WorkerStatusFile, processing_key, status_path, write_setup,
)
from wukong.serialization import dumps, loads
from wukong.storage import JobStorage, RedisStores, StorageSpec
from wukong.task_keys import task_key

log = logging.getLogger(__name__)

#: A busy worker reports its executors' counts (progress, statistics) at least this often.
FLUSH_INTERVAL = 0.2
#: How often the monitor looks for dead workers.
MONITOR_INTERVAL = 0.2
#: How long after its job ended a worker may go on before it is killed: an executor between
#: tasks stops by itself at its next check, keeping its warm process.
STOP_GRACE = 0.5
#: Lambda retries a failed asynchronous invocation twice by default.
DEFAULT_MAX_RETRIES = 2
#: A Redis server gone (refused, reset) or hung (no reply within redis_timeout).
LOST_REDIS = (redis.ConnectionError, redis.TimeoutError)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class RedisQueueInvoker(Invoker):
    """Asynchronous "invoke": append payloads to the pool's queue in one round trip."""

    def __init__(self, client: redis.Redis, queue_key: str, pool: WorkerPool | None = None):
        self.client = client
        self.queue_key = queue_key
        self.pool = pool  # the pool behind the queue, where this invoker is the cluster's own

    def job_ended(self, job_id: str) -> None:
        if self.pool is not None:
            self.pool.stop_job(job_id)

    def invoke(self, payloads: Sequence[bytes]) -> None:
        for i in range(0, len(payloads), 1000):
            self.client.rpush(self.queue_key, *payloads[i : i + 1000])

    def backlog(self) -> int:
        return int(self.client.llen(self.queue_key))


class WorkerPool:
    """``n_workers`` warm executor processes, replaced (and their invocation retried) if they die,
    and stopped (then replaced) when the job they run has ended: cancelled, timed out, failed."""

    def __init__(self, spec: StorageSpec, queue_key: str, n_workers: int, limit_blas_threads: bool = True,
                 max_retries: int = DEFAULT_MAX_RETRIES, function_timeout: float | None = None,
                 memory_limit_mb: int | None = None):
        self.spec = spec
        self.queue_key = queue_key
        self.n_workers = n_workers
        self.limit_blas_threads = limit_blas_threads
        self.max_retries = max_retries
        self.function_timeout = function_timeout
        self.memory_limit_mb = memory_limit_mb  # None: not enforced
        self.processes: list[subprocess.Popen] = []
        #: Workers that died and were replaced, with what became of their invocations (for reports/tests).
        self.crashes: list[dict[str, Any]] = []
        #: Workers the monitor killed itself, and why: ("timeout", None) or ("job ended", job id).
        self._killed: dict[int, tuple[str, str | None]] = {}
        self._ended: dict[str, float] = {}  # ended job id -> when to kill what still runs of it
        self._lock = threading.Lock()
        self._env: dict[str, str] = {}
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._stores: RedisStores | None = None
        self._state_dir: str | None = None
        self._own_state_dir = False

    def start(self, tmp_root: str | None = None) -> "WorkerPool":
        """Start the workers; their status files and temporary files go below ``tmp_root``."""
        env = dict(os.environ)
        if self.limit_blas_threads:
            env.update({name: "1" for name in _BLAS_ENV})
        env["POWERTOOLS_TRACE_DISABLED"] = "1"
        # workers import task functions by reference (pickle and cloudpickle both do for any module
        # but __main__), so they must see the client's import path, as multiprocessing children do
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        if tmp_root is not None:
            # like Lambda's /tmp: what tasks write (partd's shuffle files too) goes with the cluster
            env["TMPDIR"] = os.path.join(tmp_root, "tmp")
            os.makedirs(env["TMPDIR"], exist_ok=True)
            self._state_dir = os.path.join(tmp_root, "workers")
            os.makedirs(self._state_dir, exist_ok=True)
        else:
            self._state_dir, self._own_state_dir = tempfile.mkdtemp(prefix="wukong-workers-"), True
        self._env = env
        self.processes = [self._spawn(i) for i in range(self.n_workers)]
        self._stores = RedisStores(self.spec)
        self._monitor = threading.Thread(target=self._watch, name="wukong-worker-monitor", daemon=True)
        self._monitor.start()
        return self

    def _spawn(self, worker_id: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wukong.local.worker_process"], stdin=subprocess.PIPE, env=self._env,
            start_new_session=True,  # Ctrl-C in a terminal reaches the client, not the workers
        )
        # the spec holds the Redis password: it goes through stdin, never argv or the environment.
        # The pipe stays open: the worker exits when it closes, however this process ends.
        write_setup(proc.stdin, (self.spec, self.queue_key, worker_id, self._state_dir))
        return proc

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.processes)

    # --- the monitor: crashes, timeouts, ended jobs ----------------------------------------------
    def _watch(self) -> None:
        unrecovered: set[int] = set()
        while not self._stopping.wait(MONITOR_INTERVAL):
            busy: dict[int, WorkerStatus] = {}
            for worker_id, proc in enumerate(self.processes):
                if self._stopping.is_set():
                    return
                if proc.poll() is None:
                    status = WorkerStatusFile.read(status_path(self._state_dir, worker_id))
                    if status.started is not None:
                        busy[worker_id] = status
                        self._enforce_timeout(worker_id, proc, status)
                        self._enforce_memory_limit(worker_id, proc)
                    continue
                try:
                    self._recover(worker_id, proc)
                except Exception as exc:  # Redis gone or hung (closing, restarting?): try again next round
                    if worker_id not in unrecovered:  # said once, not every round while Redis is away
                        log.warning("could not recover dead worker %d (will retry): %s: %s", worker_id,
                                    type(exc).__name__, exc, exc_info=not isinstance(exc, LOST_REDIS))
                    unrecovered.add(worker_id)
                else:
                    unrecovered.discard(worker_id)
            self._stop_ended_jobs(busy)

    def _enforce_timeout(self, worker_id: int, proc: subprocess.Popen, status: WorkerStatus) -> None:
        """Kill a worker whose invocation ran past the function timeout, as Lambda stops a function;
        its invocation is then retried or failed like any other crash."""
        if self.function_timeout is not None and time.time() - status.started > self.function_timeout:
            self._killed[worker_id] = ("timeout", None)
            proc.kill()

    def _enforce_memory_limit(self, worker_id: int, proc: subprocess.Popen) -> None:
        """Kill a busy worker whose memory passed the limit, as Lambda kills a function that does
        ("Runtime exited with error: signal: killed"); retried or failed like any other crash."""
        if self.memory_limit_mb is None or worker_id in self._killed:
            return
        used = resident_mb(proc.pid)
        if used is not None and used > self.memory_limit_mb:
            self._killed[worker_id] = ("memory", f"{used:.0f}")
            proc.kill()

    def stop_job(self, job_id: str) -> None:
        """The job has ended: its executors still running STOP_GRACE from now are killed (an
        executor stops by itself between tasks, keeping its warm process, but not inside a task
        that sleeps or computes); their replacements take the next job's invocations at once."""
        with self._lock:
            self._ended[job_id] = time.monotonic() + STOP_GRACE

    def _stop_ended_jobs(self, busy: dict[int, WorkerStatus]) -> None:
        now = time.monotonic()
        with self._lock:
            # forgotten once nothing of the job runs any more (and at the latest after a minute)
            running = {s.job_id for s in busy.values()}
            self._ended = {j: t for j, t in self._ended.items() if j in running and now - t < 60}
            due = {j for j, t in self._ended.items() if now >= t}
        for worker_id, status in busy.items():
            if status.job_id in due and worker_id not in self._killed:
                self._killed[worker_id] = ("job ended", status.job_id)
                self.processes[worker_id].kill()

    def _recover(self, worker_id: int, proc: subprocess.Popen) -> None:
        """Account for, re-queue or give up on what a dead worker was running; replace the worker."""
        if proc.stdin is not None:
            proc.stdin.close()
        path = status_path(self._state_dir, worker_id)
        status = WorkerStatusFile.read(path)
        killed = self._killed.pop(worker_id, None)
        processing = processing_key(self.queue_key, worker_id)
        pipe = self._stores.mds.pipeline(transaction=True)
        pipe.lrange(processing, 0, -1)
        pipe.delete(processing)
        payloads = pipe.execute()[0]
        self._report_unflushed(status)
        for payload in payloads:
            if payload != STOP:
                self.crashes.append(self._after_death(loads(payload), worker_id, proc.returncode, status, killed))
        with contextlib.suppress(OSError):
            os.unlink(path)
        if not self._stopping.is_set():
            self.processes[worker_id] = self._spawn(worker_id)

    def _report_unflushed(self, status: WorkerStatus) -> None:
        """Add to the jobs' totals what a dead worker had counted but not yet reported, so that a
        job's report stays exact when its executors are killed."""
        for job_id, (ttl, counts) in status.pending.items():
            JobStorage(self._stores, job_id, ttl, 0).flush_counts(counts)

    def _after_death(self, inv: Invocation, worker_id: int, returncode: int, status: WorkerStatus,
                     killed: tuple[str, str | None] | None) -> dict[str, Any]:
        storage = JobStorage.for_job(self._stores, inv.job)
        lost = {"tasks": status.tasks, "executors_lost": 1,
                "busy_seconds": max(0.0, time.time() - status.started) if status.started else 0.0}
        if killed is not None and killed[0] == "job ended" and killed[1] == inv.job.job_id:
            storage.flush_counts(lost)  # the job is over: nothing to retry, nothing to report
            log.info("stopped executor %d: its job %s has ended", worker_id, inv.job.job_id)
            return {"job_id": inv.job.job_id, "task": status.task, "cause": "job ended", "action": "stopped"}
        timed_out = killed is not None and killed[0] == "timeout"
        out_of_memory = killed is not None and killed[0] == "memory"
        if timed_out:
            cause = f"ran past function_timeout={self.function_timeout} s"
        elif out_of_memory:
            cause = f"used {killed[1]} MB, over lambda_memory_mb={self.memory_limit_mb}"
        else:
            cause = describe_exit(returncode)
        if inv.attempt < self.max_retries:
            inv.attempt += 1
            storage.flush_counts({**lost, "invoked": 1})  # a retry is one more execution, as on Lambda
            self._stores.mds.lpush(self.queue_key, dumps(inv))  # to the front: it has waited already
            log.warning("executor %d of job %s died (%s) running task id %d; retry %d of %d",
                        worker_id, inv.job.job_id, cause, inv.start, inv.attempt, self.max_retries)
            return {"job_id": inv.job.job_id, "task": status.task, "cause": cause, "action": "retried"}
        storage.flush_counts(lost)
        key = status.task or task_key(inv, storage)
        attempts = f"on each of its {inv.attempt + 1} attempts; giving up after max_retries={self.max_retries}"
        if timed_out:
            exc: ExecutorCrashedError = FunctionTimeoutError(
                f"the executor running task {key} {cause} {attempts}. Raise function_timeout "
                f"(Lambda allows up to 900 s) or split the task into smaller ones."
            )
        elif out_of_memory:
            exc = MemoryLimitError(
                f"the executor running task {key} {cause} (enforce_memory_limit) {attempts}. Lambda "
                f"would kill it too: raise lambda_memory_mb (up to 10240) or make the task's data smaller."
            )
        else:
            exc = ExecutorCrashedError(
                f"the executor running task {key} died ({cause}) {attempts}. A task that exhausts "
                f"memory or kills its process does this; run it alone to see why."
            )
        storage.end_job(JobEvent.task_failed(None, exc, shown_key=key))  # re-raised as itself
        return {"job_id": inv.job.job_id, "task": key, "cause": cause, "action": "failed"}

    def stop(self, client: redis.Redis | None, timeout: float = 1.0) -> None:
        """Stop every worker: idle ones take a STOP off the queue; whatever still runs after
        ``timeout`` (the cluster is closing: its jobs are over) is terminated, then killed."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join(2 * MONITOR_INTERVAL + 1)
            self._monitor = None
        if client is not None:
            with contextlib.suppress(redis.RedisError):
                client.delete(self.queue_key)
                client.rpush(self.queue_key, *([STOP] * len(self.processes)))
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
            if proc.poll() is None:
                proc.kill()
                proc.wait(2)
            if proc.stdin is not None:
                proc.stdin.close()
        if client is not None:
            with contextlib.suppress(redis.RedisError):
                client.delete(*[processing_key(self.queue_key, i) for i in range(len(self.processes))])
        self.processes.clear()
        if self._own_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
        self._state_dir = None
        if self._stores is not None:
            self._stores.close()
            self._stores = None


def resident_mb(pid: int) -> float | None:
    """The resident memory of process ``pid`` in MB (Linux's /proc; None where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE / 2**20
    except (OSError, ValueError, IndexError):
        return None


def describe_exit(returncode: int) -> str:
    """'killed by SIGKILL' for a negative return code, else 'exit code N'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
