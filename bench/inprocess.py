"""Run one Wukong job's executors in this process, one after another, and time every step.

The real Executor, storage and Redis are used; only the queue is a local deque, so each
storage call, (un)pickle and task can be counted and timed exactly, without other processes
competing for the cores. Used by profile_workload.py --inprocess.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import time
from collections.abc import Sequence
from typing import Any

import wukong.executor
from wukong.config import make_config
from wukong.graph import normalize_graph
from wukong.invocation import Invoker
from wukong.planning import plan_job
from wukong.local.workers import FLUSH_INTERVAL
from wukong.serialization import loads
from wukong.storage import JobStorage, RedisStores

# (owner, attribute, label) of everything timed. Storage methods nest (bump_counters may call
# put_value), so only the outermost call is charged: see _Timer.
STORAGE_METHODS = ("get_path", "put_value", "get_values", "bump_counters", "store_result", "has_ended",
                   "flush_counts", "end_job")


class _LocalQueue(Invoker):
    def __init__(self) -> None:
        self.queue: collections.deque[bytes] = collections.deque()

    def invoke(self, payloads: Sequence[bytes]) -> None:
        self.queue.extend(payloads)


class _Timer:
    """Counts and times wrapped calls; a call made inside another wrapped call is not charged."""

    def __init__(self) -> None:
        self.calls: collections.Counter = collections.Counter()
        self.seconds: collections.Counter = collections.Counter()
        self.depth = 0

    def wrap(self, fn, label: str):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            if self.depth:
                return fn(*a, **kw)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds[label] += time.perf_counter() - t0
                self.calls[label] += 1
                self.depth -= 1
        return wrapper


@contextlib.contextmanager
def _patched(timer: _Timer):
    targets = [(JobStorage, m, f"redis: {m}") for m in STORAGE_METHODS]
    targets += [(wukong.executor, "loads", "unpickle (values, paths)"),
                (wukong.executor, "dumps", "pickle (values, payloads)")]
    saved = []
    for owner, attr, label in targets:
        original = getattr(owner, attr)
        saved.append((owner, attr, original))
        setattr(owner, attr, timer.wrap(original, label))
    try:
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


def run_inprocess(spec, dsk: dict, key: Any) -> dict:
    """Plan the job, then run every invocation here; returns the value plus the timings."""
    stores = RedisStores(spec, single_connection=True)
    queue = _LocalQueue()
    # batch count reports as a local worker does (a Lambda reports after every invocation)
    executor = wukong.executor.Executor(stores, queue, flush_interval=FLUSH_INTERVAL)
    timer = _Timer()
    graph = normalize_graph(dsk, [key])
    job = plan_job(graph, stores, make_config(n_workers=1))
    storage = JobStorage(stores, job.settings.job_id, job.settings.ttl, job.settings.n_outputs)
    queue.invoke(job.leaf_payloads())
    executors = 0
    t0 = time.perf_counter()
    payload_seconds = handle_seconds = 0.0
    with _patched(timer):
        while queue.queue:
            t1 = time.perf_counter()
            inv = loads(queue.queue.popleft())
            t2 = time.perf_counter()
            executor.handle(inv)
            t3 = time.perf_counter()
            payload_seconds += t2 - t1
            handle_seconds += t3 - t2
            executors += 1
    total = time.perf_counter() - t0
    tid = job.plan.output_ids[0]
    value = loads(storage.results([tid])[tid])
    storage.cleanup(job.plan.n_tasks, len(job.plan.paths))
    stores.close()
    timer.calls["unpickle invocation payload"] = executors
    timer.seconds["unpickle invocation payload"] = payload_seconds
    charged = sum(timer.seconds.values())
    timer.seconds["rest of Executor.handle (decisions, records, tasks)"] = max(
        0.0, total - charged)
    timer.calls["rest of Executor.handle (decisions, records, tasks)"] = executors
    return {"value": value, "executors": executors, "seconds": total, "handle_seconds": handle_seconds,
            "calls": dict(timer.calls), "by_step": dict(timer.seconds)}


def print_inprocess(result: dict) -> None:
    n = result["executors"]
    print(f"\n=== in-process: {n} executors run one after another in {result['seconds']:.3f} s "
          f"= {1e6 * result['seconds'] / n:.0f} us per executor (no queue round trips, no contention)")
    rows = sorted(result["by_step"].items(), key=lambda kv: -kv[1])
    for label, seconds in rows:
        calls = result["calls"].get(label, 0)
        per_call = 1e6 * seconds / calls if calls else 0.0
        print(f"  {label:52s} {seconds:6.3f} s {100 * seconds / result['seconds']:5.1f}%  "
              f"{calls / n:5.2f} calls/executor  {per_call:6.0f} us/call")
