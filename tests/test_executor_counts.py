"""What executors count, run in this process against the real Redis: the job's totals count every
invocation exactly once, before it is sent, and the runtime's hooks (CloudWatch metrics on AWS)
see each invocation's own counts, invocations included."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from operator import add

from wukong.config import make_config
from wukong.executor import Executor
from wukong.graph import normalize_graph
from wukong.hooks import ExecutorHooks
from wukong.invocation import Invoker
from wukong.planning import plan_job
from wukong.serialization import loads
from wukong.storage import JobStorage, RedisStores


class QueueInvoker(Invoker):
    def __init__(self, storage_of_job):
        self.queue: collections.deque[bytes] = collections.deque()
        self.totals_when_sent: list[int] = []
        self.storage_of_job = storage_of_job

    def invoke(self, payloads: Sequence[bytes]) -> None:
        # what the job's totals say at the moment these invocations go out
        self.totals_when_sent.append(int(self.storage_of_job().read_counts().get("invoked", 0)))
        self.queue.extend(payloads)


class RecordingHooks(ExecutorHooks):
    def __init__(self) -> None:
        self.counts: list[dict] = []

    def invocation_done(self, counts) -> None:
        self.counts.append(dict(counts))


def test_invocations_are_in_the_job_totals_before_they_are_sent_and_reach_the_hooks(cluster):
    # a fans out to ten dependents: its executor continues with one and invokes nine
    dsk = {"a": 1, **{f"b{i}": (add, "a", i) for i in range(10)}, "c": (sum, [f"b{i}" for i in range(10)])}
    graph = normalize_graph(dsk, ["c"])
    stores = RedisStores(cluster.spec, single_connection=True)
    job = plan_job(graph, stores, make_config(n_workers=1))
    storage = JobStorage(stores, job.settings.job_id, job.settings.ttl, job.settings.n_outputs)
    invoker = QueueInvoker(lambda: storage)
    hooks = RecordingHooks()
    executor = Executor(stores, invoker, hooks=hooks)
    try:
        invoker.queue.extend(job.leaf_payloads())
        while invoker.queue:
            executor.handle(loads(invoker.queue.popleft()))
        executor.flush()
        tid = job.plan.output_ids[0]
        assert loads(storage.results([tid])[tid]) == sum(1 + i for i in range(10))
        totals = storage.read_counts()
        assert totals["invoked"] == 9, "each invocation counted once in the job's totals"
        assert totals["executors_finished"] == 1 + 9
        # counted before sending: the first batch of invokes was already in the totals
        assert invoker.totals_when_sent == [9]
        assert sum(c.get("invoked", 0) for c in hooks.counts) == 9  # the metric the AWS hooks emit
        assert sum(c.get("tasks", 0) for c in hooks.counts) == len(dsk)
    finally:
        storage.cleanup(job.plan.n_tasks, job.record.n_paths)
        stores.close()

