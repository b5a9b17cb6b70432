"""A job's end: waiting briefly for straggling executors' counts, deleting its keys, and assembling
its :class:`~wukong.report.JobReport`; and naming what never ran. On AWS the finalizer runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence

from wukong.config import WukongConfig
from wukong.planning import JobRecord
from wukong.report import JobReport, estimate_lambda_cost
from wukong.scratch import remove_dirs
from wukong.storage import JobStorage
from wukong.unfinished import SHOWN, KeyOrId, find_unfinished

#: How long finalize waits for straggling executors to report their counts.
SETTLE_TIMEOUT = 2.0


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
