"""The executor's side of the KV proxy: one persistent TCP connection, one request at a time.

Every failure (refused, timed out, closed, a wrong secret, an error reply) raises
:class:`ProxyUnavailable`, so the executor can fall back to doing the fan-out itself instead of
hanging. A connection the proxy may have closed for idleness is replaced before a request goes out.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Sequence
from typing import Any

from wukong.invocation import JobSettings
from wukong.proxy.protocol import (
    HEADER, SERVER_HELLO, ProtocolError, Session, client_hello, derive_key, read_server_hello,
)
from wukong.schedule import DependentRef

CONNECT_TIMEOUT = 2.0
#: Share of the proxy's idle timeout (which its hello announces) a connection may sit unused and
#: still be reused. Well below 1, so the proxy's idle close cannot race a request we are sending:
#: a request lost that way would only be done again by the executor, but slower.
REUSE_FRACTION = 0.5


class ProxyUnavailable(Exception):
    """The proxy could not take the request; the caller does the work itself."""


class ProxyClient:
    def __init__(self, address: tuple[str, int], secret: str, timeout: float = 30.0):
        self.address = tuple(address)
        self.key = derive_key(secret)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._session: Session | None = None
        self._reuse_window = 0.0  # seconds a connection may sit unused, from the proxy's hello
        self._reuse_until = 0.0  # time.monotonic() after which the connection is not reused

    def hand_off(self, job: JobSettings, upstream: int, value: bytes | None, fan_in: Sequence[DependentRef],
                 ready: Sequence[int], become: int | None, claimer: int, retry: bool,
                 payloads: dict[int, bytes]) -> dict[str, Any]:
        """Ask the proxy to store ``value`` (if given) as ``upstream``'s, bump ``fan_in`` and invoke the
        ready and claimed dependents except the one this executor continues with.

        Returns {"local": [task ids to run here], "invoked": n, "payload_bytes": b}.
        """
        return self.request({
            "kind": "fanout", "job": job, "upstream": upstream, "value": value, "fan_in": tuple(fan_in),
            "ready": tuple(ready), "become": become, "claimer": claimer, "retry": retry, "payloads": payloads,
        })

    def stats(self) -> dict[str, int]:
        return self.request({"kind": "stats"})["stats"]

    def request(self, message: dict) -> dict:
        where = f"KV proxy {self.address[0]}:{self.address[1]}"
        try:
            sock, session = self._connect()
            sock.sendall(session.seal(message))
            length, digest = session.open_header(self._read(sock, HEADER.size))
            reply = session.open_body(digest, self._read(sock, length))
        except (OSError, EOFError, ProtocolError) as exc:
            self.close()  # the next request starts on a fresh connection
            raise ProxyUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
        self._reuse_until = time.monotonic() + self._reuse_window
        if "error" in reply:
            raise ProxyUnavailable(f"{where} failed: {reply['error']}")
        return reply

    def _connect(self) -> tuple[socket.socket, Session]:
        if self._sock is not None and (time.monotonic() >= self._reuse_until or _closed_by_peer(self._sock)):
            self.close()  # the proxy closes idle connections: start afresh rather than lose a request on it
        if self._sock is None:
            sock = socket.create_connection(self.address, timeout=CONNECT_TIMEOUT)
            try:
                sock.settimeout(self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nonce, hello = client_hello()
                sock.sendall(hello)
                # the proxy proves it holds the key (and a wrong secret is named) before any request goes out
                try:
                    answer = self._read(sock, SERVER_HELLO.size)
                except EOFError:
                    raise EOFError("the proxy closed the connection during the handshake (a proxy of an "
                                   "older Wukong release, or it is stopping)") from None
                session, idle_timeout = read_server_hello(self.key, nonce, answer)
            except BaseException:
                sock.close()
                raise
            self._sock, self._session = sock, session
            self._reuse_window = idle_timeout * REUSE_FRACTION
            self._reuse_until = time.monotonic() + self._reuse_window
        return self._sock, self._session

    @staticmethod
    def _read(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:  # the proxy closes without a word on a bad frame
                raise EOFError("connection closed by the proxy (it stopped, or refused the frame: see its log)")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        sock, self._sock, self._session = self._sock, None, None
        if sock is not None:
            sock.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the proxy has closed ``sock`` (or sent something unasked): between requests nothing
    may be readable, so anything that is, EOF included, means the connection is not to be reused."""
    with selectors.DefaultSelector() as selector:  # not select.select: worker processes may hold fds >= 1024
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout=0))
