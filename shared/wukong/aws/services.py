"""Per-invocation access to configuration, AWS clients and Redis for the Lambda handlers.

Nothing is cached at module level (Lambda reuses containers across jobs): each invocation builds one
:class:`Services`, which makes boto3 clients on first use and closes its Redis connections at the end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from wukong.config import WukongConfig, make_config
from wukong.storage import RedisStores, StorageSpec, spec_from_config

#: Config fields an execution's input may override: job-level knobs only. Where Redis lives and which
#: functions run are the deployment's business, never a caller's.
JOB_FIELDS = frozenset({
    "job_timeout", "heartbeat_timeout", "job_ttl", "payload_limit", "big_task_threshold",
    "min_leaves_per_invoker", "num_lambda_invokers", "lambda_memory_mb", "lambda_price_per_gb_second",
    "lambda_price_per_request",
})
#: How long a warm container trusts the Redis password it read from Secrets Manager (Powertools' cache).
SECRET_MAX_AGE = 300
#: Step Functions execution names, which are our job ids.
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def job_config(overrides: Mapping[str, Any] | None = None) -> WukongConfig:
    """The function's configuration (WUKONG_* environment) with a job's validated overrides."""
    overrides = dict(overrides or {})
    refused = sorted(set(overrides) - JOB_FIELDS)
    if refused:
        raise ValueError(f"these settings cannot be set per job: {', '.join(refused)} "
                         f"(allowed: {', '.join(sorted(JOB_FIELDS))})")
    return make_config(None, **overrides)


def check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ValueError(f"job id {job_id!r} must be 1-80 characters of A-Z, a-z, 0-9, '_' and '-'")
    return job_id


def execution_arn(state_machine_arn: str, job_id: str) -> str:
    """The ARN of the execution named ``job_id`` (executions are named by job id)."""
    prefix, sep, name = state_machine_arn.partition(":stateMachine:")
    if not sep:
        raise ValueError(f"{state_machine_arn!r} is not a state machine ARN")
    return f"{prefix}:execution:{name}:{job_id}"


@dataclass
class Services:
    """What one invocation uses: config, lazily made boto3 clients, and Redis."""

    config: WukongConfig
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _stores: RedisStores | None = field(default=None, repr=False)

    def client(self, service: str) -> Any:
        """A boto3 client, made on first use: building one costs tens of milliseconds."""
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            if self._session is None:
                self._session = boto3.session.Session(region_name=self.config.aws_region)
            self._clients[service] = self._session.client(service, config=Config(
                retries={"mode": "standard", "max_attempts": 5},
                max_pool_connections=max(10, self.config.num_lambda_invokers),
                # presigned URLs: SigV4 everywhere (botocore may pick SigV2 for some endpoints)
                signature_version="s3v4" if service == "s3" else None,
            ))
        return self._clients[service]

    def redis_password(self) -> str | None:
        if self.config.redis_password_secret:
            from aws_lambda_powertools.utilities import parameters

            return parameters.get_secret(self.config.redis_password_secret, max_age=SECRET_MAX_AGE)
        return self.config.redis_password

    def storage_spec(self) -> StorageSpec:
        spec = spec_from_config(self.config, password=self.redis_password())
        if spec is None:
            raise ValueError("no Redis configured: set WUKONG_REDIS_ENDPOINTS (host:port,host:port)")
        return spec

    def stores(self, single_connection: bool = False) -> RedisStores:
        """Connections to the MDS and KV shards for this invocation (closed by :meth:`close`)."""
        if self._stores is None:
            self._stores = RedisStores(self.storage_spec(), single_connection=single_connection)
        return self._stores

    def public_spec(self) -> StorageSpec:
        """The spec executors are told about: endpoints only; each function has its own credentials."""
        return replace(self.stores().spec, password=None)

    def close(self) -> None:
        if self._stores is not None:
            self._stores.close()
            self._stores = None

    def __enter__(self) -> "Services":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
