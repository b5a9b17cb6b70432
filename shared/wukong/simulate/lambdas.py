"""AWS Lambda capacity as the simulator sees it (a concurrency limit, a scaling-rate token bucket,
warm environments that are reused, a FIFO of waiting asynchronous invokes), and the heap-based
event loop both simulators run on.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from wukong.simulate.model import SimModel


@dataclass
class Start:
    """An invocation that got an execution environment: its handler runs from ``at``."""

    payload: Any
    at: float
    cold: bool


@dataclass
class LambdaPool:
    """Calls must come in non-decreasing time order (the simulator's event loop guarantees it)."""

    model: SimModel
    busy: int = 0
    idle: int = 0
    cold_starts: int = 0
    warm_starts: int = 0
    peak_busy: int = 0
    _tokens: float = field(default=0.0, init=False)
    _refilled_at: float = field(default=0.0, init=False)
    _waiting: deque = field(default_factory=deque, init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.model.scaling_burst) if self.model.scaling_burst is not None else 0.0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def request(self, now: float, payload: Any) -> Start | None:
        """An asynchronous invoke at ``now``; None when it must wait for capacity (see :meth:`drain`)."""
        self._waiting.append((now, payload))
        started = self.drain(now)
        return started[0] if started else None

    def release(self, now: float) -> list[Start]:
        """An invocation ended: its environment turns idle (warm); queued invokes may start."""
        self.busy -= 1
        self.idle += 1
        return self.drain(now)

    def drain(self, now: float) -> list[Start]:
        """Start as many waiting invokes as capacity allows at ``now``."""
        out = []
        while self._waiting and self._can_start(now):
            requested, payload = self._waiting.popleft()
            out.append(self._start(now, requested, payload))
        return out

    def next_token_at(self, now: float) -> float | None:
        """When waiting invokes can next get a new environment, if the scaling rate is what holds them."""
        if not self._waiting or self.idle or not self._under_limit() or self.model.scaling_rate is None:
            return None
        self._refill(now)
        return now + max(0.0, 1.0 - self._tokens) / self.model.scaling_rate

    def _under_limit(self) -> bool:
        limit = self.model.concurrency_limit
        return limit is None or self.busy < limit

    def _refill(self, now: float) -> None:
        m = self.model
        if m.scaling_rate is not None and m.scaling_burst is not None:
            self._tokens = min(float(m.scaling_burst), self._tokens + (now - self._refilled_at) * m.scaling_rate)
        self._refilled_at = now

    def _can_start(self, now: float) -> bool:
        if not self._under_limit():
            return False
        if self.idle or self.model.scaling_rate is None or self.model.scaling_burst is None:
            return True
        self._refill(now)
        return self._tokens >= 1.0 - 1e-9

    def _start(self, now: float, requested: float, payload: Any) -> Start:
        m = self.model
        cold = not self.idle
        if cold:
            if m.scaling_rate is not None and m.scaling_burst is not None:
                self._tokens -= 1.0
            self.cold_starts += 1
        else:
            self.idle -= 1
            self.warm_starts += 1
        self.busy += 1
        self.peak_busy = max(self.peak_busy, self.busy)
        # a queued invoke has already waited out (part of) the invoke latency
        at = max(requested + m.invoke_latency, now) + (m.cold_start if cold else 0.0)
        return Start(payload, at, cold)


class EventLoop:
    """The heap-based event loop both simulators share, with the Lambda pool wired in.

    Events are ``(time, seq, kind, a, b)``; ties in time break on push order. Subclasses map
    ``kind`` to handlers ``fn(at, a, b)`` and set ``START``/``TOKEN`` to their kinds for an
    invocation that got an environment and for a scaling-rate wake-up.
    """

    START: int
    TOKEN: int

    def __init__(self, model: SimModel):
        self.pool = LambdaPool(model)
        self.events: list = []
        self.seq = 0
        self.token_pending = False

    def push(self, at: float, kind: int, a: Any = None, b: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, a, b))

    def loop(self, handlers: dict) -> None:
        events = self.events
        while events:
            at, _, kind, a, b = heapq.heappop(events)
            handlers[kind](at, a, b)

    def invoke(self, at: float, payload: Any) -> None:
        started = self.pool.request(at, payload)
        if started is not None:
            self.push(started.at, self.START, started)
        self._watch_tokens(at)

    def release(self, at: float) -> None:
        for started in self.pool.release(at):
            self.push(started.at, self.START, started)
        self._watch_tokens(at)

    def on_token(self, at: float, _a: Any = None, _b: Any = None) -> None:
        self.token_pending = False
        for started in self.pool.drain(at):
            self.push(started.at, self.START, started)
        self._watch_tokens(at)

    def _watch_tokens(self, at: float) -> None:
        # one pending wake-up at a time: it re-arms itself while invokes still wait
        if self.token_pending:
            return
        nxt = self.pool.next_token_at(at)
        if nxt is not None:
            self.token_pending = True
            self.push(nxt, self.TOKEN)
