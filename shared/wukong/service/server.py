"""``wukong serve`` as a library: the job API of a LocalCluster, served by uvicorn on a socket it
binds itself (port 0 picks a free one), in the foreground or on a background thread (tests).
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from typing import Any

import uvicorn

from wukong.config import WukongConfig
from wukong.service.app import create_app
from wukong.service.local import LocalJobService
from wukong.service.uploads import UploadStore

#: Give up waiting for uvicorn to come up after this long (it takes well under a second).
START_TIMEOUT = 30.0


def new_token() -> str:
    return secrets.token_urlsafe(32)


class LocalApiServer:
    """The job API on ``cluster``. ``start()`` serves on a thread; ``run()`` blocks (Ctrl-C stops it)."""

    def __init__(self, cluster: Any, token: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 config: WukongConfig | None = None):
        self.token = token or new_token()
        self.config = config or cluster.config
        self.service = LocalJobService(cluster, self.config)
        self.uploads = UploadStore(self.config.upload_dir, self.config.max_upload_bytes, self.config.upload_ttl)
        self.app = create_app(self.service, self.token, self.config, self.uploads)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP,
        # and without it each response on a keep-alive connection waited ~40 ms for delayed ACKs
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        # log_config=None: leave the process's logging alone; no access log (it would list job ids only,
        # never tokens, but the CLI's stderr is for progress and errors)
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                                     timeout_graceful_shutdown=5))
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

    def close(self) -> None:
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
