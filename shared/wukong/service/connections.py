"""Connections ``wukong serve`` holds, within :mod:`wukong.service.limits`: slow or idle clients
cannot keep the server's sockets and file descriptors.

:class:`ConnectionGate` accepts connections itself (instead of asyncio's ``create_server``): it
stops accepting at ``max_connections`` and on running out of file descriptors, so the kernel's
listen backlog holds the rest, and it says so in the log once a minute, not once per attempt.
:class:`BoundedH11Protocol` is uvicorn's h11 protocol plus the read deadlines uvicorn lacks.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import socket
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from wukong.service.limits import HttpLimits, RateLimitedLog, connection_limit_for_fds

log = logging.getLogger(__name__)

#: Connections the kernel queues while the gate does not accept (capped by net.core.somaxconn).
LISTEN_BACKLOG = 2048
#: After running out of file descriptors, try accepting again this long later (asyncio's delay).
ACCEPT_RETRY_DELAY = 1.0
#: Connections taken off the listen queue per wake-up, so one busy listener cannot starve the loop.
ACCEPT_BATCH = 64
#: At the limit, connections idle (no request under way) at least this long are closed, oldest
#: first, to make room for waiting ones, as nginx drains its keep-alive connections: 260 silent
#: sockets would otherwise keep /health waiting behind them for 4 header timeouts. The grace spares
#: a client whose first request is still on its way.
DRAIN_GRACE = 1.0
#: Idle connections closed at once when at the limit (nginx's number).
DRAIN_BATCH = 32

_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _problem_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode() + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read deadlines. uvicorn bounds only the idle time after a
    response; a client that never finishes its headers or body kept its connection for good."""

    def __init__(self, *args: Any, gate: "ConnectionGate", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.limits = gate.limits
        self._headers_since: float | None = None  # when the request now awaiting its headers began
        self._partial_request = False  # some of those headers arrived
        self._body: _BodyProgress | None = None
        self._send_blocked_since: float | None = None
        #: Since when no request is under way (none begun, or the last one answered); None: one is.
        self.idle_since: float | None = None
        self.counted = False  # the gate counts it among its open connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # a connection that sends nothing is held to the header bound
        self._headers_since = self.idle_since = self.loop.time()
        self.gate.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        self.idle_since = None
        if self._headers_since is None and self.conn.their_state is h11.IDLE:
            self._headers_since = now  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        state = self.conn.their_state
        self._partial_request = state is h11.IDLE
        if state is not h11.IDLE:
            self._headers_since = None
        if state is h11.SEND_BODY:
            if self._body is None:
                self._body = _BodyProgress(now)
            self._body.arrived(now, len(data))
        else:
            self._body = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
            self._headers_since = None  # idle between requests: uvicorn's keep-alive timer runs now
            self.idle_since = self.loop.time()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_blocked_since is None:
            self._send_blocked_since = self.loop.time()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._send_blocked_since = None

    def overdue(self, now: float) -> tuple[str, str] | None:
        """(which deadline, what the client did) if this connection has run past a deadline, else None."""
        limits, state = self.limits, self.conn.their_state
        if state is h11.IDLE and self._headers_since is not None:
            if now - self._headers_since > limits.header_timeout:
                return "header", f"sent no complete request headers within header_timeout={limits.header_timeout:g} s"
        elif state is h11.SEND_BODY and self._body is not None:
            missed = self._body.overdue(now, self.flow.read_paused, limits)
            if missed is not None:
                return missed
        if self._send_blocked_since is not None and now - self._send_blocked_since > limits.send_timeout:
            return "send", f"read none of its response for send_timeout={limits.send_timeout:g} s"
        return None

    def cut_off(self, reason: str) -> None:
        if self.transport.is_closing():
            return
        if self._send_blocked_since is not None:
            self.transport.abort()  # close() would wait for the client to read what is buffered
            return
        if self.conn.their_state is h11.IDLE:
            answer = self._partial_request  # a connection that never sent a byte just closes
        else:  # a body too slow: unless the route has begun answering, say why; the route sees a disconnect
            answer = self.cycle is not None and not self.cycle.response_started
        if answer:
            self.transport.write(_problem_response(408, "Request Timeout", f"the client {reason}"))
        self.transport.close()


class _BodyProgress:
    """How a request body is arriving: its start, its latest bytes, its total, and the time the
    server itself stopped reading (the route had not taken what came), which does not count."""

    def __init__(self, now: float):
        self.began = self.last = self.checked = now
        self.paused = 0.0
        self.received = 0

    def arrived(self, now: float, n: int) -> None:
        self.last = now
        self.received += n

    def overdue(self, now: float, reading_paused: bool, limits: HttpLimits) -> tuple[str, str] | None:
        if reading_paused:
            self.paused += now - self.checked
            self.last = now
        self.checked = now
        if now - self.last > limits.body_timeout:
            return "body", f"sent no request body bytes for body_timeout={limits.body_timeout:g} s"
        allowed = limits.body_timeout + self.received / limits.body_min_rate
        if now - self.began - self.paused > allowed:
            return "body-rate", f"sent its request body slower than body_min_rate={limits.body_min_rate:g} bytes/s"
        return None


class ConnectionGate:
    """Accepts connections on ``sock`` while fewer than ``max_connections`` are open, and cuts
    off those past a deadline. At the limit, or out of file descriptors, it stops accepting and the
    kernel queues new connections (asyncio's own accept loop logged a traceback per failed accept,
    ~20,000 a second at ``ulimit -n 256``, and kept the loop too busy to answer /health)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 make_protocol: Callable[["ConnectionGate"], BoundedH11Protocol], limits: HttpLimits):
        self.loop = loop
        self.sock = sock
        self.make_protocol = make_protocol
        self.limits = limits
        self.max_connections = limits.max_connections or connection_limit_for_fds()
        self.log = RateLimitedLog(log, limits.log_interval)
        self.open: set[BoundedH11Protocol] = set()
        self._starting = 0  # accepted, transport not made yet
        self._reading = False
        self._retry: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def start(self) -> None:
        self.sock.setblocking(False)
        self._resume()
        self._sweeper = self.loop.call_later(self.limits.sweep_interval, self._sweep)

    def close(self) -> None:
        """Stop accepting (before the listening socket closes) and stop checking deadlines."""
        self._closed = True
        self._pause()
        for handle in (self._retry, self._sweeper):
            if handle is not None:
                handle.cancel()

    @property
    def count(self) -> int:
        return len(self.open) + self._starting

    # --- accepting -------------------------------------------------------------------------------
    def _resume(self) -> None:
        if not self._reading and not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.count >= self.max_connections:
                self._pause()  # closed() resumes, and so does the next sweep
                self._drain_idle()
                self.log("limit", logging.WARNING,
                         "%d connections open, the limit (max_connections): new ones wait in the listen queue, "
                         "and connections idle over %g s are closed to make room", self.count, DRAIN_GRACE)
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._back_off(exc)
                return
            conn.setblocking(False)
            # asyncio sets it only when the socket says IPPROTO_TCP; set it whatever the listener said,
            # or each response on a keep-alive connection waits ~40 ms for a delayed ACK
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._starting += 1
            self.loop.create_task(self._serve(conn))

    def _back_off(self, exc: OSError) -> None:
        self._pause()
        if self._retry is None:
            self._retry = self.loop.call_later(ACCEPT_RETRY_DELAY, self._retry_accept)
        if exc.errno in _OUT_OF_FDS:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            self.log("fds", logging.WARNING,
                     "cannot accept connections: %s (RLIMIT_NOFILE %s, %d HTTP connections open); new ones wait "
                     "in the listen queue, retrying every %g s", exc.strerror, soft, self.count, ACCEPT_RETRY_DELAY)
        else:
            self.log(f"accept-{exc.errno}", logging.WARNING, "accept() failed: %s; retrying in %g s", exc,
                     ACCEPT_RETRY_DELAY)

    def _retry_accept(self) -> None:
        self._retry = None
        self._resume()

    async def _serve(self, conn: socket.socket) -> None:
        made: list[BoundedH11Protocol] = []

        def make() -> BoundedH11Protocol:
            made.append(self.make_protocol(self))
            return made[0]

        try:
            await self.loop.connect_accepted_socket(make, conn)
        except Exception as exc:  # the client left before its transport existed, or out of memory
            conn.close()
            log.debug("could not set up an accepted connection: %s", exc)
        finally:
            if not (made and made[0].counted):  # never reached opened(): its slot is free again
                self._starting -= 1
                self._maybe_resume()

    def _drain_idle(self) -> None:
        """Close up to DRAIN_BATCH connections idle for DRAIN_GRACE, oldest first."""
        now = self.loop.time()
        idle = sorted((p for p in self.open if p.idle_since is not None and now - p.idle_since >= DRAIN_GRACE
                       and not p.transport.is_closing()), key=lambda p: p.idle_since)
        for protocol in idle[:DRAIN_BATCH]:
            protocol.transport.close()

    # --- the protocols report ----------------------------------------------------------------------
    def opened(self, protocol: BoundedH11Protocol) -> None:
        self._starting -= 1  # counted from now on as open, until closed()
        protocol.counted = True
        self.open.add(protocol)

    def closed(self, protocol: BoundedH11Protocol) -> None:
        self.open.discard(protocol)
        self._maybe_resume()

    def _maybe_resume(self, at_limit_too: bool = False) -> None:
        if self._retry is None and (at_limit_too or self.count < self.max_connections):
            self._resume()

    # --- deadlines -------------------------------------------------------------------------------
    def _sweep(self) -> None:
        now = self.loop.time()
        try:
            for protocol in list(self.open):
                try:
                    missed = protocol.overdue(now)
                    if missed is not None:
                        kind, reason = missed
                        self.log(f"cut-{kind}", logging.INFO, "closed a connection from %s: the client %s",
                                 _peer(protocol), reason)
                        protocol.cut_off(reason)
                except Exception:  # a bug here must not end every deadline: drop this connection, once
                    log.exception("checking the deadlines of a connection from %s failed", _peer(protocol))
                    protocol.transport.abort()
        finally:
            if not self._closed:
                # at the limit, look at the listen queue again: idle connections may be drainable by now
                self._maybe_resume(at_limit_too=True)
                self._sweeper = self.loop.call_later(self.limits.sweep_interval, self._sweep)


def _peer(protocol: H11Protocol) -> str:
    client = protocol.client
    return f"{client[0]}:{client[1]}" if client else "?"
