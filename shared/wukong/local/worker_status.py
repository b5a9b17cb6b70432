"""What a local worker and its pool share besides the invocation queue: the setup message on the
worker's stdin (after which the pipe stays open, its closing meaning "your owner is gone"), the
per-worker "processing" list, and a small status file the pool's monitor reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import time
from collections.abc import Mapping
from typing import IO, Any, NamedTuple

from wukong.hooks import ExecutorHooks
from wukong.serialization import dumps, loads

#: Queued to a worker to end it cleanly.
STOP = b"__wukong_stop__"
_LENGTH = struct.Struct(">Q")


def processing_key(queue_key: str, worker_id: int) -> str:
    """The list holding the payload worker ``worker_id`` is running, for recovery if it dies."""
    return f"{queue_key}:processing:{worker_id}"


def status_path(state_dir: str, worker_id: int) -> str:
    return os.path.join(state_dir, f"worker-{worker_id}.task")


def write_setup(stream: IO[bytes], setup: tuple) -> None:
    """Send a worker its setup; the stream stays open (see :func:`read_setup`)."""
    blob = dumps(setup)
    stream.write(_LENGTH.pack(len(blob)) + blob)
    stream.flush()


def read_setup(stream: IO[bytes]) -> Any:
    """The setup the pool wrote; what follows on ``stream`` is only its end of file."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise SystemExit(0)  # the owner died before it finished starting this worker
    return loads(stream.read(_LENGTH.unpack(header)[0]))


class WorkerStatus(NamedTuple):
    task: str | None  # repr of the key of the task running (or run last)
    started: float | None  # when the running invocation started (time.time()); None when idle
    job_id: str | None  # the running invocation's job
    tasks: int = 0  # tasks the running invocation finished that are in no report yet
    pending: dict[str, tuple[int, dict]] = {}  # job id -> (ttl, counts) finished, not yet reported


class WorkerStatusFile(ExecutorHooks):
    """A small file per worker that the monitor reads: the key of the task running now (so a crash
    is reported against the task that caused it), when the current invocation started and of
    which job (to enforce the function timeout, and to stop the tasks of a job that has ended),
    and the counts not yet reported to Redis (so a killed worker's work still shows in its jobs'
    reports). One or two pwrites per task: far cheaper than Redis."""

    KEY_SIZE = 512
    STARTED = slice(KEY_SIZE, KEY_SIZE + 32)
    JOB = slice(KEY_SIZE + 32, KEY_SIZE + 96)
    TASKS = slice(KEY_SIZE + 96, KEY_SIZE + 112)
    PENDING = KEY_SIZE + 112  # 8-byte length, then JSON
    MAX_PENDING = 1 << 16

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._tasks = 0

    def task_started(self, key: object) -> None:
        os.pwrite(self.fd, repr(key).encode("utf-8", "replace")[: self.KEY_SIZE].ljust(self.KEY_SIZE, b"\0"), 0)

    def task_finished(self) -> None:
        self._tasks += 1
        os.pwrite(self.fd, str(self._tasks).encode().ljust(16, b"\0"), self.TASKS.start)

    def running_counts_reported(self) -> None:
        self._tasks = 0
        os.pwrite(self.fd, b"\0" * 16, self.TASKS.start)

    def counts_pending(self, pending: Mapping[str, tuple[int, Mapping[str, float]]]) -> None:
        """The running invocation's counts moved to ``pending`` (or ``pending`` was reported)."""
        self._tasks = 0
        blob = json.dumps({job: [ttl, dict(counts)] for job, (ttl, counts) in pending.items()}).encode()
        if len(blob) > self.MAX_PENDING:  # never expected (a few jobs' counters); keep the file small
            blob = b"{}"
        os.pwrite(self.fd, b"\0" * 16 + _LENGTH.pack(len(blob)) + blob, self.TASKS.start)

    def invocation_started(self, job_id: str) -> None:
        os.pwrite(self.fd, f"{time.time():.3f}".encode().ljust(32, b"\0") + job_id.encode()[:64].ljust(64, b"\0"),
                  self.KEY_SIZE)

    def invocation_finished(self) -> None:
        os.pwrite(self.fd, b"\0" * 96, self.KEY_SIZE)

    @classmethod
    def read(cls, path: str) -> WorkerStatus:
        try:
            with open(path, "rb") as f:
                data = f.read(cls.PENDING + _LENGTH.size + cls.MAX_PENDING)
        except OSError:
            return WorkerStatus(None, None, None)
        key = data[: cls.KEY_SIZE].rstrip(b"\0").decode("utf-8", "replace") or None
        started = data[cls.STARTED].rstrip(b"\0")
        job_id = data[cls.JOB].rstrip(b"\0").decode(errors="replace") or None
        tasks = data[cls.TASKS].rstrip(b"\0")
        pending: dict = {}
        header = data[cls.PENDING : cls.PENDING + _LENGTH.size]
        if len(header) == _LENGTH.size:
            n = _LENGTH.unpack(header)[0]
            with contextlib.suppress(ValueError):
                pending = {job: (int(ttl), counts) for job, (ttl, counts)
                           in json.loads(data[cls.PENDING + _LENGTH.size : cls.PENDING + _LENGTH.size + n]).items()}
        return WorkerStatus(key, float(started) if started else None, job_id if started else None,
                            int(tasks) if tasks else 0, pending)
