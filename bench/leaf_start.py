"""Time to start 10,000 leaf executors locally: one client thread vs ``num_lambda_invokers`` threads.

Builds the real leaf payloads of a 10,000-leaf job, then times only the invoke (the RPUSHes onto a
scratch queue no worker reads). Usage: ``python bench/leaf_start.py [n_leaves] [repeats]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from operator import add

from wukong import LocalCluster
from wukong.graph import normalize_graph
from wukong.invocation import ParallelInvoker
from wukong.planning import plan_job
from wukong.local.workers import RedisQueueInvoker


def main(n_leaves: int = 10_000, repeats: int = 5) -> None:
    with LocalCluster(n_workers=1) as cluster:
        dsk = {f"x{i}": (add, i, 1) for i in range(n_leaves)}
        job = plan_job(normalize_graph(dsk, list(dsk)), cluster.stores, cluster.config)
        t0 = time.perf_counter()
        payloads = job.leaf_payloads()
        build = time.perf_counter() - t0
        queue = f"{cluster.queue_key}:bench"  # nobody reads it: only the start is timed
        single = RedisQueueInvoker(cluster.stores.mds, queue)
        print(f"{n_leaves} leaf payloads, {sum(map(len, payloads)) / 2**20:.1f} MB, built in {build * 1000:.0f} ms")
        for label, invoker in [("1 thread (before)", single)] + [
            (f"{n} invokers (after)", ParallelInvoker(single, n)) for n in (4, 16)
        ]:
            times = []
            for _ in range(repeats):
                cluster.stores.mds.delete(queue)
                t0 = time.perf_counter()
                invoker.invoke(payloads)
                times.append(time.perf_counter() - t0)
                assert cluster.stores.mds.llen(queue) == n_leaves
            print(f"{label:<22} median {statistics.median(times) * 1000:7.1f} ms  "
                  f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")
        cluster.stores.mds.delete(queue)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
