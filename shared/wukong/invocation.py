"""What one executor invocation carries, and the small interface every invoke backend implements.

An :class:`Invocation` names the job, the task to start from, where storage is, and may carry
upstream values and schedule records inline, as long as the serialized payload fits under the
payload limit. Backends (local worker queue, AWS Lambda) only move the bytes.

The envelope holds only plain data (ints, strings, bytes and Wukong's own dataclasses): anything
that holds user code travels as an opaque blob the executor unpickles inside its error handling,
so a schedule whose functions cannot be imported fails the job instead of vanishing unread.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from wukong.redis_connection import DEFAULT_BULK_LIMIT
from wukong.storage import StorageSpec


@dataclass(frozen=True)
class JobSettings:
    """Per-job settings every executor of the job needs."""

    job_id: str
    storage: StorageSpec
    ttl: int
    n_outputs: int
    payload_limit: int
    big_task_threshold: int
    max_output_size: int | None = None  # larger serialized outputs fail their task; None: no limit
    heartbeat_interval: int = 0  # seconds between liveness reports to the runtime (AWS heartbeats); 0: none
    delayed_io_max_wait: float = 0.0  # seconds a big output may wait in memory for its fan-ins; 0: never
    function_timeout: float | None = None  # the executor's time limit; delayed I/O ends well before it
    chunk_size: int | None = None  # outputs this big or bigger are split over the KV shards; None: never
    num_chunks_for_large_tasks: int | None = None  # chunks per chunked output; None: one per KV shard
    proxy: tuple[str, int] | None = None  # the KV proxy that takes wide fan-outs; None: executors do them
    max_task_fanout: int = 10  # fan-outs this wide go to the proxy
    value_limit: int = DEFAULT_BULK_LIMIT  # the longest string the stores take (read at planning): longer ones are chunked


@dataclass
class Invocation:
    """The payload of one executor invocation."""

    job: JobSettings
    start: int  # task id to run first
    start_path: int | None = None  # the path holding the start task's record, when not sent along
    inline_values: dict[int, bytes] = field(default_factory=dict)  # serialized upstream outputs
    records_blob: bytes | None = None  # serialized {task id: TaskRecord} sent along
    path_blob: bytes | None = None  # a whole serialized Path sent along (leaf invocations)
    attempt: int = 0


class Invoker(abc.ABC):
    """Starts executors asynchronously: ``invoke`` returns before they run."""

    @abc.abstractmethod
    def invoke(self, payloads: Sequence[bytes]) -> None:
        """Start one executor per serialized :class:`Invocation`."""

    def backlog(self) -> int:
        """Invocations waiting for a free executor. 0 where concurrency is unbounded (Lambda); a
        fixed pool reports its queue, so a delayed-I/O waiter never holds a slot work waits for."""
        return 0

    def job_ended(self, job_id: str) -> None:
        """The job is over (done, failed, cancelled, timed out): stop what still runs of it, where
        the backend can. Lambda cannot stop a running function: its executors stop at their next
        check of the job's end (wukong.executor_state.CHECK_INTERVAL); the local pool kills its workers."""


class ParallelInvoker(Invoker):
    """Splits a large invoke into batches started by ``n_invokers`` threads over ``inner``.

    Thousands of leaves are started this way: each batch is one pipelined call of the inner
    backend, and the batches overlap their round trips. ``inner`` must be thread-safe (a pooled
    Redis client, a boto3 client). Small invokes go straight through, with no thread hand-off.
    """

    def __init__(self, inner: Invoker, n_invokers: int, min_batch: int = 500):
        self.inner = inner
        self.n_invokers = max(1, n_invokers)
        self.min_batch = max(1, min_batch)

    def invoke(self, payloads: Sequence[bytes]) -> None:
        batches = split_batches(payloads, self.n_invokers, self.min_batch)
        if len(batches) <= 1:
            self.inner.invoke(payloads)
            return
        with ThreadPoolExecutor(max_workers=len(batches), thread_name_prefix="wukong-invoker") as pool:
            futures = [pool.submit(self.inner.invoke, batch) for batch in batches]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:  # every batch was tried; one failure still fails the caller's job
            raise errors[0]

    def job_ended(self, job_id: str) -> None:
        self.inner.job_ended(job_id)


def split_batches(items: Sequence[bytes], n: int, min_batch: int) -> list[Sequence[bytes]]:
    """At most ``n`` contiguous, near-equal batches of at least ``min_batch`` items (the last may be smaller)."""
    if not items:
        return []
    count = max(1, min(n, len(items) // min_batch))
    size = -(-len(items) // count)
    return [items[i : i + size] for i in range(0, len(items), size)]
