"""Planning a job: the static schedules generated and written to the MDS with the job's record,
and the leaf invocations that start it. On AWS this is the planner Lambda's work.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from wukong.config import WukongConfig
from wukong.errors import SerializationError
from wukong.graph import TaskGraph
from wukong.invocation import Invocation, JobSettings
from wukong.schedule import JobPlan, generate_schedules
from wukong.serialization import dumps, loads
from wukong.storage import JobStorage, RedisStores, StorageSpec

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
