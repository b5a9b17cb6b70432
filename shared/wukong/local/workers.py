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

from wukong.errors import ExecutorCrashedError, FunctionTimeoutError
from wukong.executor import Executor, failure_event
from wukong.hooks import ExecutorHooks
from wukong.invocation import Invocation, Invoker
from wukong.serialization import dumps, loads
from wukong.redis_connection import blocking_timeout
from wukong.storage import JobStorage, RedisStores, StorageSpec, connect
from wukong.task_keys import task_key

log = logging.getLogger(__name__)

STOP = b"__wukong_stop__"
#: A busy worker reports its executors' counts (progress, statistics) at least this often.
FLUSH_INTERVAL = 0.2
#: How often the monitor looks for dead workers.
MONITOR_INTERVAL = 0.2
#: Lambda retries a failed asynchronous invocation twice by default.
DEFAULT_MAX_RETRIES = 2
#: A Redis server gone (refused, reset) or hung (no reply within redis_timeout).
_LOST = (redis.ConnectionError, redis.TimeoutError)
_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class RedisQueueInvoker(Invoker):
    """Asynchronous "invoke": append payloads to the pool's queue in one round trip."""

    def __init__(self, client: redis.Redis, queue_key: str):
        self.client = client
        self.queue_key = queue_key

    def invoke(self, payloads: Sequence[bytes]) -> None:
        for i in range(0, len(payloads), 1000):
            self.client.rpush(self.queue_key, *payloads[i : i + 1000])

    def backlog(self) -> int:
        return int(self.client.llen(self.queue_key))


def processing_key(queue_key: str, worker_id: int) -> str:
    """The list holding the payload worker ``worker_id`` is running, for recovery if it dies."""
    return f"{queue_key}:processing:{worker_id}"


class CurrentTaskFile(ExecutorHooks):
    """A small file per worker that the monitor reads: when the current invocation started (to
    enforce the function timeout, as Lambda does) and the key of the task running now (so a crash
    is reported against the task that caused it). One pwrite per task: far cheaper than Redis."""

    SIZE = 512  # bytes for the key; the invocation's start time follows

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def task_started(self, key: object) -> None:
        os.pwrite(self.fd, repr(key).encode("utf-8", "replace")[: self.SIZE].ljust(self.SIZE, b"\0"), 0)

    def invocation_started(self) -> None:
        os.pwrite(self.fd, f"{time.time():.3f}".encode().ljust(32, b"\0"), self.SIZE)

    def invocation_finished(self) -> None:
        os.pwrite(self.fd, b"\0" * 32, self.SIZE)

    @classmethod
    def read(cls, path: str) -> tuple[str | None, float | None]:
        """(key of the task running or last run, start time of the running invocation or None)."""
        try:
            with open(path, "rb") as f:
                data = f.read(cls.SIZE + 32)
        except OSError:
            return None, None
        key = data[: cls.SIZE].rstrip(b"\0").decode("utf-8", "replace") or None
        started = data[cls.SIZE :].rstrip(b"\0")
        return key, float(started) if started else None


def current_task_path(state_dir: str, worker_id: int) -> str:
    return os.path.join(state_dir, f"worker-{worker_id}.task")


def worker_main(spec: StorageSpec, queue_key: str, parent_pid: int, worker_id: int = 0,
                state_dir: str | None = None) -> None:
    """Body of one worker process: take invocations off the queue until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    processing = processing_key(queue_key, worker_id)
    try:
        stores = RedisStores(spec, single_connection=True)  # one thread here: pin the connections
        stores.mds.delete(processing)  # a replacement worker starts clean; the monitor has re-queued its payload
    except _LOST as exc:  # as below: a line, not a traceback; the monitor retries
        log.warning("worker %d cannot reach Redis and exits, to be replaced: %s", worker_id, exc)
        sys.exit(1)
    mds = stores.mds
    hooks = ExecutorHooks() if state_dir is None else CurrentTaskFile(current_task_path(state_dir, worker_id))
    executor = Executor(stores, RedisQueueInvoker(mds, queue_key), hooks=hooks, flush_interval=FLUSH_INTERVAL)
    idle_wait = blocking_timeout(1.0, spec)
    done_with_last = False
    while True:
        try:
            if done_with_last:  # release the finished payload and take the next in one round trip
                pipe = mds.pipeline(transaction=False)
                pipe.delete(processing)
                pipe.lmove(queue_key, processing, "LEFT", "RIGHT")
                payload = pipe.execute()[1]
            else:
                payload = mds.lmove(queue_key, processing, "LEFT", "RIGHT")
            done_with_last = False
            if payload is None:
                executor.flush()  # about to idle: report what this worker did
                payload = mds.blmove(queue_key, processing, idle_wait, "LEFT", "RIGHT")
        except _LOST as exc:
            if os.getppid() != parent_pid:
                return
            # the cluster's Redis is gone or hung (its owner may restart it): one line, not a traceback
            # per worker; the pool's monitor replaces this worker once Redis answers again
            log.warning("worker %d lost Redis and exits, to be replaced: %s", worker_id, exc)
            sys.exit(1)
        if payload is None:
            if os.getppid() != parent_pid:  # orphaned: the cluster's process died
                return
            continue
        done_with_last = True
        if payload == STOP:
            mds.delete(processing)
            return
        try:
            invocation = loads(payload)
        except Exception:
            log.exception("dropping an invocation payload that does not unpickle")
            continue
        if isinstance(hooks, CurrentTaskFile):
            hooks.invocation_started()
        try:
            executor.handle(invocation)
        except _LOST as exc:  # reporting a failure to a lost MDS: the next take off the queue says so
            log.warning("worker %d could not finish an invocation of job %s: %s", worker_id,
                        invocation.job.job_id, exc)
        except Exception:  # keep the warm worker alive: one bad invocation must not shrink the pool
            log.exception("an invocation failed outside its job's error handling")
        if isinstance(hooks, CurrentTaskFile):
            hooks.invocation_finished()


class WorkerPool:
    """``n_workers`` warm executor processes, replaced (and their invocation retried) if they die."""

    def __init__(self, spec: StorageSpec, queue_key: str, n_workers: int, limit_blas_threads: bool = True,
                 max_retries: int = DEFAULT_MAX_RETRIES, function_timeout: float | None = None):
        self.spec = spec
        self.queue_key = queue_key
        self.n_workers = n_workers
        self.limit_blas_threads = limit_blas_threads
        self.max_retries = max_retries
        self.function_timeout = function_timeout
        self._timed_out: set[int] = set()  # workers the monitor killed for running too long
        self.processes: list[subprocess.Popen] = []
        #: Workers that died and were replaced, with what became of their invocations (for reports/tests).
        self.crashes: list[dict[str, Any]] = []
        self._env: dict[str, str] = {}
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._control: redis.Redis | None = None
        self._state_dir: str | None = None

    def start(self) -> "WorkerPool":
        env = dict(os.environ)
        if self.limit_blas_threads:
            env.update({name: "1" for name in _BLAS_ENV})
        env["POWERTOOLS_TRACE_DISABLED"] = "1"
        # workers import task functions by reference (pickle and cloudpickle both do for any module
        # but __main__), so they must see the client's import path, as multiprocessing children do
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        self._env = env
        self._state_dir = tempfile.mkdtemp(prefix="wukong-workers-")
        self.processes = [self._spawn(i) for i in range(self.n_workers)]
        self._control = connect(self.spec.mds, self.spec)
        self._monitor = threading.Thread(target=self._watch, name="wukong-worker-monitor", daemon=True)
        self._monitor.start()
        return self

    def _spawn(self, worker_id: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wukong.local.worker_process"], stdin=subprocess.PIPE, env=self._env,
            start_new_session=True,  # Ctrl-C in a terminal reaches the client, not the workers
        )
        # the spec holds the Redis password: it goes through stdin, never argv or the environment
        proc.stdin.write(dumps((self.spec, self.queue_key, os.getpid(), worker_id, self._state_dir)))
        proc.stdin.close()
        return proc

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.processes)

    # --- crash recovery ------------------------------------------------------------------------
    def _watch(self) -> None:
        unrecovered: set[int] = set()
        while not self._stopping.wait(MONITOR_INTERVAL):
            for worker_id, proc in enumerate(self.processes):
                if self._stopping.is_set():
                    break
                if proc.poll() is None:
                    self._enforce_timeout(worker_id, proc)
                    continue
                try:
                    self._recover(worker_id, proc.returncode)
                except Exception as exc:  # Redis gone or hung (closing, restarting?): try again next round
                    if worker_id not in unrecovered:  # said once, not every round while Redis is away
                        log.warning("could not recover dead worker %d (will retry): %s: %s", worker_id,
                                    type(exc).__name__, exc, exc_info=not isinstance(exc, _LOST))
                    unrecovered.add(worker_id)
                else:
                    unrecovered.discard(worker_id)

    def _enforce_timeout(self, worker_id: int, proc: subprocess.Popen) -> None:
        """Kill a worker whose invocation ran past the function timeout, as Lambda stops a function;
        its invocation is then retried or failed like any other crash."""
        if self.function_timeout is None:
            return
        _, started = CurrentTaskFile.read(current_task_path(self._state_dir, worker_id))
        if started is not None and time.time() - started > self.function_timeout:
            self._timed_out.add(worker_id)
            proc.kill()

    def _recover(self, worker_id: int, returncode: int) -> None:
        """Re-queue (or give up on) what a dead worker was running, then replace the worker."""
        processing = processing_key(self.queue_key, worker_id)
        pipe = self._control.pipeline(transaction=True)
        pipe.lrange(processing, 0, -1)
        pipe.delete(processing)
        payloads = pipe.execute()[0]
        for payload in payloads:
            if payload != STOP:
                self.crashes.append(self._retry_or_fail(payload, worker_id, returncode))
        with contextlib.suppress(OSError):
            os.unlink(current_task_path(self._state_dir, worker_id))
        if not self._stopping.is_set():
            self.processes[worker_id] = self._spawn(worker_id)

    def _retry_or_fail(self, payload: bytes, worker_id: int, returncode: int) -> dict[str, Any]:
        inv: Invocation = loads(payload)  # the envelope is plain data: no user code is imported here
        timed_out = worker_id in self._timed_out
        self._timed_out.discard(worker_id)
        cause = f"ran past function_timeout={self.function_timeout} s" if timed_out else describe_exit(returncode)
        running, _ = CurrentTaskFile.read(current_task_path(self._state_dir, worker_id))
        if inv.attempt < self.max_retries:
            inv.attempt += 1
            self._control.lpush(self.queue_key, dumps(inv))  # to the front: it has waited already
            log.warning("executor %d of job %s died (%s) running task id %d; retry %d of %d",
                        worker_id, inv.job.job_id, cause, inv.start, inv.attempt, self.max_retries)
            return {"job_id": inv.job.job_id, "task": running, "cause": cause, "action": "retried"}
        stores = RedisStores(inv.job.storage)
        try:
            storage = JobStorage(stores, inv.job.job_id, inv.job.ttl, inv.job.n_outputs)
            key = running or task_key(inv, storage)
            attempts = f"on each of its {inv.attempt + 1} attempts; giving up after max_retries={self.max_retries}"
            if timed_out:
                exc: ExecutorCrashedError = FunctionTimeoutError(
                    f"the executor running task {key} {cause} {attempts}. Raise function_timeout "
                    f"(Lambda allows up to 900 s) or split the task into smaller ones."
                )
            else:
                exc = ExecutorCrashedError(
                    f"the executor running task {key} died ({cause}) {attempts}. A task that exhausts "
                    f"memory or kills its process does this; run it alone to see why."
                )
            event = failure_event(key, exc)  # re-raised as itself
            event["key"] = key  # already a repr
            storage.end_job("failed", event)
        finally:
            stores.close()
        return {"job_id": inv.job.job_id, "task": key, "cause": cause, "action": "failed"}

    def stop(self, client: redis.Redis | None, timeout: float = 5.0) -> None:
        """Ask every worker to stop, then terminate and kill whatever is left."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join(2 * MONITOR_INTERVAL + 1)
            self._monitor = None
        if client is not None:
            with contextlib.suppress(redis.RedisError):
                client.delete(self.queue_key)
                client.rpush(self.queue_key, *([STOP] * len(self.processes)))
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2)
            if proc.poll() is None:
                proc.kill()
                proc.wait(2)
        if client is not None:
            with contextlib.suppress(redis.RedisError):
                client.delete(*[processing_key(self.queue_key, i) for i in range(len(self.processes))])
        self.processes.clear()
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
        if self._control is not None:
            self._control.close()
            self._control = None


def describe_exit(returncode: int) -> str:
    """'killed by SIGKILL' for a negative return code, else 'exit code N'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
