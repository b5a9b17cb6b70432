"""An in-memory backend: the real executor (its state machine and its driver) run against dicts and
a synchronous invocation queue, with no Redis and no processes, for tests and property checks.

:func:`run_in_memory` plans a Dask graph with the real schedule generator, then runs every
invocation, one after another, through :class:`wukong.executor.Executor`; :class:`MemoryJob`
answers the driver's storage calls the way the Redis Lua scripts do (``tests/test_memory_backend.py``
runs the same cases against both). Delayed I/O is off: with one invocation at a time, a held output
could only wait for its deadline.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dask._task_spec import DataNode
from dask.local import nested_get

from wukong.executor import Executor
from wukong.graph import normalize_graph
from wukong.hooks import JobContext
from wukong.invocation import Invoker, JobSettings
from wukong.planning import dump_paths, leaf_payload
from wukong.job_events import JobEvent, raise_job_error
from wukong.redis_connection import StorageSpec
from wukong.schedule import DependentRef, generate_schedules
from wukong.serialization import loads
from wukong.storage import StorageStats

#: Where an in-memory job's storage "is": nowhere (no executor connects to it).
MEMORY_SPEC = StorageSpec(mds=("memory", 0), kv=())


@dataclass
class MemoryJob:
    """One job's storage in memory, with the method names and answers of ``storage.JobStorage``."""

    job_id: str
    n_outputs: int
    paths: list[bytes]
    values: dict[int, bytes] = field(default_factory=dict)
    results: dict[int, bytes] = field(default_factory=dict)
    events: list[JobEvent] = field(default_factory=list)
    counts: dict[str, float] = field(default_factory=dict)
    stats: StorageStats = field(default_factory=StorageStats)
    ended: bool = False
    _bits: dict[int, set[int]] = field(default_factory=dict)
    _claimers: dict[int, int] = field(default_factory=dict)
    _waiters: dict[int, int] = field(default_factory=dict)
    _started: dict[int, int] = field(default_factory=dict)
    warnings: list[bytes] = field(default_factory=list)

    @property
    def context(self) -> JobContext:
        return JobContext(self.job_id, 3600, None, "memory:events")

    def claim_start(self, tid: int, attempt: int) -> str:
        if self.ended:
            return "ended"
        if self._started.get(tid, -1) >= attempt:
            return "duplicate"
        self._started[tid] = attempt
        return "run"

    def get_path(self, pid: int) -> bytes:
        return self.paths[pid]

    def get_values(self, tids: Iterable[int]) -> dict[int, bytes]:
        out = {}
        for tid in tids:
            if tid not in self.values:
                raise LookupError(f"intermediate value of task id {tid} is missing from the memory store")
            out[tid] = self.values[tid]
            self.stats.kv_bytes_read += len(out[tid])
        return out

    def put_value(self, tid: int, data: bytes) -> None:
        self.values[tid] = data
        self.stats.kv_bytes_written += len(data)

    def bump_counters(self, refs: Sequence[DependentRef], value: tuple[int, bytes] | None = None,
                      claimer: int = -1, retry: bool = False) -> list[int]:
        """As the fan-in script: set this upstream's bit; the call that completes a counter claims
        its dependent, and a retry of the claiming invocation claims it again."""
        if value is not None:
            self.put_value(*value)
        claimed = []
        for ref in refs:
            bits = self._bits.setdefault(ref.tid, set())
            new = ref.slot not in bits
            bits.add(ref.slot)
            if len(bits) == ref.n_deps and (new or (retry and self._claimers.get(ref.tid) == claimer)):
                self._claimers[ref.tid] = claimer
                claimed.append(ref.tid)
        return claimed

    def poll_counters(self, refs: Sequence[DependentRef], claimer: int) -> list[tuple[int, bool]] | None:
        if any(self._waiters.get(ref.tid, claimer) != claimer for ref in refs):
            return None
        for ref in refs:
            self._waiters[ref.tid] = claimer
        return [(len(self._bits.get(ref.tid, ())), ref.slot in self._bits.get(ref.tid, ())) for ref in refs]

    def store_result(self, tid: int, data: bytes) -> bool:
        if self.ended:
            return False
        self.results.setdefault(tid, data)
        last = len(self.results) == self.n_outputs and not self.events
        if last:
            self.events.append(JobEvent.done())
        return last

    def end_job(self, event: JobEvent) -> bool:
        if self.ended or self.events:
            return False
        self.ended = True
        self.events.append(event)
        return True

    def has_ended(self) -> bool:
        return self.ended

    def flush_counts(self, counts: dict[str, float]) -> None:
        for name, amount in counts.items():
            self.counts[name] = self.counts.get(name, 0) + amount

    def add_warnings(self, blobs: Sequence[bytes], keep: int) -> None:
        self.warnings = (self.warnings + list(blobs))[:keep]

    def add_scratch_dirs(self, paths: Sequence[str]) -> None:
        pass  # the caller's process owns them: nothing outlives it here


class SyncInvoker(Invoker):
    """Invocations queue up here and run when :func:`run_in_memory` takes them, in FIFO order, or
    in an order shuffled by ``rng`` (any order must give the same results)."""

    def __init__(self, rng: random.Random | None = None):
        self.queue: deque[bytes] = deque()
        self.rng = rng
        self.invoked = 0

    def invoke(self, payloads: Sequence[bytes]) -> None:
        self.queue.extend(payloads)
        self.invoked += len(payloads)

    def backlog(self) -> int:
        return len(self.queue)

    def take(self) -> bytes:
        if self.rng is not None and len(self.queue) > 1:
            self.queue.rotate(-self.rng.randrange(len(self.queue)))
        return self.queue.popleft()


@dataclass
class MemoryRun:
    """What :func:`run_in_memory` did: the job's storage at the end and how many executors ran."""

    job: MemoryJob
    executors: int


def run_in_memory(dsk: Any, keys: Any, *, payload_limit: int = 256 * 1024, big_task_threshold: int = 200 << 20,
                  rng: random.Random | None = None, runs: list[MemoryRun] | None = None) -> Any:
    """Compute ``keys`` of ``dsk`` with Wukong's executors in this process, no Redis; like
    ``dask.get(dsk, keys)``. A task's error is re-raised as on a cluster. ``runs`` (a list) gets
    the :class:`MemoryRun`."""
    graph = normalize_graph(dsk, keys)
    plan = generate_schedules(graph)
    settings = JobSettings(job_id="memory", storage=MEMORY_SPEC, ttl=3600, n_outputs=len(plan.output_ids),
                           payload_limit=payload_limit, big_task_threshold=big_task_threshold)
    blobs = dump_paths(plan)
    job = MemoryJob(settings.job_id, settings.n_outputs, blobs)
    invoker = SyncInvoker(rng)
    executor = Executor(stores=None, invoker=invoker, storage_for=lambda _: job)  # type: ignore[arg-type]
    invoker.invoke([leaf_payload(settings, p.leaf, p.pid, blob) for p, blob in zip(plan.leaf_paths, blobs)])
    executors = 0
    while invoker.queue:
        executor.handle(loads(invoker.take()))
        executors += 1
    executor.flush()
    if runs is not None:
        runs.append(MemoryRun(job, executors))
    if not plan.output_ids:
        job.events.append(JobEvent.done())
    if not job.events:
        raise RuntimeError(f"every invocation ran and the job has no ending event: results {sorted(job.results)} "
                           f"of {sorted(plan.output_ids)} stored (a scheduling bug)")
    if not job.events[0].is_done:
        raise_job_error(job.events[0])
    values = {graph.keys[tid]: loads(blob) for tid, blob in job.results.items()}
    values.update({graph.keys[tid]: graph.nodes[tid].value for tid in graph.output_ids
                   if isinstance(graph.nodes[tid], DataNode)})
    return nested_get(graph.requested, values)
