"""The KV proxy server: asyncio networking, storage steps through :class:`JobStorage`, parallel invokes.

Counter bumps run the very code executors run (``JobStorage.bump_counters``) in a thread pool,
so claim and retry semantics cannot drift; invokes go through the same ``Invoker`` backends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wukong import decisions
from wukong.job_events import JobEvent
from wukong.invocation import Invoker, split_batches
from wukong.proxy.protocol import (
    CLIENT_HELLO, HEADER, ProtocolError, Session, derive_key, read_client_hello, server_hello,
)
from wukong.storage import JobStorage, RedisStores, StorageSpec

log = logging.getLogger(__name__)

#: Fewest payloads one invoker thread takes: below this, another thread costs more than it saves.
MIN_INVOKE_BATCH = 50
#: Seconds a connection may go without a byte from its peer (between requests, or stalled inside
#: one) before the proxy closes it. Executors keep a connection across invocations, and a frozen or
#: killed Lambda never closes its own; ProxyClient reconnects when the proxy has closed an idle one.
IDLE_TIMEOUT = 20.0
LISTEN_BACKLOG = 512


class _PeerLeft(Exception):
    """The peer closed the connection; ``after_hello`` when it did so right after the handshake."""

    def __init__(self, after_hello: bool):
        super().__init__()
        self.after_hello = after_hello


class ProxyServer:
    """Serves hand-offs signed with ``secret``; invokes executors through ``invoker``.

    Storage is reached at the endpoints each job's settings name (so the shard ring is the one its
    executors use), with the proxy's own password and TLS setting.
    """

    def __init__(self, secret: str, invoker: Invoker, n_invokers: int = 16, password: str | None = None,
                 tls: bool = False, idle_timeout: float = IDLE_TIMEOUT):
        if not 0 < idle_timeout <= 3600:
            raise ValueError(f"idle_timeout must be over 0 and at most 3600 s, not {idle_timeout}")
        self.key = derive_key(secret)
        self.idle_timeout = idle_timeout
        self.invoker = invoker
        self.n_invokers = max(1, n_invokers)
        self.password = password if password is not None else secret
        self.tls = tls
        self.stats: Counter = Counter()
        self._stores: dict[Any, RedisStores] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.n_invokers + 2, thread_name_prefix="wukong-proxy")
        self._background: set[asyncio.Task] = set()
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task | None = None
        self._connections: set[asyncio.Task] = set()
        self._waiting: set[asyncio.Task] = set()  # connections waiting for a hello or a request
        self._closing = False

    async def start(self, host: str, port: int) -> tuple:
        """Listen on ``host``:``port``; returns the address bound."""
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        listener = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        self._accepting = asyncio.create_task(self._accept(listener))
        return listener.getsockname()

    async def close(self) -> None:
        self._closing = True
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        # connections waiting for a request are dropped (executors reconnect or fall back); a request
        # being served gets its reply first, so no hand-off is both done here and redone by its executor
        for task in list(self._waiting):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._background:  # invokes already promised to executors still go out
            await asyncio.gather(*self._background, return_exceptions=True)
        self._pool.shutdown(wait=True)
        for stores in self._stores.values():
            stores.close()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of file descriptors: keep serving the connections we have
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self._serve(sock, peer))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, sock: socket.socket, peer: Any) -> None:
        """One connection: the handshake, then requests in turn until the peer leaves, idles or fails."""
        served = 0
        with sock:
            if self._closing:  # accepted as close() began: nothing to serve it with
                return
            try:
                session = await self._handshake(sock)
                while not self._closing:
                    header = await self._await_peer(sock, HEADER.size, after_hello=True)
                    length, digest = session.open_header(header)  # before a byte of the body is read
                    message = session.open_body(digest, await self._recv(sock, length))
                    self.stats["requests"] += 1
                    served += 1
                    await self._send(sock, session.seal(await self._dispatch(message)))
            except ProtocolError as exc:  # close without a reply: nothing unpickled, nothing revealed
                self.stats["auth_failures"] += 1
                log.warning("refused %s: %s", peer, exc)
            except TimeoutError:
                self.stats["idle_closed"] += 1
                log.debug("closed %s: nothing received for %s s", peer, self.idle_timeout)
            except _PeerLeft as exc:
                if exc.after_hello and not served:
                    # what a client with another secret does once it has checked our hello
                    self.stats["handshakes_abandoned"] += 1
                    log.warning("%s left after the handshake without a request: a client holding a different "
                                "secret does that (executors and the proxy must share the Redis password)", peer)
            except ConnectionError:
                pass  # the peer reset the connection

    async def _handshake(self, sock: socket.socket) -> Session:
        client_nonce = read_client_hello(await self._await_peer(sock, CLIENT_HELLO.size))
        session, hello = server_hello(self.key, client_nonce, self.idle_timeout)
        await self._send(sock, hello)
        return session

    async def _send(self, sock: socket.socket, data: bytes) -> None:
        # hellos and replies are small; a peer that stops reading must not pin the connection forever
        async with asyncio.timeout(self.idle_timeout):
            await asyncio.get_running_loop().sock_sendall(sock, data)

    async def _await_peer(self, sock: socket.socket, n: int, after_hello: bool = False) -> bytearray:
        """A hello or a header: the only waits close() cuts short, since no request is half-served in them."""
        task = asyncio.current_task()
        self._waiting.add(task)
        try:
            return await self._recv(sock, n, after_hello)
        finally:
            self._waiting.discard(task)

    async def _recv(self, sock: socket.socket, n: int, after_hello: bool = False) -> bytearray:
        """Exactly ``n`` bytes; TimeoutError when none arrive for ``idle_timeout``, _PeerLeft at EOF.

        Reads go straight from the socket into a buffer of the size asked for, so nothing beyond
        what the protocol has authenticated so far is ever taken from the kernel.
        """
        loop = asyncio.get_running_loop()
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            async with asyncio.timeout(self.idle_timeout):
                k = await loop.sock_recv_into(sock, view[got:])
            if k == 0:
                raise _PeerLeft(after_hello=after_hello and got == 0)
            got += k
        return buf

    async def _dispatch(self, message: dict) -> dict:
        kind = message.get("kind")
        if kind == "stats":
            return {"stats": dict(self.stats)}
        if kind != "fanout":
            return {"error": f"unknown request kind {kind!r}"}
        try:
            return await self._fanout(message)
        except Exception as exc:  # the executor falls back and does the fan-out itself
            self.stats["errors"] += 1
            log.warning("hand-off of task id %s failed", message.get("upstream"), exc_info=True)
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def _fanout(self, m: dict) -> dict:
        job = m["job"]
        storage = JobStorage.for_job(self._stores_for(job.storage), job)
        value = None if m["value"] is None else (m["upstream"], m["value"])
        loop = asyncio.get_running_loop()
        claimed = await loop.run_in_executor(
            self._pool, lambda: storage.bump_counters(m["fan_in"], value, claimer=m["claimer"], retry=m["retry"]))
        local, remote = decisions.split_ready(list(m["ready"]) + claimed, m["become"], clustered=False)
        payloads = [m["payloads"][tid] for tid in remote]
        if payloads:  # counted before they go out, as executors do (see Executor._send)
            await loop.run_in_executor(self._pool, lambda: storage.flush_counts(
                {"invoked": len(payloads), "proxy_invoked": len(payloads)}))
        # reply once the state is durable; invoking is the slow part and the executor need not wait
        task = asyncio.create_task(self._invoke(storage, payloads))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self.stats["fanouts"] += 1
        self.stats["claimed"] += len(claimed)
        self.stats["invoked"] += len(payloads)
        return {"local": local, "invoked": len(payloads), "payload_bytes": sum(map(len, payloads))}

    async def _invoke(self, storage: JobStorage, payloads: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        batches = split_batches(payloads, self.n_invokers, MIN_INVOKE_BATCH)
        results = await asyncio.gather(*(loop.run_in_executor(self._pool, self.invoker.invoke, b) for b in batches),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return
        self.stats["invoke_failures"] += 1
        log.error("invokes for job %s failed", storage.job_id, exc_info=errors[0])
        event = JobEvent.task_failed("<KV proxy>", RuntimeError(f"the KV proxy could not invoke executors: {errors[0]}"),
                                     internal=True)
        await loop.run_in_executor(self._pool, storage.end_job, event)  # fail the job, never hang it

    def _stores_for(self, spec: StorageSpec) -> RedisStores:
        ident = (spec.mds, spec.kv, spec.tls)
        if ident not in self._stores:
            own = dataclasses.replace(spec, password=self.password, tls=self.tls or spec.tls)
            self._stores[ident] = RedisStores(own)  # pooled: used from several threads
        return self._stores[ident]
