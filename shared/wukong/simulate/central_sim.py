"""The baseline: a centralized scheduler that dispatches every task itself (Dask- or numpywren-style).

Each ready task costs the scheduler ``central_dispatch_seconds`` of serialized work, then runs in
its own Lambda invocation, which reads its inputs from the KV store, writes its output back, and
tells the scheduler it finished. The same Lambda capacity model as Wukong's applies.
"""

from __future__ import annotations

import math

from wukong.simulate.lambdas import EventLoop, Start
from wukong.simulate.model import SimModel
from wukong.simulate.report import SimResult
from wukong.simulate.shapes import SimGraph

_READY, _DISPATCH, _START, _END, _DONE_MSG, _TOKEN = range(6)


def simulate_central(sim: SimGraph, model: SimModel) -> SimResult:
    return _CentralSim(sim, model).run()


class _CentralSim(EventLoop):
    START, TOKEN = _START, _TOKEN

    def __init__(self, sim: SimGraph, model: SimModel):
        super().__init__(model)
        self.sim, self.m = sim, model
        n = len(sim)
        self.dependents = sim.dependents()
        self.remaining = [len(d) for d in sim.dependencies]
        self.is_output = [False] * n
        for t in sim.outputs:
            self.is_output[t] = True
        self.outputs_left = len(set(sim.outputs))
        self.r = SimResult("central", sim.name, n, sim.critical_path(),
                           start=[math.nan] * n, finish=[math.nan] * n, runs=[0] * n)
        self.scheduler_free = 0.0

    def run(self) -> SimResult:
        m, r = self.m, self.r
        r.plan_seconds = r.n_tasks * m.plan_seconds_per_task  # graph intake on the scheduler
        self.scheduler_free = r.plan_seconds
        for tid, deps in enumerate(self.sim.dependencies):
            if not deps:
                self.push(r.plan_seconds, _READY, tid)
        self.loop({_READY: self._on_ready, _DISPATCH: lambda at, tid, _b: self.invoke(at, tid),
                   _START: self._on_start, _END: lambda at, _a, _b: self.release(at),
                   _DONE_MSG: self._on_done_msg, _TOKEN: self.on_token})
        if self.outputs_left:
            raise RuntimeError(f"simulation ended with {self.outputs_left} results missing")
        r.makespan = r.done_at
        r.sfn_transitions = round(r.n_tasks * m.central_sfn_transitions_per_task)
        r.cold_starts = self.pool.cold_starts
        r.peak_concurrency = self.pool.peak_busy
        r.close(m)
        return r

    def _on_ready(self, at: float, tid: int, _b=None) -> None:
        # the scheduler is one server: dispatches queue up behind each other (events come in time order)
        dispatched = max(at, self.scheduler_free) + self.m.central_dispatch_seconds
        self.scheduler_free = dispatched
        self.push(dispatched, _DISPATCH, tid)

    def _on_start(self, at: float, started: Start, _b=None) -> None:
        m, r, sim = self.m, self.r, self.sim
        tid = started.payload
        began = at
        r.executors += 1
        r.payload_bytes += m.invocation_overhead_bytes + m.record_bytes
        deps = sim.dependencies[tid]
        if deps:
            nbytes = sum(sim.out_bytes[d] for d in deps)
            r.kv_ops += len(deps)
            r.round_trips += 1
            r.bytes_read += nbytes
            at += m.io(nbytes)
        r.start[tid] = at
        r.runs[tid] += 1
        at += m.executor_task_overhead + sim.seconds[tid]
        r.finish[tid] = at
        r.tasks_run += 1
        nbytes = sim.out_bytes[tid]
        if self.dependents[tid]:
            at += m.io(nbytes)
            r.kv_ops += 1
            r.round_trips += 1
            r.bytes_written += nbytes
        if self.is_output[tid]:
            at += m.io(nbytes)
            r.mds_ops += 1
            r.round_trips += 1
            r.bytes_written += nbytes
            r.result_bytes += nbytes
        r.bill(m, m.billed(at - began + (m.cold_start if started.cold else 0.0)))
        self.push(at, _END)
        self.push(at + m.redis_rtt, _DONE_MSG, tid)  # the completion message reaches the scheduler

    def _on_done_msg(self, at: float, tid: int, _b=None) -> None:
        if self.is_output[tid]:
            self.outputs_left -= 1
            self.r.done_at = max(self.r.done_at, at)
        for d in self.dependents[tid]:
            self.remaining[d] -= 1
            if self.remaining[d] == 0:
                self.push(at, _READY, d)
