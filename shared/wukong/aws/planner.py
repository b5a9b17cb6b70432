"""The Plan state: load the graph, write schedules and the job record to the MDS, batch the leaves.

The state machine carries only the small dict :func:`plan` returns: ids, leaf batches and the await
state's timeouts; schedules and data stay in Redis (Step Functions state is limited to 256 KB).
"""

from __future__ import annotations

import base64
import math
from typing import Any

from wukong.aws.lambda_invoker import raw_payload_limit
from wukong.aws.observability import Observability
from wukong.aws.services import Services, check_job_id, job_config
from wukong.config import WukongConfig
from wukong.graph import normalize_graph
from wukong.graph_checks import check_shared_nothing
from wukong.planning import plan_job
from wukong.serialization import loads
from wukong.storage import JobStorage

#: Inline Map runs at most this many iterations at once, so there are never more batches than this:
#: every invoker starts at once, and 10,000 leaves go out in batches of 250.
MAP_CONCURRENCY = 40


def leaf_batches(job_id: str, n_leaves: int, min_per_batch: int, max_batches: int = MAP_CONCURRENCY) -> list[dict]:
    """Contiguous ranges of path ids, one per invoker Lambda: at most ``max_batches`` of them, and
    none smaller than ``min_per_batch`` (an invoker Lambda for a handful of leaves costs more than
    it saves)."""
    if n_leaves <= 0:
        return []
    size = max(math.ceil(n_leaves / max_batches), min_per_batch)
    return [{"job_id": job_id, "first": first, "count": min(size, n_leaves - first)}
            for first in range(0, n_leaves, size)]


def await_settings(config: WukongConfig) -> dict:
    """How the await state waits: TimeoutSeconds always, HeartbeatSeconds when configured (the
    state machine chooses the await state with a heartbeat by ``heartbeat``).

    Without ``job_timeout`` a job may run until its keys expire (``job_ttl``). A heartbeat must be
    shorter than the timeout to mean anything.
    """
    timeout = max(2, math.ceil(config.job_timeout)) if config.job_timeout else config.job_ttl
    heartbeat = config.heartbeat_timeout
    if heartbeat is None or heartbeat >= timeout:
        return {"timeout_seconds": timeout, "heartbeat": False}
    return {"timeout_seconds": timeout, "heartbeat": True, "heartbeat_seconds": heartbeat}


def load_graph_blob(graph: dict, services: Services) -> bytes:
    """The serialized ``(dsk, keys)`` of the execution input: inline base64, or an S3 object."""
    if "inline" in graph:
        return base64.b64decode(graph["inline"])
    if "s3" in graph:
        location = graph["s3"]
        return services.client("s3").get_object(Bucket=location["bucket"], Key=location["key"])["Body"].read()
    raise ValueError('the execution input\'s "graph" must be {"inline": <base64>} or {"s3": {"bucket", "key"}}')


def plan(event: dict, obs: Observability, context: Any = None) -> dict:
    job_id = check_job_id(event.get("job_id"))
    obs.logger.append_keys(job_id=job_id)
    overrides = dict(event.get("config") or {})
    config = job_config(overrides)
    # executors compare serialized bytes with payload_limit; the base64 event must fit the invoke limit
    config = config.model_copy(update={"payload_limit": min(config.payload_limit, raw_payload_limit())})
    with Services(config) as services:
        with obs.span("load graph"):
            dsk, keys = loads(load_graph_blob(event.get("graph") or {}, services))
        graph = normalize_graph(dsk, keys)
        check_shared_nothing(graph)  # executors share no disk here, nor the caller's memory
        with obs.span("plan"):
            job = plan_job(graph, services.stores(), config, job_id=job_id, spec=services.public_spec())
        if not graph.output_ids:  # nothing requested: the job is done before it starts
            JobStorage(services.stores(), job_id, config.job_ttl, 0).record_done()
    record = job.record
    obs.count("TasksPlanned", record.n_tasks)
    obs.count("LeavesPlanned", record.n_leaves)
    obs.logger.info("planned", extra={"n_tasks": record.n_tasks, "n_leaves": record.n_leaves,
                                      "plan_seconds": record.plan_seconds})
    return {
        "job_id": job_id,
        "n_tasks": record.n_tasks,
        "n_leaves": record.n_leaves,
        "batches": leaf_batches(job_id, record.n_leaves, config.min_leaves_per_invoker),
        "await": await_settings(config),
        "config": overrides,
    }
