"""The KV proxy server: asyncio networking, storage steps through :class:`JobStorage`, parallel invokes.

Counter bumps run the very code executors run (``JobStorage.bump_counters``) in a thread pool,
so claim and retry semantics cannot drift; invokes go through the same ``Invoker`` backends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wukong import decisions
from wukong.executor import failure_event
from wukong.invocation import Invoker, split_batches
from wukong.proxy.protocol import HEADER, AuthError, decode, derive_key, encode, frame_length
from wukong.storage import JobStorage, RedisStores, StorageSpec

log = logging.getLogger(__name__)

#: Fewest payloads one invoker thread takes: below this, another thread costs more than it saves.
MIN_INVOKE_BATCH = 50


class ProxyServer:
    """Serves hand-offs signed with ``secret``; invokes executors through ``invoker``.

    Storage is reached at the endpoints each job's settings name (so the shard ring is the one its
    executors use), with the proxy's own password and TLS setting.
    """

    def __init__(self, secret: str, invoker: Invoker, n_invokers: int = 16, password: str | None = None,
                 tls: bool = False):
        self.key = derive_key(secret)
        self.invoker = invoker
        self.n_invokers = max(1, n_invokers)
        self.password = password if password is not None else secret
        self.tls = tls
        self.stats: Counter = Counter()
        self._stores: dict[Any, RedisStores] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.n_invokers + 2, thread_name_prefix="wukong-proxy")
        self._background: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> asyncio.Server:
        self._server = await asyncio.start_server(self._serve, host, port)
        return self._server

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._connections):  # executors keep connections open; theirs reconnect or fall back
            writer.close()
        if self._background:  # invokes already promised to executors still go out
            await asyncio.gather(*self._background, return_exceptions=True)
        self._pool.shutdown(wait=True)
        for stores in self._stores.values():
            stores.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self._connections.add(writer)
        try:
            while True:
                try:
                    header = await reader.readexactly(HEADER.size)
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                    return  # the peer left, or the server is stopping
                try:
                    message = decode(self.key, await reader.readexactly(frame_length(header)))
                except AuthError as exc:  # close without a reply: nothing unpickled, nothing revealed
                    self.stats["auth_failures"] += 1
                    log.warning("refused a request from %s: %s", peer, exc)
                    return
                except asyncio.IncompleteReadError:
                    return
                self.stats["requests"] += 1
                writer.write(encode(self.key, await self._dispatch(message)))
                await writer.drain()
        finally:
            self._connections.discard(writer)
            writer.close()

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
        event = failure_event("<KV proxy>", RuntimeError(f"the KV proxy could not invoke executors: {errors[0]}"),
                              internal=True)
        await loop.run_in_executor(self._pool, storage.end_job, "failed", event)  # fail the job, never hang it

    def _stores_for(self, spec: StorageSpec) -> RedisStores:
        ident = (spec.mds, spec.kv, spec.tls)
        if ident not in self._stores:
            own = dataclasses.replace(spec, password=self.password, tls=self.tls or spec.tls)
            self._stores[ident] = RedisStores(own)  # pooled: used from several threads
        return self._stores[ident]
