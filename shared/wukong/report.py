"""The job report: what a job did (tasks, executors, storage traffic, time, estimated cost)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class JobReport:
    job_id: str
    status: str  # "succeeded", "failed", "timed out"
    n_tasks: int
    n_leaves: int
    tasks_run: int
    executors_invoked: int
    executors_finished: int
    mds_ops: int
    kv_ops: int
    round_trips: int
    kv_bytes_written: int
    kv_bytes_read: int
    payload_bytes: int
    result_bytes: int
    plan_seconds: float
    wall_seconds: float
    executor_seconds: float
    task_seconds: float
    estimated_cost_usd: float
    proxy_invokes: int = 0  # of executors_invoked, those the KV proxy made for wide fan-outs
    delayed_io_claims: int = 0  # fan-ins a big output held in memory completed itself (value never written)
    delayed_io_writes: int = 0  # big outputs held in memory that were written after all
    duplicates_dropped: int = 0  # repeated deliveries of an invocation that ran nothing
    #: of executors_invoked, those whose process died or was stopped (retries are invocations too);
    #: tasks_run counts what they finished before, so a task re-run by a retry counts twice
    executors_lost: int = 0

    @property
    def redis_ops(self) -> int:
        return self.mds_ops + self.kv_ops

    def as_dict(self) -> dict:
        return {**asdict(self), "redis_ops": self.redis_ops}

    def summary(self) -> str:
        rows = [
            ("job", f"{self.job_id} ({self.status})"),
            ("tasks", f"{self.tasks_run} run of {self.n_tasks} ({self.n_leaves} leaves)"),
            ("executors", f"{self.executors_invoked} invoked, {self.executors_finished} finished"
                          + (f", {self.executors_lost} lost (died or stopped)" if self.executors_lost else "")
                          + (f" ({self.proxy_invokes} by the KV proxy)" if self.proxy_invokes else "")),
            ("redis ops", f"{self.redis_ops} ({self.mds_ops} MDS, {self.kv_ops} KV) in {self.round_trips} round trips"),
            ("KV traffic", f"{fmt_bytes(self.kv_bytes_written)} written, {fmt_bytes(self.kv_bytes_read)} read"),
            ("payloads", f"{fmt_bytes(self.payload_bytes)} in invocations, {fmt_bytes(self.result_bytes)} of results"),
            *([("delayed I/O", f"{self.delayed_io_claims} fan-ins completed by a held output, "
                               f"{self.delayed_io_writes} held outputs written after all")]
              if self.delayed_io_claims or self.delayed_io_writes else []),
            *([("duplicates", f"{self.duplicates_dropped} repeated invocations ran nothing")]
              if self.duplicates_dropped else []),
            ("time", f"{self.wall_seconds:.3f} s wall ({self.plan_seconds:.3f} s planning), "
                     f"{self.executor_seconds:.2f} s in executors, {self.task_seconds:.2f} s in tasks"),
            ("est. Lambda cost", f"${self.estimated_cost_usd:.6f}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def estimate_lambda_cost(executors: int, busy_seconds: float, memory_mb: int,
                         price_per_gb_second: float, price_per_request: float) -> float:
    """Requests plus GB-seconds, at the configured (default: us-east-1 x86) prices."""
    return executors * price_per_request + busy_seconds * (memory_mb / 1024) * price_per_gb_second
