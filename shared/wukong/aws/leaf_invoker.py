"""One iteration of the InvokeLeaves Map: start the leaf executors of one batch of paths.

The batch is a range of path ids; the leaf payloads are built here from the job record and the
paths in the MDS (one MGET), exactly as the local runtime builds them, and invoked asynchronously.
"""

from __future__ import annotations

from typing import Any

from wukong.aws.lambda_invoker import LambdaInvoker
from wukong.aws.observability import Observability
from wukong.aws.services import Services, check_job_id, job_config
from wukong.planning import leaf_payload, load_job


def invoke_leaves(event: dict, obs: Observability, context: Any = None) -> dict:
    job_id = check_job_id(event.get("job_id"))
    first, count = int(event["first"]), int(event["count"])
    obs.logger.append_keys(job_id=job_id, first_path=first)
    config = job_config()
    with Services(config) as services:
        record, storage = load_job(services.stores(), job_id)
        storage.span = obs.span if obs.tracing else None
        pids = list(range(first, min(first + count, record.n_leaves)))
        blobs = storage.get_paths(pids)
        payloads = [leaf_payload(record.settings, record.leaves[pid], pid, blob) for pid, blob in zip(pids, blobs)]
        invoker = LambdaInvoker(config.executor_function, lambda: services.client("lambda"),
                                max_workers=config.num_lambda_invokers)
        with obs.span("invoke executors"):
            invoker.invoke(payloads)
        payload_bytes = sum(len(p) for p in payloads)
        storage.flush_counts({"payload_bytes": payload_bytes})
    obs.count("ExecutorsInvoked", len(payloads))
    obs.count("PayloadBytes", payload_bytes, "Bytes")
    return {"job_id": job_id, "first": first, "invoked": len(payloads)}
