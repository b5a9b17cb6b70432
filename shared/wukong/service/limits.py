"""The bounds ``wukong serve`` puts on its connections, as named constants and :class:`HttpLimits`:
how long a client may take over its request headers, its body, its idle keep-alive time and its
response, and how many connections may be open at once. No dependencies, so the CLI can show them.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: From a connection's first byte (or its accept) to the end of the request's headers.
HEADER_TIMEOUT = 10.0
#: Longest silence while a request body is being sent.
BODY_TIMEOUT = 30.0
#: Past the first BODY_TIMEOUT seconds, a body must average at least this many bytes a second:
#: an idle timeout alone lets a client hold a connection forever with a byte every few seconds.
BODY_MIN_RATE = 8 * 1024
#: An idle keep-alive connection is closed after this long (uvicorn's own default).
KEEP_ALIVE_TIMEOUT = 5.0
#: A client that takes none of its response for this long is cut off (it would hold the response's
#: buffers and its connection slot for good).
SEND_TIMEOUT = 30.0
#: The share of the process's file descriptor limit (RLIMIT_NOFILE) HTTP connections may take:
#: the rest are Redis connections, worker pipes, uploads and what the jobs open.
FD_SHARE = 0.25
#: Bounds on the connection limit derived from the descriptor limit.
MIN_CONNECTIONS, MAX_CONNECTIONS = 8, 4096
#: A recurring refusal (at the limit, out of descriptors, slow clients cut off) is logged at most
#: this often, with a count of the ones left out.
REFUSAL_LOG_INTERVAL = 60.0


def connection_limit_for_fds() -> int:
    """``FD_SHARE`` of the soft RLIMIT_NOFILE, within [MIN_CONNECTIONS, MAX_CONNECTIONS]."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, int(soft * FD_SHARE)))


@dataclass(frozen=True)
class HttpLimits:
    """The bounds one server applies; every time is in seconds. ``max_connections`` None: derived
    from the file descriptor limit when the server starts (:func:`connection_limit_for_fds`)."""

    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    body_min_rate: float = BODY_MIN_RATE
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT
    send_timeout: float = SEND_TIMEOUT
    max_connections: int | None = None
    log_interval: float = REFUSAL_LOG_INTERVAL

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "body_min_rate", "keep_alive_timeout", "send_timeout",
                     "log_interval"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number over 0, got {value!r}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections!r}")

    @property
    def sweep_interval(self) -> float:
        """How often deadlines are checked: often enough that none is overrun by more than a quarter."""
        shortest = min(self.header_timeout, self.body_timeout, self.send_timeout)
        return min(1.0, max(0.02, shortest / 4))


class RateLimitedLog:
    """Logs each kind of recurring event at most once per ``interval``, with the count of those
    left out since, so a flood of refusals becomes a line a minute."""

    def __init__(self, logger: logging.Logger, interval: float, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def __call__(self, kind: str, level: int, message: str, *args: Any) -> None:
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        if left_out:
            message += f" ({left_out} more like it in the last {now - last:.0f} s)"
        self.logger.log(level, message, *args)
