"""Wukong's decentralized execution, replayed as a discrete-event simulation.

The schedules are the real ``generate_schedules`` output and every executor decision is the real
``wukong.decisions`` call, so the simulation follows the code: become or invoke at fan-outs, bit
counters at fan-ins (the last upstream claims), inline payloads vs the KV store, clustering, lazy
schedule-path reads, and leaf invocation by batched invoker Lambdas under a Step Functions Map.
"""

from __future__ import annotations

import math
from collections import deque

from wukong import decisions
from wukong.schedule import JobPlan, TaskRecord, generate_schedules
from wukong.simulate.lambdas import EventLoop, Start
from wukong.simulate.model import SimModel
from wukong.simulate.report import SimResult
from wukong.simulate.shapes import SimGraph, to_task_graph

# event kinds; ties in time break on the push order
_INVOKE, _START, _TASK_DONE, _BUMPED, _END, _TOKEN = range(6)


class _Exec:
    """One executor invocation's state (what ``executor._Run`` keeps)."""

    __slots__ = ("queue", "memory", "paths", "singles", "began", "cold", "steps")

    def __init__(self, began: float, cold: bool):
        self.queue: deque[int] = deque()
        self.memory: set[int] = set()  # task ids whose values are in this executor's memory
        self.paths: set[int] = set()  # schedule paths it has read (own records + frontier copies)
        self.singles: set[int] = set()  # records that came in the invocation payload
        self.began = began
        self.cold = cold
        self.steps = None


def simulate_wukong(sim: SimGraph, model: SimModel, plan: JobPlan | None = None) -> SimResult:
    """Run ``sim`` through Wukong's schedules under ``model``; ``plan`` defaults to the real one."""
    return _WukongSim(sim, model, plan).run()


class _WukongSim(EventLoop):
    START, TOKEN = _START, _TOKEN

    def __init__(self, sim: SimGraph, model: SimModel, plan: JobPlan | None):
        super().__init__(model)
        self.sim, self.m = sim, model
        self.plan = plan if plan is not None else generate_schedules(to_task_graph(sim))
        n = len(sim)
        self.records: list[TaskRecord] = [None] * n  # type: ignore[list-item]
        for path in self.plan.paths:
            for tid, rec in path.records.items():
                if rec.path == path.pid:
                    self.records[tid] = rec
        self.path_bytes = [len(p.records) * model.record_bytes for p in self.plan.paths]
        self.arrived = [0] * n  # fan-in counters: bits set so far
        self.stored_at = [math.inf] * n  # when the value became readable in the KV store
        self.r = SimResult("wukong", sim.name, n, sim.critical_path(),
                           start=[math.nan] * n, finish=[math.nan] * n, runs=[0] * n)
        self.outputs_left = len(set(sim.outputs))

    def run(self) -> SimResult:
        m, r = self.m, self.r
        map_end = self._plan_and_invoke_leaves()
        self.loop({_INVOKE: lambda at, payload, _b: self.invoke(at, payload), _START: self._on_start,
                   _TASK_DONE: self._on_task_done, _BUMPED: self._on_bumped, _END: self._on_end,
                   _TOKEN: self.on_token})
        if self.outputs_left:
            raise RuntimeError(f"simulation ended with {self.outputs_left} results missing: a scheduling bug")
        # Await gets SendTaskSuccess, then the Finalize Lambda cleans up (one pipelined DEL per 1,000 keys)
        cleanup = math.ceil((r.n_tasks + len(self.plan.paths)) / 1000) * m.redis_rtt
        finalize = m.sfn_transition_latency * 2 + m.invoke_latency + cleanup
        r.makespan = max(r.done_at, map_end) + finalize
        r.bill(m, m.billed(cleanup))
        r.helper_invocations += 1
        r.sfn_transitions += 2  # Await, Finalize
        r.cold_starts += self.pool.cold_starts
        r.peak_concurrency = self.pool.peak_busy
        r.close(m)
        return r

    def _plan_and_invoke_leaves(self) -> float:
        """The Plan state and the Map of invoker Lambdas; pushes each leaf's invoke. Returns the Map's end."""
        m, r = self.m, self.r
        write = math.ceil(len(self.plan.paths) / 1000) * m.redis_rtt + m.transfer(sum(self.path_bytes))
        r.plan_seconds = r.n_tasks * m.plan_seconds_per_task + write
        r.mds_ops += len(self.plan.paths) + 1
        r.round_trips += math.ceil(len(self.plan.paths) / 1000)
        r.bytes_written += sum(self.path_bytes)
        plan_start = m.sfn_transition_latency + m.invoke_latency + m.cold_start
        plan_end = plan_start + r.plan_seconds
        r.bill(m, m.billed(r.plan_seconds + m.cold_start))
        r.helper_invocations += 1
        r.sfn_transitions += 2  # Plan, Map
        leaves = [p.pid for p in self.plan.leaf_paths]
        per = m.leaves_per_invoker
        batches = [leaves[i:i + per] for i in range(0, len(leaves), per)]
        slots = [plan_end] * min(m.map_max_concurrency, len(batches))
        for i, batch in enumerate(batches):
            slot = i % len(slots)  # iterations start in order as slots free up (all batches are alike)
            cold = i < len(slots)
            began = slots[slot] + m.sfn_transition_latency + m.invoke_latency + (m.cold_start if cold else 0.0)
            for j, pid in enumerate(batch):
                self.push(began + (j // m.invoke_threads + 1) * m.invoke_call_seconds, _INVOKE, ("leaf", pid))
            ran = math.ceil(len(batch) / m.invoke_threads) * m.invoke_call_seconds
            slots[slot] = began + ran
            r.bill(m, m.billed(ran + (m.cold_start if cold else 0.0)))
            r.helper_invocations += 1
            r.sfn_transitions += 1
        return max(slots, default=plan_end)

    def _on_end(self, at: float, ex: _Exec, _b) -> None:
        m = self.m
        self.r.bill(m, m.billed(at - ex.began + (m.cold_start if ex.cold else 0.0)))
        self.release(at)

    # --- one executor ------------------------------------------------------------------------------
    def _on_start(self, at: float, started: Start, _b) -> None:
        m, r = self.m, self.r
        ex = _Exec(at, started.cold)
        r.executors += 1
        kind, x, *rest = started.payload
        if kind == "leaf":
            pid = x
            path_bytes = self.path_bytes[pid]
            inline = path_bytes + m.invocation_overhead_bytes <= m.payload_limit
            if not inline:
                at += self._read_path(pid)  # too big to ride in the payload: read it from the MDS
            r.payload_bytes += m.invocation_overhead_bytes + (path_bytes if inline else 0)
            ex.paths.add(pid)
            ex.queue.append(self.plan.paths[pid].leaf)
        else:
            upstream, inline = rest
            ex.singles.add(x)
            if inline:
                ex.memory.add(upstream)
            ex.queue.append(x)
        self._next(at, ex)

    def _read_path(self, pid: int) -> float:
        r = self.r
        r.mds_ops += 1
        r.round_trips += 1
        r.bytes_read += self.path_bytes[pid]
        r.schedule_bytes_read += self.path_bytes[pid]
        return self.m.io(self.path_bytes[pid])

    def _known(self, ex: _Exec, tid: int) -> bool:
        rec = self.records[tid]
        if tid in ex.singles or rec.path in ex.paths:
            return True
        return any(self.records[d].path in ex.paths for d, _ in rec.deps)  # a frontier copy

    def _next(self, at: float, ex: _Exec) -> None:
        """Run the executor's next local task, or end it."""
        m, r, sim = self.m, self.r, self.sim
        if not ex.queue:
            self.push(at, _END, ex)
            return
        tid = ex.queue.popleft()
        rec = self.records[tid]
        if not self._known(ex, tid):
            at += self._read_path(rec.path)
            ex.paths.add(rec.path)
        missing = [d for d, _ in rec.deps if d not in ex.memory]
        if missing:
            if any(self.stored_at[d] > at for d in missing):
                raise RuntimeError(f"task {tid} reads a value that is not in the KV store yet")
            nbytes = sum(sim.out_bytes[d] for d in missing)
            r.kv_ops += len(missing)
            r.round_trips += 1
            r.bytes_read += nbytes
            at += m.io(nbytes)
            ex.memory.update(missing)
        r.start[tid] = at
        r.runs[tid] += 1
        self.push(at + m.executor_task_overhead + sim.seconds[tid], _TASK_DONE, ex, tid)

    def _on_task_done(self, at: float, ex: _Exec, tid: int) -> None:
        m, r = self.m, self.r
        r.finish[tid] = at
        r.tasks_run += 1
        rec = self.records[tid]
        nbytes = self.sim.out_bytes[tid] if decisions.needs_size(rec) else None
        steps = decisions.after_task(rec, nbytes, m.payload_limit, m.big_task_threshold)
        if steps.publish_result:
            at += m.io(nbytes)
            r.mds_ops += 3
            r.round_trips += 1
            r.bytes_written += nbytes
            r.result_bytes += nbytes
            self.outputs_left -= 1
            r.done_at = max(r.done_at, at)
        if steps.store_value:  # the value goes first, so it is readable before any counter moves
            at += m.io(nbytes)
            self._stored(tid, nbytes, at)
        if steps.fan_in:
            at += m.redis_rtt  # one script call bumps every counter
            r.mds_ops += 3 * len(steps.fan_in)
            r.round_trips += 1
        ex.steps = (steps, nbytes)
        self.push(at, _BUMPED, ex, tid)

    def _stored(self, tid: int, nbytes: int, at: float) -> None:
        r = self.r
        r.kv_ops += 1
        r.round_trips += 1
        r.bytes_written += nbytes
        self.stored_at[tid] = at

    def _on_bumped(self, at: float, ex: _Exec, tid: int) -> None:
        """The counter bumps land now (in time order, so exactly one upstream completes each)."""
        m, r = self.m, self.r
        steps, nbytes = ex.steps
        rec = self.records[tid]
        claimed = []
        for ref in steps.fan_in:
            self.arrived[ref.tid] += 1
            if self.arrived[ref.tid] == ref.n_deps:
                claimed.append(ref.tid)
        local, remote = decisions.split_ready(list(steps.ready) + claimed, rec.become, steps.clustered)
        if remote:
            inline = nbytes is not None and decisions.inline_value(nbytes, m.payload_limit)
            if not inline and not steps.store_value:
                at += m.io(nbytes)
                self._stored(tid, nbytes, at)
            size = m.invocation_overhead_bytes + m.record_bytes + (nbytes if inline else 0)
            for i, t in enumerate(remote):
                self.push(at + (i // m.invoke_threads + 1) * m.invoke_call_seconds, _INVOKE, ("task", t, tid, inline))
                r.payload_bytes += size
            at += math.ceil(len(remote) / m.invoke_threads) * m.invoke_call_seconds
        if local:
            ex.memory.add(tid)
            ex.queue.extend(local)
        keep = {d for t in ex.queue for d, _ in self.records[t].deps}
        ex.memory &= keep
        self._next(at, ex)
