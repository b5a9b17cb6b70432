"""The executor's side of the KV proxy: one persistent TCP connection, one request at a time.

Every failure (refused, timed out, closed, an error reply) raises :class:`ProxyUnavailable`, so
the executor can fall back to doing the fan-out itself instead of hanging.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from wukong.invocation import JobSettings
from wukong.proxy.protocol import HEADER, AuthError, decode, derive_key, encode, frame_length
from wukong.schedule import DependentRef

CONNECT_TIMEOUT = 2.0


class ProxyUnavailable(Exception):
    """The proxy could not take the request; the caller does the work itself."""


class ProxyClient:
    def __init__(self, address: tuple[str, int], secret: str, timeout: float = 30.0):
        self.address = tuple(address)
        self.key = derive_key(secret)
        self.timeout = timeout
        self._sock: socket.socket | None = None

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
        try:
            sock = self._connect()
            sock.sendall(encode(self.key, message))
            reply = decode(self.key, self._read(sock, frame_length(self._read(sock, HEADER.size))))
        except (OSError, EOFError, AuthError) as exc:
            self.close()  # the next request starts on a fresh connection
            raise ProxyUnavailable(f"KV proxy {self.address[0]}:{self.address[1]}: {type(exc).__name__}: {exc}") from exc
        if "error" in reply:
            raise ProxyUnavailable(f"KV proxy {self.address[0]}:{self.address[1]} failed: {reply['error']}")
        return reply

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection(self.address, timeout=CONNECT_TIMEOUT)
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        return self._sock

    @staticmethod
    def _read(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:  # the proxy closes without a word on a bad MAC
                raise EOFError("connection closed by the proxy (wrong secret, or it stopped)")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
