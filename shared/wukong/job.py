"""One job's life on any backend: plan, invoke the leaves, await completion, finalize.

:class:`JobRun` is the plain orchestration that the local runtime runs in the client process; on
AWS, Step Functions runs the same steps as states, calling :func:`plan_job`, :func:`leaf_payload`
and :func:`finalize_job` from separate Lambdas that share only the :class:`JobRecord` in the MDS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from dask._task_spec import DataNode
from dask.local import nested_get

from wukong.config import WukongConfig
from wukong.errors import RedisUnavailableError, SerializationError, job_interrupted
from wukong.graph import TaskGraph
from wukong.invocation import Invocation, Invoker, JobSettings
from wukong.job_events import REDIS_UNAVAILABLE, JobEvent, raise_job_error  # noqa: F401  (re-exported)
from wukong.redis_connection import address, unavailable
from wukong.report import JobReport, estimate_lambda_cost
from wukong.schedule import JobPlan, generate_schedules
from wukong.scratch import ScratchDirs, remove_dirs
from wukong.serialization import dumps, loads
from wukong.storage import JobStorage, RedisStores, StorageSpec
from wukong.task_warnings import TaskWarning, reissue, unpack
from wukong.unfinished import SHOWN, KeyOrId, find_unfinished

log = logging.getLogger(__name__)

#: How long finalize waits for straggling executors to report their counts.
SETTLE_TIMEOUT = 2.0
#: The most each cleanup call may wait after the job lost a Redis server (and redis_timeout, if less).
LOST_REDIS_BUDGET = 2.0

ProgressCallback = Callable[[int, int], None]  # (tasks done, total)


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class JobRecord:
    """What the steps after planning need to know about a job. Stored in the MDS by :func:`plan_job`
    (plain data only), so the AWS invoker and finalizer Lambdas need neither the graph nor the plan."""

    settings: JobSettings
    leaves: tuple[int, ...]  # the leaf task id of each path, by path id (= the path's first segment)
    outputs: tuple[tuple[int, Hashable], ...]  # (task id, Dask key) of each requested output
    requested: Any  # the keys as the caller asked for them (possibly nested lists)
    n_tasks: int
    plan_seconds: float
    created: float  # wall clock (time.time()) when planning started
    n_paths: int  # stored path segments (keys to delete): leaves plus later segments of long paths

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)


@dataclass
class PlannedJob:
    """A planned job: its schedules and record are in the MDS."""

    record: JobRecord
    plan: JobPlan
    path_blobs: list[bytes]

    @property
    def settings(self) -> JobSettings:
        return self.record.settings

    def leaf_payloads(self) -> list[bytes]:
        return [leaf_payload(self.settings, p.leaf, p.pid, blob)
                for p, blob in zip(self.plan.leaf_paths, self.path_blobs)]


def plan_job(graph: TaskGraph, stores: RedisStores, config: WukongConfig, job_id: str | None = None,
             spec: StorageSpec | None = None) -> PlannedJob:
    """Generate the static schedules and write them, with the job's record, to the MDS.

    ``spec`` is the storage spec the executors are told about (default: ``stores.spec``); on AWS it
    carries no password, because executors connect with their own credentials.
    """
    created, t0 = time.time(), time.perf_counter()
    plan = generate_schedules(graph)
    settings = JobSettings(
        job_id=job_id or new_job_id(),
        storage=spec or stores.spec,
        ttl=config.job_ttl,
        n_outputs=len(plan.output_ids),
        payload_limit=config.payload_limit,
        big_task_threshold=config.big_task_threshold,
        max_output_size=config.max_output_size,
        delayed_io_max_wait=config.resolved_delayed_io_max_wait,
        function_timeout=config.function_timeout,
        chunk_size=config.chunk_size if config.chunk_large_tasks else None,
        num_chunks_for_large_tasks=config.num_chunks_for_large_tasks,
        # a third of the heartbeat timeout, so one late report does not fail the job
        heartbeat_interval=max(1, config.heartbeat_timeout // 3) if config.heartbeat_timeout else 0,
        proxy=(config.proxy_address, config.proxy_port) if config.proxy_address and config.proxy_port else None,
        max_task_fanout=config.max_task_fanout,
        value_limit=stores.value_limit(),
    )
    storage = JobStorage.for_job(stores, settings)
    blobs = dump_paths(plan)
    record = JobRecord(
        settings=settings,
        leaves=tuple(p.leaf for p in plan.leaf_paths),  # leaves[i] starts path segment i
        outputs=tuple((tid, graph.keys[tid]) for tid in plan.output_ids),
        requested=graph.requested,
        n_tasks=plan.n_tasks,
        plan_seconds=time.perf_counter() - t0,
        created=created,
        n_paths=len(plan.paths),
    )
    storage.write_plan(blobs, {"n_tasks": plan.n_tasks, "n_paths": len(plan.paths), "created": created},
                       record=dumps(record))
    return PlannedJob(record, plan, blobs)


def dump_paths(plan: JobPlan) -> list[bytes]:
    """Every path serialized; a task that cannot be (a lock or a socket in the graph) is named."""
    blobs = []
    for path in plan.paths:
        try:
            blobs.append(dumps(path))
        except Exception as exc:
            raise unserializable_task(((r.key, r.node) for r in path.records.values()), exc) from exc
    return blobs


def unserializable_task(tasks: Iterable[tuple[Hashable, Any]], exc: Exception) -> SerializationError:
    """The error for a graph that did not serialize (``exc``), naming the first of ``tasks`` (key,
    node) that does not serialize on its own."""
    for key, node in tasks:
        try:
            dumps(node)
        except Exception as inner:
            return SerializationError(
                f"task {key!r} cannot be serialized to send it to an executor ({type(inner).__name__}: "
                f"{inner}); a task's function and arguments must pickle, so create locks, open files, sockets "
                "and clients inside the task instead of putting them in the graph")
    return SerializationError(f"the graph cannot be serialized ({type(exc).__name__}: {exc})")


def load_job(stores: RedisStores, job_id: str) -> tuple[JobRecord, JobStorage]:
    """The record of a planned job and a storage view of it; LookupError if the MDS does not know it."""
    record: JobRecord = loads(JobStorage(stores, job_id, ttl=60, n_outputs=0).get_record())
    settings = record.settings
    return record, JobStorage.for_job(stores, settings)


def leaf_payload(settings: JobSettings, leaf: int, pid: int, path_blob: bytes | None) -> bytes:
    """The invocation that starts a leaf's executor, with its whole path inline while it fits."""
    inv = Invocation(job=settings, start=leaf, start_path=pid, path_blob=path_blob)
    data = dumps(inv)
    if len(data) > settings.payload_limit and path_blob is not None:
        inv.path_blob = None  # the executor reads its path from the MDS instead
        data = dumps(inv)
    return data


class JobRun:
    """Drives one job to its end and turns the outcome into results or an exception."""

    def __init__(self, graph: TaskGraph, stores: RedisStores, invoker: Invoker, config: WukongConfig,
                 progress: ProgressCallback | None = None, job_id: str | None = None,
                 reissue_warnings: bool = True, scratch: ScratchDirs | None = None):
        # chosen up front, so a job service can cancel (JobStorage.end_job) even while it plans
        self.job_id = job_id or new_job_id()
        self.event: JobEvent | None = None  # the job's ending event (done or failure) once it has one
        self.graph = graph
        self.stores = stores
        self.invoker = invoker
        self.config = config
        self.progress = progress
        self.report: JobReport | None = None
        # warnings the job's tasks raised; a job service passes them on to its remote caller instead
        self.reissue_warnings = reissue_warnings
        self.scratch = scratch  # keeps the job's partd directories a while (the cluster's); None: removed at once
        self.warnings: list[TaskWarning] = []
        self.redis_error: RedisUnavailableError | None = None  # the job lost a Redis server

    def run(self) -> Any:
        """Run the job; return the requested keys' values in the shape they were asked for."""
        if not self.graph.output_ids:  # e.g. get(dsk, []): nothing to run, nothing to wait for
            return nested_get(self.graph.requested, {})
        started = time.perf_counter()
        with self._redis_errors("planning"):
            job = plan_job(self.graph, self.stores, self.config, job_id=self.job_id)
        storage = JobStorage.for_job(self.stores, job.settings)
        status, interrupted = "failed", None
        payloads = job.leaf_payloads()
        try:
            with self._redis_errors("running"):
                self.invoker.invoke(payloads)
                event = self.event = self._await(storage, job.record, started)
                blobs = storage.results(list(job.plan.output_ids)) if event.is_done else None
                warned = storage.task_warnings()
            self.warnings = unpack(warned)
            if self.reissue_warnings:  # through the caller's filters, before the results or the error
                reissue(self.warnings)
            if blobs is not None:
                values = {self.graph.keys[tid]: loads(blob) for tid, blob in blobs.items()}
                # a requested literal is the caller's own object, as Dask's local schedulers return it
                values.update({self.graph.keys[tid]: self.graph.nodes[tid].value for tid in self.graph.output_ids
                               if isinstance(self.graph.nodes[tid], DataNode)})
                status = "succeeded"
                return nested_get(self.graph.requested, values)
            status = event.status
            raise_job_error(event)
        except KeyboardInterrupt:
            status = interrupted = "cancelled"
            raise self._interrupted(storage) from None
        finally:
            if status != "succeeded":  # what still runs of the job is stopped (the local pool kills it)
                self.invoker.job_ended(self.job_id)
            self._finalize(storage, job.record, status, time.perf_counter() - started,
                           sum(len(p) for p in payloads), interrupted=interrupted is not None)

    def _finalize(self, storage: JobStorage, record: JobRecord, status: str, wall_seconds: float,
                  payload_bytes: int, interrupted: bool = False) -> None:
        """Clean up and report, never hiding the job's own outcome behind a cleanup error.

        After a job lost a Redis server, the cleanup gets one short try (LOST_REDIS_BUDGET per
        call, no settling): a hung server would otherwise cost a whole redis_timeout again, after
        the job already reported its error.
        """
        short: RedisStores | None = None
        settle = 0.0 if interrupted else SETTLE_TIMEOUT  # interrupted: the user wants out now
        if self.lost_redis:
            budget = min(self.stores.spec.timeout, LOST_REDIS_BUDGET)
            short = RedisStores(dataclasses.replace(self.stores.spec, timeout=budget))
            storage, settle = dataclasses.replace(storage, stores=short), 0.0
        try:
            self.report = finalize_job(storage, record, self.config, status, wall_seconds,
                                       payload_bytes=payload_bytes, settle_timeout=settle,
                                       dirs_done=remove_dirs if self.scratch is None else self.scratch.add)
        except redis.RedisError as exc:
            log.warning("could not clean up job %s (%s: %s); its keys expire after job_ttl=%s s",
                        self.job_id, type(exc).__name__, exc, self.config.job_ttl)
        finally:
            if short is not None:
                short.close()

    @property
    def lost_redis(self) -> bool:
        """The job failed because a Redis server was lost or stopped answering (seen here or by an
        executor)."""
        return self.redis_error is not None or (self.event is not None and self.event.type == REDIS_UNAVAILABLE)

    def _interrupted(self, storage: JobStorage) -> KeyboardInterrupt:
        """Cancel the job Ctrl-C interrupted (its executors stop at their next check; the local
        pool stops those inside a task) and say so in one line."""
        message = f"job {self.job_id} interrupted (Ctrl-C): cancelled, and its running tasks stopped"
        try:
            storage.end_job(JobEvent.cancelled(message))
        except redis.RedisError as exc:
            message = f"job {self.job_id} interrupted (Ctrl-C); could not cancel it ({exc})"
        return job_interrupted(message)

    @contextlib.contextmanager
    def _redis_errors(self, doing: str) -> Iterator[None]:
        """A lost or hung server becomes one clear RedisUnavailableError, remembered so the cleanup
        does not wait on it again (tasks' own exceptions are re-raised outside this, so a task that
        uses Redis itself is not mistaken)."""
        spec = self.stores.spec
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # the client's calls go to the MDS, but for a result's chunks: name it when redis-py does not
            self.redis_error = RedisUnavailableError(unavailable(
                exc, spec, f"{doing} job {self.job_id}", server=f"the metadata store {address(spec.mds)}"))
            raise self.redis_error from exc

    def _await(self, storage: JobStorage, record: JobRecord, started: float) -> JobEvent:
        total = len(self.graph)
        deadline = None if self.config.job_timeout is None else started + self.config.job_timeout
        stall_after = self.config.stall_warning
        poll = 0.2 if self.progress else 1.0
        last_done, last_change = -1, time.perf_counter()
        while True:
            wait = poll
            if deadline is not None:  # wake at the deadline, not up to a poll later (0 would block forever)
                wait = max(0.01, min(poll, deadline - time.perf_counter()))
            event = storage.wait_event(timeout=wait)
            done = total if event is not None and event.is_done else storage.tasks_done()
            if self.progress:
                self.progress(done, total)
            if event is not None:
                return event
            now = time.perf_counter()
            if done != last_done:
                last_done, last_change = done, now
            elif stall_after is not None and now - last_change >= stall_after:
                # without job_timeout a lost invocation would hang the job silently: say so, once a period
                log.warning("job %s has finished no task for %.0f s (%d of %d tasks done); %s. It keeps "
                            "waiting: set job_timeout to fail such a job", storage.job_id, now - last_change,
                            done, total, self._unfinished(storage, record) or "every leaf invocation started")
                last_change = now
            if deadline is not None and now > deadline:
                unfinished = self._unfinished(storage, record)
                timeout_event = JobEvent.timed_out(
                    f"job {storage.job_id} did not finish within job_timeout={self.config.job_timeout} s "
                    f"({done} of {total} tasks done)" + (f"; {unfinished}" if unfinished else ""))
                storage.end_job(timeout_event)
                # the first ending event wins: a failure that raced us is reported instead
                return storage.wait_event(timeout=1.0) or timeout_event

    def _unfinished(self, storage: JobStorage, record: JobRecord) -> str:
        return describe_unfinished(storage, record, self.graph.keys.__getitem__)


def describe_unfinished(storage: JobStorage, record: JobRecord, key_of: Callable[[int], Hashable]) -> str:
    """Which leaf invocations never started and which outputs were never stored ("" if none).

    ``key_of`` gives a task id's Dask key; it is asked only for the few unstarted leaves a message
    names (on AWS each costs a schedule read), the others are counted.
    """
    outputs = [tid for tid, _ in record.outputs]
    started, stored = storage.progress_marks(record.leaves, outputs)
    keys = KeyOrId(record.outputs)
    for leaf in [t for t, ok in zip(record.leaves, started) if not ok][:SHOWN]:
        keys[leaf] = key_of(leaf)
    return find_unfinished(keys, record.leaves, started, outputs, stored).describe()


def finalize_job(storage: JobStorage, record: JobRecord, config: WukongConfig, status: str, wall_seconds: float,
                 payload_bytes: int = 0, settle_timeout: float = SETTLE_TIMEOUT,
                 dirs_done: Callable[[list[str]], None] = remove_dirs,
                 runtime_keys: Sequence[str] = ()) -> JobReport:
    """Wait briefly for straggling executors' counts, delete the job's keys, and report.

    ``payload_bytes`` are leaf payload bytes the caller sent without counting them in the job's stats.
    ``dirs_done`` takes the local directories the job's tasks left (partd's; see wukong.scratch).
    ``runtime_keys`` are MDS keys the runtime added (on AWS, the control plane's), deleted too.
    """
    counts = storage.read_counts()
    deadline = time.monotonic() + settle_timeout
    # every execution ends finished or lost (its worker died; the local pool counts those)
    while counts.get("executors_finished", 0) + counts.get("executors_lost", 0) < record.n_leaves + counts.get("invoked", 0):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
        counts = storage.read_counts()
    dirs_done(storage.cleanup(record.n_tasks, record.n_paths, runtime_keys))
    mine = storage.stats
    c = {k: int(v) for k, v in counts.items() if k not in ("busy_seconds", "task_seconds")}
    executors = record.n_leaves + c.get("invoked", 0)
    busy = counts.get("busy_seconds", 0.0)
    return JobReport(
        job_id=record.settings.job_id,
        status=status,
        n_tasks=record.n_tasks,
        n_leaves=record.n_leaves,
        tasks_run=c.get("tasks", 0),
        executors_invoked=executors,
        proxy_invokes=c.get("proxy_invoked", 0),
        delayed_io_claims=c.get("delayed_io_claims", 0),
        delayed_io_writes=c.get("delayed_io_writes", 0),
        duplicates_dropped=c.get("duplicates_dropped", 0),
        executors_finished=c.get("executors_finished", 0),
        executors_lost=c.get("executors_lost", 0),
        mds_ops=c.get("mds_ops", 0) + mine.mds_ops,
        kv_ops=c.get("kv_ops", 0) + mine.kv_ops,
        round_trips=c.get("round_trips", 0) + mine.round_trips,
        kv_bytes_written=c.get("kv_bytes_written", 0),
        kv_bytes_read=c.get("kv_bytes_read", 0),
        payload_bytes=c.get("payload_bytes", 0) + payload_bytes,
        result_bytes=mine.mds_bytes_read,
        plan_seconds=record.plan_seconds,
        wall_seconds=wall_seconds,
        executor_seconds=busy,
        task_seconds=counts.get("task_seconds", 0.0),
        estimated_cost_usd=estimate_lambda_cost(
            executors, busy, config.lambda_memory_mb, config.lambda_price_per_gb_second,
            config.lambda_price_per_request,
        ),
    )
