"""Local stand-in for AWS Lambda: a pool of warm worker processes fed by a Redis list.

Invoking an executor is an RPUSH of its payload, which returns at once, just as an
asynchronous Lambda invoke does; each worker process BLPOPs payloads and runs the same
:class:`~wukong.executor.Executor` a Lambda runs. The number of workers is the concurrency
limit. Executors never wait on each other, so a fixed pool cannot deadlock.

Workers are started as ``python -m wukong.local.worker_process`` rather than with multiprocessing:
a spawned multiprocessing child re-imports the user's ``__main__``, which breaks scripts
written without an ``if __name__ == "__main__"`` guard, as the seed's examples are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

import redis

from wukong.executor import Executor
from wukong.invocation import Invoker
from wukong.serialization import dumps, loads
from wukong.storage import RedisStores, StorageSpec

log = logging.getLogger(__name__)

STOP = b"__wukong_stop__"
#: A busy worker reports its executors' counts (progress, statistics) at least this often.
FLUSH_INTERVAL = 0.2
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


def worker_main(spec: StorageSpec, queue_key: str, parent_pid: int) -> None:
    """Body of one worker process: take invocations off the queue until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    stores = RedisStores(spec, single_connection=True)  # one thread here: pin the connections
    executor = Executor(stores, RedisQueueInvoker(stores.mds, queue_key), flush_interval=FLUSH_INTERVAL)
    while True:
        try:
            payload = stores.mds.lpop(queue_key)
            if payload is None:
                executor.flush()  # about to idle: report what this worker did
                item = stores.mds.blpop([queue_key], timeout=1)
                payload = None if item is None else item[1]
        except redis.ConnectionError:
            if os.getppid() != parent_pid:
                return
            raise
        if payload is None:
            if os.getppid() != parent_pid:  # orphaned: the cluster's process died
                return
            continue
        if payload == STOP:
            return
        try:
            invocation = loads(payload)
        except Exception:
            log.exception("dropping an invocation payload that does not unpickle")
            continue
        try:
            executor.handle(invocation)
        except Exception:  # keep the warm worker alive: one bad invocation must not shrink the pool
            log.exception("an invocation failed outside its job's error handling")


class WorkerPool:
    """``n_workers`` warm executor processes."""

    def __init__(self, spec: StorageSpec, queue_key: str, n_workers: int, limit_blas_threads: bool = True):
        self.spec = spec
        self.queue_key = queue_key
        self.n_workers = n_workers
        self.limit_blas_threads = limit_blas_threads
        self.processes: list[subprocess.Popen] = []

    def start(self) -> "WorkerPool":
        env = dict(os.environ)
        if self.limit_blas_threads:
            env.update({name: "1" for name in _BLAS_ENV})
        env["POWERTOOLS_TRACE_DISABLED"] = "1"
        # workers import task functions by reference (pickle and cloudpickle both do for any module
        # but __main__), so they must see the client's import path, as multiprocessing children do
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        # the spec holds the Redis password: it goes through stdin, never argv or the environment
        boot = dumps((self.spec, self.queue_key, os.getpid()))
        for _ in range(self.n_workers):
            proc = subprocess.Popen(
                [sys.executable, "-m", "wukong.local.worker_process"], stdin=subprocess.PIPE, env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches the client, not the workers
            )
            proc.stdin.write(boot)
            proc.stdin.close()
            self.processes.append(proc)
        return self

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.processes)

    def stop(self, client: redis.Redis | None, timeout: float = 5.0) -> None:
        """Ask every worker to stop, then terminate and kill whatever is left."""
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
        self.processes.clear()

