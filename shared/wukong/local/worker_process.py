"""One local worker process, ``python -m wukong.local.worker_process``: takes invocations off the
pool's queue and runs them with the same :class:`~wukong.executor.Executor` a Lambda runs.

The pool writes the setup to stdin and keeps the pipe open: when it closes, the owner is gone
(closed the pool, or died by any signal), and the worker exits at once, mid-task or idle.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import IO

from wukong.executor import Executor
from wukong.local.worker_status import STOP, WorkerStatusFile, processing_key, read_setup, status_path
from wukong.local.workers import FLUSH_INTERVAL, LOST_REDIS, RedisQueueInvoker
from wukong.redis_connection import blocking_timeout
from wukong.serialization import loads
from wukong.storage import RedisStores, StorageSpec

log = logging.getLogger("wukong.local.worker")


def exit_with_owner(stream: IO[bytes]) -> None:
    """Exit the moment ``stream`` (the pool's pipe, which it never writes to again) ends."""

    def watch() -> None:
        while stream.read(1 << 16):
            pass
        os._exit(0)  # the job this worker runs died with its owner: nothing to save or report

    threading.Thread(target=watch, name="wukong-owner-watch", daemon=True).start()


def worker_main(spec: StorageSpec, queue_key: str, worker_id: int, state_dir: str) -> None:
    """Take invocations off the queue until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the owner's to handle
    processing = processing_key(queue_key, worker_id)
    try:
        stores = RedisStores(spec, single_connection=True)  # one thread here: pin the connections
        stores.mds.delete(processing)  # a replacement worker starts clean; the monitor has re-queued its payload
    except LOST_REDIS as exc:  # as below: a line, not a traceback; the monitor retries
        log.warning("worker %d cannot reach Redis and exits, to be replaced: %s", worker_id, exc)
        sys.exit(1)
    mds = stores.mds
    status = WorkerStatusFile(status_path(state_dir, worker_id))
    executor = Executor(stores, RedisQueueInvoker(mds, queue_key), hooks=status, flush_interval=FLUSH_INTERVAL)
    idle_wait = blocking_timeout(1.0, spec)  # under redis_timeout, so a quiet server never looks hung
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
        except LOST_REDIS as exc:
            # the cluster's Redis is gone or hung (its owner may restart it): one line, not a traceback
            # per worker; the pool's monitor replaces this worker once Redis answers again
            log.warning("worker %d lost Redis and exits, to be replaced: %s", worker_id, exc)
            sys.exit(1)
        if payload is None:
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
        status.invocation_started(invocation.job.job_id)
        try:
            executor.handle(invocation)
        except LOST_REDIS as exc:  # reporting a failure to a lost MDS: the next take off the queue says so
            log.warning("worker %d could not finish an invocation of job %s: %s", worker_id,
                        invocation.job.job_id, exc)
        except Exception:  # keep the warm worker alive: one bad invocation must not shrink the pool
            log.exception("an invocation failed outside its job's error handling")
        status.invocation_finished()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    setup = read_setup(sys.stdin.buffer)
    exit_with_owner(sys.stdin.buffer)
    worker_main(*setup)
