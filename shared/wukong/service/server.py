"""``wukong serve`` as a library: the job API of a LocalCluster, served by uvicorn on a socket it
binds itself (port 0 picks a free one), in the foreground or on a background thread (tests), with
the connection bounds of :mod:`wukong.service.limits`.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from typing import Any

import uvicorn

from wukong.config import WukongConfig
from wukong.service.app import create_app
from wukong.service.connections import LISTEN_BACKLOG, BoundedH11Protocol, ConnectionGate
from wukong.service.limits import HttpLimits
from wukong.service.local import LocalJobService
from wukong.service.uploads import UploadStore

#: Give up waiting for uvicorn to come up after this long (it takes well under a second).
START_TIMEOUT = 30.0


def new_token() -> str:
    return secrets.token_urlsafe(32)


class _BoundedServer(uvicorn.Server):
    """uvicorn's server, accepting through a :class:`ConnectionGate` instead of ``loop.create_server``.

    It relies on uvicorn's ``server_state``, ``lifespan`` and ``started``, as uvicorn's own startup does.
    """

    def __init__(self, config: uvicorn.Config, limits: HttpLimits):
        super().__init__(config)
        self.limits = limits
        self.gate: ConnectionGate | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        assert sockets is not None and len(sockets) == 1, "LocalApiServer passes its one listening socket"
        await self.lifespan.startup()  # "off": nothing to run
        config, loop = self.config, asyncio.get_running_loop()

        def make_protocol(gate: ConnectionGate) -> BoundedH11Protocol:
            return BoundedH11Protocol(config=config, server_state=self.server_state, app_state=self.lifespan.state,
                                      _loop=loop, gate=gate)

        self.servers = []  # uvicorn's shutdown closes these; the gate is closed below instead
        self.gate = ConnectionGate(loop, sockets[0], make_protocol, self.limits)
        self.gate.start()
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.gate is not None:
            self.gate.close()  # stop watching the listening socket before uvicorn closes it
        await super().shutdown(sockets=sockets)


class LocalApiServer:
    """The job API on ``cluster``. ``start()`` serves on a thread; ``run()`` blocks (Ctrl-C stops it).

    ``limits`` bounds slow and idle clients and the number of connections (defaults: the constants
    of :mod:`wukong.service.connections`).
    """

    def __init__(self, cluster: Any, token: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 config: WukongConfig | None = None, limits: HttpLimits | None = None):
        self.token = token or new_token()
        self.config = config or cluster.config
        self.service = LocalJobService(cluster, self.config)
        # by default inside the cluster's own temporary directory, so they go when it goes, even killed
        tmp = getattr(cluster, "tmp", None)
        upload_dir = self.config.upload_dir or (tmp.subdir("uploads") if tmp is not None else None)
        self.uploads = UploadStore(upload_dir, self.config.max_upload_bytes, self.config.upload_ttl)
        self.app = create_app(self.service, self.token, self.config, self.uploads)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP,
        # and without it each response on a keep-alive connection waited ~40 ms for delayed ACKs
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        # listening from here, not only once uvicorn runs: clients told the URL may connect at once
        self.sock.listen(LISTEN_BACKLOG)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.limits = limits or HttpLimits()
        # log_config=None: leave the process's logging alone; no access log (it would list job ids only,
        # never tokens, but the CLI's stderr is for progress and errors). h11, never httptools: the
        # read deadlines are written for h11's states; no WebSockets: the API has none
        self._server = _BoundedServer(
            uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", http="h11", ws="none",
                           timeout_keep_alive=self.limits.keep_alive_timeout, timeout_graceful_shutdown=5),
            self.limits)
        #: Why the server stopped on its own (its Redis died and could not be restarted), else None.
        self.fatal: str | None = None
        # a Redis that dies is restarted, and the jobs that lost their data fail; one that cannot be
        # restarted stops the server rather than leave it answering 503 for good
        self._unsubscribe = cluster.supervise_redis(self.service.redis_restarted, self._redis_lost)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "LocalApiServer":
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        name="wukong-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def run(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (uvicorn's graceful shutdown), then clean up."""
        try:
            self._server.run(sockets=[self.sock])
        finally:
            self.close()

    def _redis_lost(self, message: str) -> None:
        self.fatal = message
        self._server.should_exit = True  # uvicorn's main loop looks every 0.1 s

    def close(self) -> None:
        self._unsubscribe()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.service.close()
        self.uploads.close()
        self.sock.close()

    def __enter__(self) -> "LocalApiServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
