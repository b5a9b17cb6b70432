"""The simulator's cost and latency model: one validated pydantic model with cited defaults.

Every default names its source in its description; docs/simulator.md lists them with links.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wukong.config import WukongConfig

_CFG = WukongConfig.model_fields  # defaults only: the environment must not change a simulation


def _default(name: str):
    return _CFG[name].default


class SimModel(BaseModel):
    """Latencies in seconds, sizes in bytes, bandwidth in bytes per second, prices in USD.

    ``None`` for a limit means "no limit". :meth:`ideal` gives the zero-overhead model under which
    a perfect scheduler finishes in exactly the critical path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- AWS Lambda ---------------------------------------------------------------------------
    invoke_latency: float = Field(
        0.05, ge=0, description="From an asynchronous Invoke until the handler runs, warm. "
        "Wukong SoCC'20 / design notes §1: 'each Lambda invoke costs about 50 ms'.")
    invoke_call_seconds: float = Field(
        0.025, ge=0, description="Caller-side time of one Invoke API call. Wang et al., 'Peeking Behind "
        "the Curtains of Serverless Platforms' (USENIX ATC'18): median warm-start latency on AWS ~25 ms.")
    invoke_threads: int = Field(
        8, ge=1, description="Invoke calls one executor or invoker Lambda makes in parallel (assumption: "
        "a small thread pool, like the original's parallel invokers).")
    cold_start: float = Field(
        0.3, ge=0, description="Extra start-up time of a new execution environment: Python zip package "
        "with dependencies, p50 ~300 ms (range 150-700 ms) in published measurements.")
    concurrency_limit: int | None = Field(
        1000, ge=1, description="Concurrent executions: the default account quota per Region is 1,000 "
        "(AWS Lambda docs, 'Understanding Lambda function scaling').")
    scaling_burst: int | None = Field(
        1000, ge=1, description="New execution environments available at once: 1,000 per 10 s per "
        "function, no accumulation beyond 1,000 (AWS Lambda docs, 'Lambda scaling behavior', 2023+).")
    scaling_rate: float | None = Field(
        100.0, gt=0, description="New execution environments per second, refilled continuously "
        "(1,000 every 10 s; AWS Lambda docs, 'Lambda scaling behavior').")
    memory_mb: int = Field(
        _default("lambda_memory_mb"), ge=128, le=10240,
        description="Executor memory; 3008 MB as in the original Wukong (WukongConfig.lambda_memory_mb).")
    price_per_gb_second: float = Field(
        _default("lambda_price_per_gb_second"), ge=0,
        description="AWS Lambda x86, us-east-1: $0.0000166667 per GB-s (aws.amazon.com/lambda/pricing).")
    price_per_request: float = Field(
        _default("lambda_price_per_request"), ge=0,
        description="AWS Lambda: $0.20 per million requests (aws.amazon.com/lambda/pricing).")
    billing_granularity: float = Field(
        0.001, ge=0, description="Lambda bills duration rounded up to 1 ms (aws.amazon.com/lambda/pricing).")

    # --- Redis (MDS and KV shards) ----------------------------------------------------------------
    redis_rtt: float = Field(
        0.0005, ge=0, description="One Redis round trip from a Lambda in the same VPC: ElastiCache "
        "advertises sub-millisecond responses; 30-70 µs on loopback here (design notes §5) plus a network hop.")
    bandwidth: float = Field(
        75e6, gt=0, description="Bytes/s between one Lambda and Redis: 400-700 Mbit/s measured for a "
        "single Lambda's network transfers; 600 Mbit/s = 75 MB/s. Storage servers are assumed never saturated.")
    payload_limit: int = Field(
        _default("payload_limit"), ge=4096,
        description="Largest invocation payload: 1 MB, the asynchronous invoke limit (WukongConfig.payload_limit).")
    big_task_threshold: int = Field(
        _default("big_task_threshold"), ge=0,
        description="Clustering threshold (WukongConfig.big_task_threshold).")
    record_bytes: int = Field(
        400, ge=0, description="Pickled size of one schedule record: 166 B (tree of adds) to 639 B "
        "(TSQR) measured with wukong.serialization.dumps on this repo's plans.")
    invocation_overhead_bytes: int = Field(
        2048, ge=0, description="Payload bytes of an invocation besides values and records (settings, framing).")

    # --- Step Functions and leaf invocation -----------------------------------------------------------
    sfn_price_per_transition: float = Field(
        0.000025, ge=0, description="Standard workflows: $0.025 per 1,000 state transitions "
        "(aws.amazon.com/step-functions/pricing, us-east-1).")
    sfn_transition_latency: float = Field(
        0.05, ge=0, description="Delay Step Functions adds per state transition (assumption: tens of ms).")
    map_max_concurrency: int = Field(
        40, ge=1, description="Inline Map runs at most 40 iterations at once (design notes §4).")
    leaves_per_invoker: int = Field(
        _default("min_leaves_per_invoker"), ge=1,
        description="Leaf executors one invoker Lambda starts: 50, as the original's invoker Lambdas "
        "(WukongConfig.min_leaves_per_invoker).")

    # --- compute -------------------------------------------------------------------------------
    plan_seconds_per_task: float = Field(
        8e-6, ge=0, description="Schedule generation per task (normalize + generate_schedules): "
        "bench/plan_speed.py measured 14-27 µs on this shared 2-core machine at load 3-4, about half "
        "a core each (BENCHMARKS.md, 'Plan speed'); 8 µs assumes a core of its own.")
    executor_task_overhead: float = Field(
        0.00025, ge=0, description="Executor CPU per task besides the task itself (decisions, records, "
        "(un)pickling): ~250 µs measured in BENCHMARKS.md's per-executor table.")
    default_task_seconds: float = Field(
        0.01, ge=0, description="Duration of a task of a --graph file (its real duration is unknown).")
    default_output_bytes: int = Field(
        1024, ge=0, description="Output size of a task of a --graph file.")

    # --- the centralized baseline -------------------------------------------------------------
    central_dispatch_seconds: float = Field(
        0.001, ge=0, description="Scheduler time per task, serialized: Dask distributed documents "
        "'about 1ms of overhead' per task (distributed.dask.org).")
    central_sfn_transitions_per_task: float = Field(
        0.0, ge=0, description="State transitions per dispatched task: 0 for a scheduler process "
        "(Dask/numpywren style); set 1+ to model Step Functions as the central scheduler.")

    @classmethod
    def ideal(cls, **overrides) -> "SimModel":
        """No latency, no limits, infinite bandwidth: only task durations take time."""
        zero = dict(
            invoke_latency=0.0, invoke_call_seconds=0.0, cold_start=0.0, concurrency_limit=None,
            scaling_burst=None, scaling_rate=None, redis_rtt=0.0, bandwidth=float("inf"),
            sfn_transition_latency=0.0, plan_seconds_per_task=0.0, executor_task_overhead=0.0,
            central_dispatch_seconds=0.0,
        )
        zero.update(overrides)
        return cls(**zero)

    def transfer(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` between a Lambda and Redis, after the round trip."""
        return nbytes / self.bandwidth

    def io(self, nbytes: float = 0) -> float:
        """One Redis call moving ``nbytes``: a round trip plus the transfer."""
        return self.redis_rtt + nbytes / self.bandwidth

    def billed(self, seconds: float) -> float:
        """Billed duration of one invocation (rounded up to the billing granularity)."""
        g = self.billing_granularity
        if g <= 0:
            return seconds
        units = -(-seconds // g)
        return units * g
