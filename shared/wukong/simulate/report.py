"""What one simulated run produced: makespan, storage traffic, Lambda and Step Functions cost.

Both simulators fill a :class:`SimResult`; :func:`comparison_table` lays several side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wukong.report import fmt_bytes
from wukong.simulate.model import SimModel


@dataclass
class SimResult:
    scheduler: str  # "wukong" or "central"
    graph: str
    n_tasks: int
    critical_path: float
    makespan: float = 0.0
    done_at: float = 0.0  # the last requested result stored (before any finalize step)
    plan_seconds: float = 0.0
    tasks_run: int = 0
    executors: int = 0  # task-running Lambda invocations
    helper_invocations: int = 0  # plan, invoker and finalize Lambdas
    cold_starts: int = 0
    peak_concurrency: int = 0
    mds_ops: int = 0
    kv_ops: int = 0
    round_trips: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    schedule_bytes_read: int = 0  # of bytes_read: schedule paths read from the MDS
    payload_bytes: int = 0
    result_bytes: int = 0
    gb_seconds: float = 0.0
    sfn_transitions: int = 0
    lambda_cost: float = 0.0
    sfn_cost: float = 0.0
    # per task id (not in as_dict): when it started / finished, and how often it ran
    start: list[float] = field(default_factory=list, repr=False)
    finish: list[float] = field(default_factory=list, repr=False)
    runs: list[int] = field(default_factory=list, repr=False)

    @property
    def storage_ops(self) -> int:
        return self.mds_ops + self.kv_ops

    @property
    def storage_bytes(self) -> int:
        return self.bytes_written + self.bytes_read

    @property
    def total_cost(self) -> float:
        return self.lambda_cost + self.sfn_cost

    def bill(self, model: SimModel, billed_seconds: float) -> None:
        """Add ``billed_seconds`` of Lambda duration (already rounded per invocation)."""
        self.gb_seconds += billed_seconds * model.memory_mb / 1024

    def close(self, model: SimModel) -> None:
        """Turn the counts into costs."""
        requests = self.executors + self.helper_invocations
        self.lambda_cost = requests * model.price_per_request + self.gb_seconds * model.price_per_gb_second
        self.sfn_cost = self.sfn_transitions * model.sfn_price_per_transition

    def as_dict(self) -> dict:
        skip = {"start", "finish", "runs"}
        out = {k: v for k, v in self.__dict__.items() if k not in skip}
        out.update(storage_ops=self.storage_ops, storage_bytes=self.storage_bytes, total_cost=self.total_cost)
        return out


def fmt_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.2f} s" if s >= 1 else f"{s * 1000:.0f} ms"


def comparison_table(results: list[SimResult]) -> str:
    """A plain-text table, one column per result."""
    rows = [
        ("scheduler", lambda r: r.scheduler),
        ("tasks", lambda r: f"{r.n_tasks:,}"),
        ("makespan", lambda r: fmt_seconds(r.makespan)),
        ("  vs critical path", lambda r: f"{r.makespan / r.critical_path:.2f}x" if r.critical_path else "-"),
        ("executors (Lambdas)", lambda r: f"{r.executors:,} (+{r.helper_invocations:,} helpers)"),
        ("cold starts", lambda r: f"{r.cold_starts:,}"),
        ("peak concurrency", lambda r: f"{r.peak_concurrency:,}"),
        ("storage ops", lambda r: f"{r.storage_ops:,} ({r.mds_ops:,} MDS, {r.kv_ops:,} KV)"),
        ("storage bytes", lambda r: f"{fmt_bytes(r.bytes_written)} written, {fmt_bytes(r.bytes_read)} read"
                                    + (f" ({fmt_bytes(r.schedule_bytes_read)} of it schedules)"
                                       if r.schedule_bytes_read else "")),
        ("payload bytes", lambda r: fmt_bytes(r.payload_bytes)),
        ("Lambda GB-s", lambda r: f"{r.gb_seconds:,.1f}"),
        ("SFN transitions", lambda r: f"{r.sfn_transitions:,}"),
        ("est. cost", lambda r: f"${r.total_cost:.4f} (Lambda ${r.lambda_cost:.4f}, SFN ${r.sfn_cost:.4f})"),
    ]
    cells = [[name] + [fn(r) for r in results] for name, fn in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
