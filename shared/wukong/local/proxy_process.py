"""The local KV proxy: ``python -m wukong.proxy`` (or the script ``local_proxy_path`` names) on a free
loopback port, invoking through the cluster's worker queue, and stopped with the cluster.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

from wukong.errors import WukongError
from wukong.local.lifetime import die_with_owner
from wukong.local.redis_server import free_port
from wukong.proxy.client import ProxyClient, ProxyUnavailable
from wukong.storage import StorageSpec

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0


class ProxyProcess:
    """One proxy process owned by a LocalCluster. ``script`` replaces ``-m wukong.proxy`` and is given
    the same arguments and stdin (see ``python -m wukong.proxy --help``)."""

    def __init__(self, spec: StorageSpec, queue_key: str, n_invokers: int, script: str | None = None,
                 idle_timeout: float | None = None):
        if not spec.password:
            raise WukongError("use_local_proxy needs a Redis password: the proxy's key is derived from it")
        self.spec = spec
        self.queue_key = queue_key
        self.n_invokers = n_invokers
        if script and not os.path.isfile(script):
            # the seed names its EC2 host's proxy.py: seed scripts must still run, with ours
            log.warning("local_proxy_path %r does not exist; running the built-in proxy (python -m wukong.proxy)",
                        script)
            script = None
        self.script = script
        self.idle_timeout = idle_timeout  # None: the proxy's default (or WUKONG_PROXY_IDLE_TIMEOUT)
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.port is not None, "proxy not started"
        return ("127.0.0.1", self.port)

    def start(self, attempts: int = 3) -> "ProxyProcess":
        for _ in range(attempts):  # another process may take the free port before the proxy binds it
            self.port = free_port()
            entry = [self.script] if self.script else ["-m", "wukong.proxy"]
            extra = [] if self.idle_timeout is None else ["--idle-timeout", str(self.idle_timeout)]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))
            self._proc = subprocess.Popen(
                [sys.executable, *entry, "--host", "127.0.0.1", "--port", str(self.port),
                 "--queue-key", self.queue_key, "--invokers", str(self.n_invokers), "--config-stdin", *extra],
                stdin=subprocess.PIPE, env=env, start_new_session=True, preexec_fn=die_with_owner(),
            )
            # the password goes through stdin, never argv or the environment
            self._proc.stdin.write(json.dumps({
                "redis_endpoints": [list(self.spec.mds)],  # where the queue is; jobs name their own stores
                "redis_password": self.spec.password, "redis_tls": self.spec.tls,
            }).encode())
            self._proc.stdin.close()
            if self._wait_ready():
                return self
            self.stop()
        raise WukongError(f"the local KV proxy did not start (tried {attempts} ports)")

    def _wait_ready(self) -> bool:
        client = ProxyClient(self.address, self.spec.password, timeout=2.0)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline and self._proc.poll() is None:
                try:
                    client.stats()
                    return True
                except ProxyUnavailable:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def stats(self) -> dict[str, int]:
        """The proxy's counters (requests, fanouts, invoked, claimed, auth_failures, ...)."""
        client = ProxyClient(self.address, self.spec.password)
        try:
            return client.stats()
        finally:
            client.close()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: the proxy finishes the invokes it already promised
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
