"""Wukong's one configuration model.

Every knob lives in :class:`WukongConfig`. Precedence is: explicit keyword
arguments, then ``WUKONG_*`` environment variables, then the defaults below.
The seed's ``LocalCluster`` keyword names are accepted as fields; the ones that
only mean something on AWS are documented as such and ignored locally.
"""

from __future__ import annotations

import os
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Environment variable that names an existing Redis server (the MDS and only KV shard).
ENV_REDIS_URL = "REDIS_URL"
#: Prefix of every environment variable read into :class:`WukongConfig`.
ENV_PREFIX = "WUKONG_"

MB = 1024 * 1024
GB = 1024 * MB
#: Upper bounds of the job settings (docs/security.md lists them): past these a value is a mistake,
#: and some would fail deep inside Redis (EXPIRE takes at most about 2**63 milliseconds).
MAX_JOB_SECONDS = 30 * 24 * 3600  # job_ttl and job_timeout: 30 days
MAX_PAYLOAD = 6 * MB  # Lambda's largest (synchronous) invoke payload
MAX_BIG_TASK_THRESHOLD = 1 << 40  # 1 TiB: no executor holds more


def default_n_workers() -> int:
    return max(2, os.cpu_count() or 2)


class WukongConfig(BaseSettings):
    """All of Wukong's settings, validated.

    Sizes are in bytes, durations in seconds.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_assignment=True)

    # --- storage -------------------------------------------------------------------------
    redis_endpoints: list[tuple[str, int]] | None = Field(
        default=None,
        description="Existing Redis servers as (host, port). The first is the metadata store (MDS); "
        "all of them are intermediate KV shards. None: use REDIS_URL, else start an embedded server.",
    )
    redis_url: str | None = Field(
        default=None,
        description="URL of an existing Redis server used as MDS and only KV shard. "
        "Also read from the plain REDIS_URL environment variable.",
    )
    redis_password: str | None = Field(default=None, description="AUTH password for redis_endpoints.")
    num_kv_shards: int = Field(
        default=1, ge=1, le=64, description="Embedded mode: how many Redis servers hold intermediate values."
    )
    redis_maxmemory: int | None = Field(
        default=None, ge=1 << 20, description="Embedded mode: bytes each Redis server may hold (maxmemory, "
        "noeviction); a value that does not fit fails its job naming the task, the size and this cap. "
        "None: as much as the machine gives.")
    job_ttl: int = Field(
        default=6 * 3600, ge=60, le=MAX_JOB_SECONDS,
        description="Every job key expires this long after it was written (60 s to 30 days)."
    )
    redis_timeout: float = Field(
        default=30.0, gt=0,
        description="How long a Redis call waits for its reply. A server silent this long counts as hung: "
        "the job fails with RedisUnavailableError (a timeout is not retried), after one cleanup try of at "
        "most 2 s.")
    redis_tls: bool = Field(default=False, description="Connect to redis_endpoints over TLS (e.g. ElastiCache "
                            "with in-transit encryption).")
    redis_password_secret: str | None = Field(
        default=None,
        description="AWS: Secrets Manager secret id whose SecretString is the Redis AUTH password; "
        "wins over redis_password.",
    )

    # --- executors -----------------------------------------------------------------------
    n_workers: int = Field(
        default_factory=default_n_workers,
        ge=1,
        le=1024,
        description="Embedded mode: warm worker processes standing in for Lambda. "
        "This is the executor concurrency limit. 0 (the seed's value: no Dask workers) means the default.",
    )
    payload_limit: int = Field(
        default=1 * MB,
        ge=4096,
        le=MAX_PAYLOAD,
        description="Largest invocation payload (4 KB to 6 MB); upstream values travel inline while the payload fits "
        "(1 MB is the Lambda asynchronous invoke limit).",
    )
    big_task_threshold: int = Field(
        default=200 * MB,
        ge=0,
        le=MAX_BIG_TASK_THRESHOLD,
        description="Outputs of this many serialized bytes or more keep their ready dependents in the same "
        "executor (clustering) and may delay their KV write (delayed I/O). 200 MB: far above the 1 MB invoke "
        "payload limit, so outputs that cost one KV round trip still fan out; above Dask's default array "
        "chunk (128 MiB), so default-sized chunks keep their parallelism; and at ~75 MB/s between a Lambda "
        "and Redis, moving 200 MB costs ~5 s (write + read), more than most dependents gain by running "
        "elsewhere, while a 3008 MB Lambda still holds a few such values (docs/architecture.md).",
    )
    delayed_io_max_wait: float | None = Field(
        default=None,
        ge=0,
        description="Delayed I/O: longest an executor holds a big output in memory waiting to complete its "
        "fan-in dependent itself, before writing it to the KV store. None: min(60, function_timeout / 4); "
        "the wait also always ends by half the function timeout. 0 turns delayed I/O off.",
    )
    max_output_size: int | None = Field(
        default=None,
        ge=1,
        description="Fail a task whose output, when it must leave its executor (stored, sent on, or "
        "returned), serializes to more than this many bytes; None: no limit.",
    )
    max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Times an invocation whose executor died is retried (Lambda retries asynchronous "
        "invokes twice by default); locally, the worker pool does the same.",
    )
    enforce_memory_limit: bool = Field(
        default=False,
        description="Locally, hold each worker to lambda_memory_mb as Lambda holds a function: a worker "
        "whose memory (RSS, the Python runtime's own included) passes it while running an invocation is "
        "killed, retried like any crash, and the job fails naming the task and the limit. Linux only.",
    )
    function_timeout: float | None = Field(
        default=900.0,
        gt=0,
        le=900,
        description="An executor invocation running longer than this is stopped and retried, as Lambda "
        "stops a function at its timeout (900 s at most); locally the worker pool enforces it.",
    )
    max_task_fanout: int = Field(
        default=10, ge=2, description="Fan-outs this wide are handed to the KV proxy when one is in use."
    )
    executors_use_task_queue: bool = Field(
        default=True, description="Accepted from the seed; executors always keep local work queues."
    )
    chunk_large_tasks: bool = Field(
        default=False, description="Split outputs of chunk_size bytes or more across the KV shards, read back "
        "with one pipeline per shard.")
    num_chunks_for_large_tasks: int | None = Field(
        default=None, ge=1, le=1024, description="Chunks per large output. None: one per KV shard (more when "
        "a chunk would exceed 256 MB; a Redis string holds 512 MB at most).")
    chunk_size: int = Field(
        default=64 * MB, ge=1, description="With chunk_large_tasks: outputs this big or bigger are chunked.")
    limit_blas_threads: bool = Field(
        default=True,
        description="Embedded mode: pin BLAS/OpenMP to one thread per worker process so workers "
        "do not oversubscribe the cores.",
    )

    # --- jobs ----------------------------------------------------------------------------
    job_timeout: float | None = Field(
        default=None, gt=0, le=MAX_JOB_SECONDS, description="Fail a job that has not finished after this many "
        "seconds (at most 30 days); None: no limit (a long job is legitimate). The error names the leaf invocations that never started."
    )
    stall_warning: float | None = Field(
        default=600.0, gt=0, description="Log a warning, naming what never started, each time a job has "
        "finished no task for this many seconds (a lost invocation, or a very long task); None: never."
    )
    progress: bool = Field(default=False, description="Show a progress bar on stderr for each job.")

    # --- accepted from the seed, meaningful on AWS or with the proxy -----------------------
    host: str | None = Field(default=None, description="Seed: scheduler host. Unused locally.")
    proxy_address: str | None = Field(default=None, description="Seed: KV proxy address (AWS).")
    proxy_port: int | None = Field(default=None, ge=1, le=65535, description="Seed: KV proxy port (AWS).")
    num_lambda_invokers: int = Field(
        default=16, ge=1, description="Parallel invokers for leaf executors (batching of leaf invokes)."
    )
    use_local_proxy: bool = Field(default=False, description="Seed: run a KV proxy locally.")
    local_proxy_path: str | None = Field(default=None, description="Seed: path of the local proxy script.")
    use_fargate: bool = Field(default=False, description="Seed: KV shards on Fargate (AWS only).")
    aws_region: str | None = Field(default=None, description="AWS region (AWS only).")

    # --- AWS runtime (docs/aws-runtime.md) ------------------------------------------------------
    executor_function: str | None = Field(
        default=None, description="AWS: name or ARN of the executor Lambda that executors invoke asynchronously."
    )
    bucket: str | None = Field(default=None, description="AWS: S3 bucket for large graphs and job results.")
    state_machine_arn: str | None = Field(default=None, description="AWS: ARN of the Wukong state machine.")
    heartbeat_timeout: int | None = Field(
        default=None,
        ge=10,
        description="AWS: fail the job when no executor has shown progress for this many seconds "
        "(the await state's HeartbeatSeconds: catches crashed or timed-out executors). None: no heartbeat.",
    )
    min_leaves_per_invoker: int = Field(
        default=50, ge=1, description="AWS: fewest leaf executors one invoker Lambda starts (batching of leaves)."
    )

    # --- the HTTP job API: `wukong serve` and remote clients (docs/http-api.md) -------------------
    endpoint: str | None = Field(
        default=None,
        description="URL of a Wukong job API (`wukong serve`, or API Gateway on AWS). Client() and the "
        "job commands (submit, status, result, jobs, cancel) use it.",
    )
    token: SecretStr | None = Field(
        default=None, description="Bearer token for endpoint (`wukong serve --token`); never printed or logged."
    )
    auth: Literal["auto", "token", "sigv4"] = Field(
        default="auto",
        description="How a remote client authenticates: the bearer token, or AWS SigV4 (IAM, credentials "
        "from the default boto3 chain). auto: SigV4 for execute-api URLs, else the token.",
    )
    request_timeout: float = Field(default=60.0, gt=0, description="Client: socket timeout of one HTTP request.")
    inline_graph_limit: int = Field(
        default=1 * MB,
        ge=0,
        description="Client: a serialized graph bigger than this is uploaded first (POST /uploads, then PUT) "
        "instead of travelling inside POST /jobs.",
    )
    max_body_bytes: int = Field(
        default=10 * MB,
        ge=1024,
        description="Server: largest request body (POST /jobs); a bigger one gets 413. 10 MB is also "
        "API Gateway's limit.",
    )
    max_upload_bytes: int = Field(default=2 * GB, ge=1024, description="Server: largest graph upload (PUT /uploads/{id}).")
    upload_dir: str | None = Field(
        default=None, description="Server: directory for uploads in progress. None: a private temporary directory."
    )
    upload_ttl: int = Field(default=900, ge=10, description="Server: an upload URL expires this long after it was issued.")
    max_jobs_kept: int = Field(default=1000, ge=1, description="Server: finished jobs remembered (GET /jobs lists them).")
    result_ttl: int = Field(default=3600, ge=1, description="Server: a finished job's results are kept this long.")
    max_result_bytes: int = Field(
        default=1 * GB,
        ge=0,
        description="Server: total bytes of results kept in memory; beyond it, fetched results go first, "
        "then the oldest.",
    )

    # --- cost model (for the job report's estimate) -----------------------------------------
    lambda_memory_mb: int = Field(
        default=3008, ge=128, le=10240,
        description="The executor Lambda's memory (MB): the cost estimate's, and with enforce_memory_limit "
        "the local workers' limit.",
    )
    lambda_price_per_gb_second: float = Field(default=0.0000166667, ge=0)
    lambda_price_per_request: float = Field(default=0.0000002, ge=0)

    @field_validator("n_workers", mode="before")
    @classmethod
    def _seed_zero_workers(cls, value: Any) -> Any:
        """The seed's example passes n_workers=0 (on AWS, Lambdas do all the work); seed scripts
        must run unchanged, so locally 0 means the default pool size."""
        if (type(value) is int and value == 0) or value == "0":
            return default_n_workers()
        return value

    @field_validator("redis_endpoints", mode="before")
    @classmethod
    def _parse_endpoints(cls, value: Any) -> Any:
        """Accept [("h", p)], ["h:p"], or "h:p,h:p" (the form an environment variable has)."""
        if value is None:
            return None
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        parsed = []
        for item in value:
            if isinstance(item, str):
                host, _, port = item.strip().rpartition(":")
                if not host or not port.isdigit():
                    raise ValueError(f"redis endpoint {item!r} is not of the form host:port")
                item = (host, int(port))
            host, port = item
            parsed.append((str(host), int(port)))
        if not parsed:
            raise ValueError("redis_endpoints is empty; give at least one (host, port) or leave it unset")
        return parsed

    @model_validator(mode="after")
    def _plain_redis_url(self) -> "WukongConfig":
        if self.redis_url is None and self.redis_endpoints is None and os.environ.get(ENV_REDIS_URL):
            # bypass validate_assignment recursion: object.__setattr__ is what pydantic itself uses
            object.__setattr__(self, "redis_url", os.environ[ENV_REDIS_URL])
        return self

    @property
    def resolved_delayed_io_max_wait(self) -> float:
        """The effective delayed-I/O bound in seconds (see delayed_io_max_wait)."""
        if self.delayed_io_max_wait is not None:
            return self.delayed_io_max_wait
        return min(60.0, (self.function_timeout or 900.0) / 4)

    def __repr_args__(self):
        """Reprs (and str) never show a password: neither redis_password nor one inside redis_url."""
        for name, value in super().__repr_args__():
            if name == "redis_password" and value is not None:
                value = SecretStr(value)
            elif name == "redis_url" and value:
                value = redact_url(value)
            yield name, value

    @property
    def uses_external_redis(self) -> bool:
        return self.redis_endpoints is not None or self.redis_url is not None


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def make_config(config: WukongConfig | None = None, **overrides: Any) -> WukongConfig:
    """Build a config: ``overrides`` beat ``config`` (or the environment), which beats defaults.

    Keyword arguments whose value is None are treated as "not given", so callers can pass
    their optional parameters straight through.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if config is None:
        return WukongConfig(**given)
    if not given:
        return config
    merged = config.model_dump(exclude_unset=True)
    merged.update(given)
    return WukongConfig(**merged)
