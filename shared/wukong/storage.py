"""The storage manager: one metadata store (MDS) and N intermediate KV shards, all Redis.

The MDS holds schedules, fan-in counters, job events and final results; intermediate values
are spread over the KV shards by consistent hashing (uhashring). Every key is namespaced by
job id and carries a TTL, and :meth:`JobStorage.cleanup` deletes a job's keys from the plan
alone, without SCAN. Each method is one round trip (a chunked value: one pipeline per shard);
:class:`StorageStats` counts them.
"""

from __future__ import annotations

import functools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import redis
from uhashring import HashRing

from wukong import chunks, decisions, redis_scripts
from wukong.hooks import JobContext
from wukong.job_events import JobEvent
from wukong.keyspace import KeySpace  # noqa: F401  (re-exported: callers know it as storage's)
# re-exported: most callers know these as storage's
from wukong.redis_connection import DEFAULT_BULK_LIMIT, bulk_limit
from wukong.refusals import CHECKED, check_room, refusals
from wukong.redis_connection import Endpoint, StorageSpec, connect, spec_from_config  # noqa: F401
from wukong.redis_connection import blocking_timeout
from wukong.schedule import DependentRef

if TYPE_CHECKING:
    from wukong.invocation import JobSettings

#: Opens a tracing span named by its argument (an X-Ray subsegment on AWS).
SpanFactory = Callable[[str], AbstractContextManager]
_BATCH = 1000


@dataclass
class StorageStats:
    """Redis traffic of one executor or client, by store."""

    mds_ops: int = 0
    kv_ops: int = 0
    round_trips: int = 0
    kv_bytes_written: int = 0
    kv_bytes_read: int = 0
    mds_bytes_written: int = 0
    mds_bytes_read: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RedisStores:
    """Connections to the MDS and the KV shards, plus the hash ring; shared by a process's jobs."""

    def __init__(self, spec: StorageSpec, single_connection: bool = False):
        self.spec = spec
        self.mds = connect(spec.mds, spec, single_connection)
        # a shard on the MDS server shares its client, so their commands can share a pipeline
        # other shards are pooled, not pinned: a pinned client connects in its constructor, and one
        # unreachable shard must fail the tasks that use it with a clear error, not every executor's start
        self.shards = {f"{h}:{p}": self.mds if (h, p) == spec.mds else connect((h, p), spec)
                       for h, p in spec.kv}
        self.ring = HashRing(nodes=list(self.shards))
        self._scripts = redis_scripts.SCRIPTS
        self._sha: dict[str, str] = {}
        self._value_limit: int | None = None

    def value_limit(self) -> int:
        """The longest string every one of these servers stores (asked once, then remembered):
        blobs longer than this are always chunked, whatever ``chunk_large_tasks`` says."""
        if self._value_limit is None:
            clients = {id(c): c for c in [self.mds, *self.shards.values()]}.values()
            self._value_limit = min(bulk_limit(c) for c in clients)
        return self._value_limit

    def run_script(self, name: str, keys: Sequence[str], args: Sequence, pipe=None):
        """EVALSHA one of our Lua scripts on the MDS (or queue it on ``pipe``).

        Scripts are loaded once per process, not checked on every call as redis-py's Script
        objects do inside pipelines (an extra round trip each time).
        """
        if name not in self._sha:
            self._load(name)
        target = pipe if pipe is not None else self.mds
        try:
            return target.evalsha(self._sha[name], len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # the server restarted or was flushed
            self._load(name)
            return target.evalsha(self._sha[name], len(keys), *keys, *args)

    def _load(self, name: str) -> None:
        source = self._scripts[name]
        if name in redis_scripts.ALLOW_OOM:
            try:
                self._sha[name] = self.mds.script_load(redis_scripts.ALLOW_OOM_SHEBANG + source)
                return
            except redis.ResponseError:  # a server without script flags (Redis 6)
                pass
        self._sha[name] = self.mds.script_load(source)

    def execute_pipeline(self, pipe) -> list:
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            for name in self._scripts:
                self._load(name)
            return pipe.execute()  # every queued command is idempotent, so replaying is safe

    def shard_for(self, key: str) -> redis.Redis:
        return self.shards[self.ring.get_node(key)]

    def close(self) -> None:
        for client in {id(c): c for c in [self.mds, *self.shards.values()]}.values():
            client.close()


def _traced(method):
    """Run a storage call inside the injected span (an X-Ray subsegment on AWS); free without one."""
    name = f"redis.{method.__name__}"

    @functools.wraps(method)
    def traced(self: "JobStorage", *args, **kwargs):
        if self.span is None:
            return method(self, *args, **kwargs)
        with self.span(name):
            return method(self, *args, **kwargs)

    return traced


@dataclass
class JobStorage:
    """One job's view of the stores; counts its own traffic in ``stats``."""

    stores: RedisStores
    job_id: str
    ttl: int
    n_outputs: int
    stats: StorageStats = field(default_factory=StorageStats)
    span: SpanFactory | None = field(default=None, repr=False)
    chunk_size: int | None = None  # values this big or bigger are chunked over the shards; None: never
    num_chunks_for_large_tasks: int | None = None  # chunks per chunked value; None: one per shard
    value_limit: int = DEFAULT_BULK_LIMIT  # the longest string the servers store: longer blobs are always chunked

    def __post_init__(self) -> None:
        self.keys = KeySpace(self.job_id)

    @property
    def context(self) -> JobContext:
        """The narrow view of this job that executor hooks get."""
        return JobContext(self.job_id, self.ttl, self.stores.mds, self.keys.events)

    @classmethod
    def for_job(cls, stores: RedisStores, job: "JobSettings", span: SpanFactory | None = None) -> "JobStorage":
        """The view of a planned job's storage that its settings describe (what executors write with)."""
        return cls(stores, job.job_id, job.ttl, job.n_outputs, span=span, chunk_size=job.chunk_size,
                   num_chunks_for_large_tasks=job.num_chunks_for_large_tasks, value_limit=job.value_limit)

    # --- plan -----------------------------------------------------------------------------
    @_traced
    def write_plan(self, path_blobs: Sequence[bytes], meta: dict, record: bytes | None = None) -> None:
        """All schedules plus job metadata (and the job's serialized record), in pipelines of a
        thousand commands."""
        pipe = self.stores.mds.pipeline(transaction=False)
        pipe.set(self.keys.meta, json.dumps(meta), ex=self.ttl)
        if record is not None:
            pipe.set(self.keys.record, self._fit(self.keys.record, record, "the job's record"), ex=self.ttl)
        for pid, blob in enumerate(path_blobs):
            key = self.keys.path(pid)
            pipe.set(key, self._fit(key, blob, f"schedule segment {pid}"), ex=self.ttl)
            self.stats.mds_bytes_written += len(blob)
            if len(pipe) >= _BATCH:
                self._execute(pipe, mds=True)
        with self._refusals(self.stores.mds, "the job's schedules", max(map(len, path_blobs), default=0)):
            self._execute(pipe, mds=True)

    @_traced
    def get_record(self) -> bytes:
        blob = self.stores.mds.get(self.keys.record)
        self._count(mds=1)
        if blob is None:
            raise LookupError(f"job {self.job_id} is unknown to the metadata store (never planned, expired "
                              "or cleaned up)")
        self.stats.mds_bytes_read += len(blob)
        return self._unfit({"the job's record": blob})["the job's record"]

    @_traced
    def get_paths(self, pids: Sequence[int]) -> list[bytes]:
        """Several serialized paths in one MGET."""
        blobs = self.stores.mds.mget([self.keys.path(p) for p in pids]) if pids else []
        self._count(mds=len(pids))
        for pid, blob in zip(pids, blobs):
            if blob is None:
                raise LookupError(f"schedule path {pid} of job {self.job_id} is missing (expired or cleaned up)")
            self.stats.mds_bytes_read += len(blob)
        whole = self._unfit(dict(zip(pids, blobs)))
        return [whole[pid] for pid in pids]

    @_traced
    def get_path(self, pid: int) -> bytes:
        blob = self.stores.mds.get(self.keys.path(pid))
        self._count(mds=1)
        if blob is None:
            raise LookupError(f"schedule path {pid} of job {self.job_id} is missing (expired or cleaned up)")
        self.stats.mds_bytes_read += len(blob)
        return self._unfit({pid: blob})[pid]

    # --- blobs of any size ------------------------------------------------------------------------
    def _n_chunks(self, nbytes: int, threshold: int | None = None) -> int:
        return decisions.chunk_count(nbytes, threshold, self.num_chunks_for_large_tasks, len(self.stores.shards),
                                     self.value_limit)

    def _fit(self, key: str, data: bytes, what: str, threshold: int | None = None) -> bytes:
        """What to store at ``key`` for ``data``: the data itself, or, once its chunks are written
        over the KV shards, their stand-in (a blob over ``value_limit`` or ``threshold``)."""
        n = self._n_chunks(len(data), threshold)
        return data if n == 1 else chunks.put_chunks(self, key, data, n, what)

    def _unfit(self, blobs: dict) -> dict:
        """``blobs`` with every chunk stand-in replaced by the blob it stands for."""
        stand_ins = {name: blob for name, blob in blobs.items() if chunks.is_stand_in(blob)}
        return {**blobs, **chunks.get_chunks(self, stand_ins)} if stand_ins else blobs

    def _refusals(self, client: redis.Redis, what: str, nbytes: int):
        """Check the server has room for a big write, and classify the write's errors by cause."""
        server = next((node for node, c in self.stores.shards.items() if c is client), "the MDS")
        if nbytes >= CHECKED:
            check_room(client, server, what, nbytes)
            self._count(**({"mds": 1} if client is self.stores.mds else {"kv": 1}))
        return refusals(client, server, what, nbytes, self.value_limit)

    # --- intermediate values ------------------------------------------------------------------
    @_traced
    def put_value(self, tid: int, data: bytes) -> None:
        key = self.keys.value(tid)
        what = f"the output of task id {tid}"
        stored = self._fit(key, data, what, self.chunk_size)
        client = self.stores.shard_for(key)
        with self._refusals(client, what, len(stored)):
            client.set(key, stored, ex=self.ttl)
        self._count(kv=1)
        self.stats.kv_bytes_written += len(stored)

    @_traced
    def get_values(self, tids: Iterable[int]) -> dict[int, bytes]:
        """Values of ``tids``, one MGET per shard; raises LookupError naming any that are missing."""
        by_shard: dict[str, list[int]] = defaultdict(list)
        for tid in tids:
            by_shard[self.stores.ring.get_node(self.keys.value(tid))].append(tid)
        out: dict[int, bytes] = {}
        for node, group in by_shard.items():
            blobs = self.stores.shards[node].mget([self.keys.value(t) for t in group])
            self._count(kv=len(group))
            for tid, blob in zip(group, blobs):
                if blob is None:
                    raise LookupError(f"intermediate value of task id {tid} is missing from KV shard {node}")
                self.stats.kv_bytes_read += len(blob)
                out[tid] = blob
        return self._unfit(out)

    # --- counters, results, events --------------------------------------------------------------
    @_traced
    def bump_counters(self, refs: Sequence[DependentRef], value: tuple[int, bytes] | None = None,
                      claimer: int = -1, retry: bool = False) -> list[int]:
        """Set this upstream's bit in each dependent's counter; returns the dependents we claimed.

        ``value`` (task id, bytes), when given, is stored first. When its shard is the MDS server
        both go in one Lua call, value first, so the value is always there before any counter moves.
        ``claimer`` names the calling invocation (the task id it started from); with ``retry`` (a
        retried invocation) counters it completed in an earlier attempt are claimed again.
        """
        if value is not None:
            key = self.keys.value(value[0])
            if (not refs or self.stores.shard_for(key) is not self.stores.mds
                    or self._n_chunks(len(value[1]), self.chunk_size) > 1):
                self.put_value(*value)
                value = None
        if not refs:
            return []
        pairs: list[int] = []
        keys: list[str] = []
        for ref in refs:
            pairs += [ref.slot, ref.n_deps]
            keys += [self.keys.counter(ref.tid), self.keys.claimer(ref.tid)]
        flags = [claimer, int(retry)]
        if value is None:
            claimed = self.stores.run_script("fan_in", keys, [self.ttl, *flags, *pairs])
            self._count(mds=3 * len(refs))
        else:
            with self._refusals(self.stores.mds, f"the output of task id {value[0]}", len(value[1])):
                claimed = self.stores.run_script("set_fan_in", [self.keys.value(value[0]), *keys],
                                                 [self.ttl, value[1], *flags, *pairs])
            self._count(mds=3 * len(refs), kv=1)
            self.stats.kv_bytes_written += len(value[1])
        return [ref.tid for ref, won in zip(refs, claimed) if won]

    @_traced
    def poll_counters(self, refs: Sequence[DependentRef], claimer: int) -> list[tuple[int, bool]] | None:
        """Delayed I/O: hold (register as the only waiter on) every counter of ``refs`` and read
        (bits set, our bit set) of each; None, holding nothing, if another invocation holds one."""
        keys: list[str] = []
        for ref in refs:
            keys += [self.keys.counter(ref.tid), self.keys.waiter(ref.tid)]
        out = self.stores.run_script("hold_counters", keys, [self.ttl, claimer, *(r.slot for r in refs)])
        self._count(mds=2 * len(refs))
        if out is None:
            return None
        return [(int(out[2 * i]), bool(out[2 * i + 1])) for i in range(len(refs))]

    @_traced
    def claim_start(self, tid: int, attempt: int) -> str:
        """Claim the start task of an invocation before running it: "run", "duplicate" (this
        invocation, or a later attempt of it, already started) or "ended" (the job is over)."""
        outcome = self.stores.run_script(
            "claim_start", [self.keys.started(tid), self.keys.ended, redis_scripts.ENDED_JOBS],
            [attempt, self.ttl, self.job_id],
        )
        self._count(mds=3)
        return {1: "run", 0: "duplicate", 2: "ended"}[int(outcome)]

    @_traced
    def store_result(self, tid: int, data: bytes) -> bool:
        """Store a final result; True if it was the job's last one (the done event is pushed)."""
        done_event = JobEvent.done().to_json()
        key, what = self.keys.result(tid), f"the result of task id {tid}"
        stored = self._fit(key, data, what)  # a result too big for one string goes over the KV shards
        pipe = self.stores.mds.pipeline(transaction=False)
        pipe.set(key, stored, nx=True, ex=self.ttl)  # a duplicate's copy is not kept
        self.stores.run_script("store_result", [self.keys.outputs_done, self.keys.events, key, self.keys.ended,
                                                redis_scripts.ENDED_JOBS],
                               [tid, self.n_outputs, self.ttl, done_event, self.job_id], pipe=pipe)
        with self._refusals(self.stores.mds, what, len(stored)):
            _, last = self.stores.execute_pipeline(pipe)
        self._count(mds=4)
        self.stats.mds_bytes_written += len(data)
        return last == 1

    @_traced
    def end_job(self, event: JobEvent) -> bool:
        """Mark the job ended (failed, cancelled or timed out, as ``event`` says); the first
        caller's event is the one the client sees."""
        first = self.stores.run_script(
            "end_job", [self.keys.ended, self.keys.events, redis_scripts.ENDED_JOBS],
            [event.reason.value, event.to_json(), self.ttl, self.job_id],
        )
        self._count(mds=3)
        return bool(first)

    def record_done(self) -> None:
        """Push the done event of a job that has nothing to compute (no requested keys)."""
        pipe = self.stores.mds.pipeline(transaction=False)
        pipe.rpush(self.keys.events, JobEvent.done().to_json())
        pipe.expire(self.keys.events, self.ttl)
        self._execute(pipe, mds=True)

    @_traced
    def has_ended(self) -> bool:
        """True once the job failed, was cancelled, or was cleaned up."""
        ended = self.stores.run_script("job_ended", [self.keys.ended, redis_scripts.ENDED_JOBS], [self.job_id])
        self._count(mds=2)
        return bool(ended)

    @_traced
    def first_event(self) -> JobEvent | None:
        """The job's first done or failure event, without consuming it (the AWS path has no waiter
        popping events)."""
        item = self.stores.mds.lindex(self.keys.events, 0)
        self._count(mds=1)
        return None if item is None else JobEvent.from_json(item)

    def wait_event(self, timeout: float) -> JobEvent | None:
        """Block up to ``timeout`` seconds for the job's done or failure event (at most half of
        redis_timeout: the socket must not time out on a server that is only waiting)."""
        item = self.stores.mds.blpop([self.keys.events], timeout=blocking_timeout(timeout, self.stores.spec))
        self._count(mds=1)
        return None if item is None else JobEvent.from_json(item[1])

    @_traced
    def results(self, tids: Sequence[int]) -> dict[int, bytes]:
        blobs = self.stores.mds.mget([self.keys.result(t) for t in tids])
        self._count(mds=len(tids))
        out = {}
        for tid, blob in zip(tids, blobs):
            if blob is None:
                raise LookupError(f"final result of task id {tid} is missing from the metadata store")
            out[tid] = blob
        out = self._unfit(out)
        self.stats.mds_bytes_read += sum(map(len, out.values()))  # result bytes, wherever their chunks were
        return out

    # --- what tasks leave besides values -------------------------------------------------------
    @_traced
    def add_warnings(self, blobs: Sequence[bytes], keep: int) -> None:
        """Store warnings tasks raised (at most ``keep`` per job), one round trip."""
        pipe = self.stores.mds.pipeline(transaction=False)
        pipe.rpush(self.keys.warnings, *blobs)
        pipe.ltrim(self.keys.warnings, 0, keep - 1)
        pipe.expire(self.keys.warnings, self.ttl)
        self._execute(pipe, mds=True)

    @_traced
    def task_warnings(self) -> list[bytes]:
        blobs = self.stores.mds.lrange(self.keys.warnings, 0, -1)
        self._count(mds=1)
        return blobs

    @_traced
    def add_scratch_dirs(self, paths: Sequence[str]) -> None:
        """Record local directories a task made, for the job's end to remove (see wukong.scratch)."""
        pipe = self.stores.mds.pipeline(transaction=False)
        pipe.sadd(self.keys.scratch_dirs, *paths)
        pipe.expire(self.keys.scratch_dirs, self.ttl)
        self._execute(pipe, mds=True)

    # --- statistics ------------------------------------------------------------------------
    @_traced
    def flush_counts(self, counts: dict[str, int | float]) -> None:
        """Add an executor's counts to the job's totals, in one command."""
        args: list = [self.ttl, self.job_id]
        for name, value in counts.items():
            if value:
                args += [name, value]
        self.stores.run_script("add_counts", [self.keys.stats, redis_scripts.ENDED_JOBS], args)
        self._count(mds=1)

    @_traced
    def read_counts(self) -> dict[str, float]:
        raw = self.stores.mds.hgetall(self.keys.stats)
        self._count(mds=1)
        return {k.decode(): float(v) for k, v in raw.items()}

    def tasks_done(self) -> int:
        value = self.stores.mds.hget(self.keys.stats, "tasks")
        self._count(mds=1)
        return int(float(value)) if value else 0

    @_traced
    def progress_marks(self, starts: Sequence[int], outputs: Sequence[int]) -> tuple[list[bool], list[bool]]:
        """Which invocations starting at ``starts`` claimed their start, and which ``outputs`` are
        stored: one pipeline (an MGET of the small claims, EXISTS for results, which may be big)."""
        pipe = self.stores.mds.pipeline(transaction=False)
        pipe.mget([self.keys.started(t) for t in starts] or [self.keys.meta])
        for tid in outputs:
            pipe.exists(self.keys.result(tid))
        claims, *stored = self._execute(pipe, mds=True)
        return [c is not None for c in claims[:len(starts)]], [bool(n) for n in stored]

    # --- cleanup -----------------------------------------------------------------------------
    @_traced
    def cleanup(self, n_tasks: int, n_paths: int, runtime_keys: Sequence[str] = ()) -> list[str]:
        """Delete every key the job can have written, computed from the plan (no SCAN), and the MDS
        keys its runtime added (``runtime_keys``: the AWS control plane's, see
        ``wukong.aws.control_plane.control_plane_keys``); returns the local directories its tasks
        left for the caller to remove (:mod:`wukong.scratch`).

        The job is first recorded as ended, so an executor still running (a long task, a late
        Lambda retry) stops at its next check instead of writing keys nobody will delete.
        """
        k = self.keys
        pipe = self.stores.mds.pipeline(transaction=False)  # one round trip: tombstone, chunk sets, dirs
        self.stores.run_script("tombstone", [redis_scripts.ENDED_JOBS],
                               [self.job_id, time.time(), redis_scripts.ENDED_JOBS_KEEP], pipe=pipe)
        pipe.hgetall(k.chunk_counts)
        pipe.smembers(k.scratch_dirs)
        _, chunk_counts, dirs = self.stores.execute_pipeline(pipe)
        self._count(mds=4)
        mds_keys = [k.meta, k.record, k.outputs_done, k.events, k.ended, k.stats, k.chunk_counts, k.scratch_dirs,
                    k.warnings, *runtime_keys]
        mds_keys += [k.path(p) for p in range(n_paths)]
        for make in (k.counter, k.claimer, k.started, k.result, k.waiter):
            mds_keys += [make(t) for t in range(n_tasks)]
        self._unlink(self.stores.mds, mds_keys, mds=True)
        by_shard: dict[str, list[str]] = defaultdict(list)
        for t in range(n_tasks):
            key = k.value(t)
            by_shard[self.stores.ring.get_node(key)].append(key)
        for base, n in chunk_counts.items():
            for i, node in enumerate(chunks.chunk_shards(self, base.decode(), int(n))):
                by_shard[node].append(k.chunk(base.decode(), i))
        for node, keys in by_shard.items():
            self._unlink(self.stores.shards[node], keys, mds=False)
        return sorted(d.decode() for d in dirs)

    def _unlink(self, client: redis.Redis, keys: list[str], mds: bool) -> None:
        for i in range(0, len(keys), _BATCH):
            client.unlink(*keys[i : i + _BATCH])
            self._count(**({"mds": 1} if mds else {"kv": 1}))

    # --- accounting ----------------------------------------------------------------------------
    def _execute(self, pipe, mds: bool) -> list:
        n = len(pipe)
        if n == 0:
            return []
        out = pipe.execute()
        self._count(**({"mds": n} if mds else {"kv": n}))
        return out

    def _count(self, mds: int = 0, kv: int = 0) -> None:
        self.stats.mds_ops += mds
        self.stats.kv_ops += kv
        self.stats.round_trips += 1
