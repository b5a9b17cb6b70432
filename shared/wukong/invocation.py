"""What one executor invocation carries, and the small interface every invoke backend implements.

An :class:`Invocation` names the job, the task to start from, where storage is, and may carry
upstream values and schedule records inline, as long as the serialized payload fits under the
payload limit. Backends (local worker queue, AWS Lambda) only move the bytes.

The envelope holds only plain data (ints, strings, bytes and Wukong's own dataclasses): anything
that holds user code travels as an opaque blob the executor unpickles inside its error handling,
so a schedule whose functions cannot be imported fails the job instead of vanishing unread.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

from wukong.storage import StorageSpec


@dataclass(frozen=True)
class JobSettings:
    """Per-job settings every executor of the job needs."""

    job_id: str
    storage: StorageSpec
    ttl: int
    n_outputs: int
    payload_limit: int
    big_task_threshold: int
    max_output_size: int | None = None  # larger serialized outputs fail their task; None: no limit
    heartbeat_interval: int = 0  # seconds between liveness reports to the runtime (AWS heartbeats); 0: none


@dataclass
class Invocation:
    """The payload of one executor invocation."""

    job: JobSettings
    start: int  # task id to run first
    start_path: int | None = None  # the path holding the start task's record, when not sent along
    inline_values: dict[int, bytes] = field(default_factory=dict)  # serialized upstream outputs
    records_blob: bytes | None = None  # serialized {task id: TaskRecord} sent along
    path_blob: bytes | None = None  # a whole serialized Path sent along (leaf invocations)
    attempt: int = 0


class Invoker(abc.ABC):
    """Starts executors asynchronously: ``invoke`` returns before they run."""

    @abc.abstractmethod
    def invoke(self, payloads: Sequence[bytes]) -> None:
        """Start one executor per serialized :class:`Invocation`."""
