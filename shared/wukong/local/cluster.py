"""``LocalCluster``: the embedded default runtime, on one machine, with no cloud account.

It finds or starts Redis (the MDS and KV shards), starts the warm worker processes that stand
in for Lambda, and hands :class:`~wukong.client.Client` the stores and the invoker; with
``use_local_proxy`` it also runs the KV proxy. The seed's keyword arguments are accepted; those
with no meaning on one machine are documented in ``WukongConfig`` and ignored here.
"""

from __future__ import annotations

import atexit
import os
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import redis

from wukong.config import WukongConfig, make_config
from wukong.errors import RedisUnavailableError
from wukong.invocation import ParallelInvoker
from wukong.local.lifetime import OwnedTempDir, SigtermAsExit
from wukong.local.proxy_process import ProxyProcess
from wukong.scratch import ScratchDirs
from wukong.local.redis_server import RedisServerProcess, find_redis_binary
from wukong.local.supervisor import RedisSupervisor
from wukong.local.workers import RedisQueueInvoker, WorkerPool
from wukong.storage import RedisStores, StorageSpec, spec_from_config


class LocalCluster:
    """Redis plus a pool of local executor processes. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        host: str | None = None,
        proxy_address: str | None = None,
        proxy_port: int | None = None,
        num_lambda_invokers: int | None = None,
        chunk_large_tasks: bool | None = None,
        n_workers: int | None = None,
        use_local_proxy: bool | None = None,
        local_proxy_path: str | None = None,
        redis_endpoints: list[tuple[str, int]] | None = None,
        use_fargate: bool | None = None,
        max_task_fanout: int | None = None,
        big_task_threshold: int | None = None,
        num_chunks_for_large_tasks: int | None = None,
        executors_use_task_queue: bool | None = None,
        aws_region: str | None = None,
        *,
        config: WukongConfig | None = None,
        **settings: Any,
    ):
        self.config = make_config(
            config,
            host=host, proxy_address=proxy_address, proxy_port=proxy_port,
            num_lambda_invokers=num_lambda_invokers, chunk_large_tasks=chunk_large_tasks,
            n_workers=n_workers, use_local_proxy=use_local_proxy, local_proxy_path=local_proxy_path,
            redis_endpoints=redis_endpoints, use_fargate=use_fargate, max_task_fanout=max_task_fanout,
            big_task_threshold=big_task_threshold, num_chunks_for_large_tasks=num_chunks_for_large_tasks,
            executors_use_task_queue=executors_use_task_queue, aws_region=aws_region, **settings,
        )
        self.servers: list[RedisServerProcess] = []
        # what it writes to disk; removed at close(), or by a reaper if this process is killed
        self.tmp = OwnedTempDir()
        self._sigterm = SigtermAsExit()
        self._sigterm.install()  # a plain SIGTERM shuts down as close() does (see lifetime.py)
        self._atexit = _close_at_exit(self)
        self.stores: RedisStores | None = None
        self.pool: WorkerPool | None = None
        self.proxy: ProxyProcess | None = None
        self.supervisor: RedisSupervisor | None = None  # started by supervise_redis()
        self.scratch = ScratchDirs()  # finished jobs' partd directories, kept a minute (wukong.scratch)
        self.queue_key = f"wukong:cluster:{uuid.uuid4().hex[:12]}:invocations"
        try:
            self.spec = self._storage_spec()
            self.stores = RedisStores(self.spec)
            self._check_reachable()
            self.pool = WorkerPool(
                self.spec, self.queue_key, self.config.n_workers, self.config.limit_blas_threads,
                max_retries=self.config.max_retries, function_timeout=self.config.function_timeout,
                memory_limit_mb=self.config.lambda_memory_mb if self.config.enforce_memory_limit else None,
            ).start(self.tmp.path)
            # leaves go out in batches from parallel threads (the client's MDS client is pooled). Unlike a
            # Lambda invoke, an RPUSH is CPU on both ends, so more threads than 2 per core only contend:
            # bench/leaf_start.py, 10,000 leaves on 2 cores: 24 ms with 1 thread, 16 ms with 4, 32 ms with 16
            n_invokers = min(self.config.num_lambda_invokers, 2 * (os.cpu_count() or 1))
            self.invoker = ParallelInvoker(RedisQueueInvoker(self.stores.mds, self.queue_key, self.pool), n_invokers)
            if self.config.use_local_proxy:
                self.proxy = ProxyProcess(self.spec, self.queue_key, self.config.num_lambda_invokers,
                                          script=self.config.local_proxy_path).start()
                # jobs planned from now on carry the proxy's address to their executors
                self.config = make_config(self.config, proxy_address=self.proxy.address[0],
                                          proxy_port=self.proxy.address[1])
        except BaseException:
            self.close()
            raise

    def _storage_spec(self) -> StorageSpec:
        cfg = self.config
        existing = spec_from_config(cfg)
        if existing is not None:
            return existing
        binary = find_redis_binary()
        first = RedisServerProcess(binary, maxmemory=cfg.redis_maxmemory, tmp_root=self.tmp.path).start()
        self.servers.append(first)
        for _ in range(cfg.num_kv_shards - 1):
            self.servers.append(RedisServerProcess(binary, password=first.password, maxmemory=cfg.redis_maxmemory,
                                                   tmp_root=self.tmp.path).start())
        return StorageSpec(
            mds=first.endpoint,
            kv=tuple(s.endpoint for s in self.servers),
            password=first.password,
            timeout=cfg.redis_timeout,
        )

    def _check_reachable(self) -> None:
        for name, client in [("MDS", self.stores.mds), *self.stores.shards.items()]:
            try:
                client.ping()
            except redis.RedisError as exc:
                raise RedisUnavailableError(
                    f"cannot reach Redis {name} ({exc}); check redis_endpoints / REDIS_URL and the password"
                ) from exc

    @property
    def n_workers(self) -> int:
        return self.config.n_workers

    def supervise_redis(self, restarted: Callable[[str], None], lost: Callable[[str], None]) -> Callable[[], None]:
        """Restart the Redis servers this cluster started if they die (wukong.local.supervisor), and
        tell ``restarted(message)`` or ``lost(message)``; returns the function that unsubscribes.
        Servers it did not start (redis_endpoints, REDIS_URL) are not its to restart: nothing happens."""
        if not self.servers:
            return lambda: None
        if self.supervisor is None:
            self.supervisor = RedisSupervisor(self.servers)
        return self.supervisor.subscribe(restarted, lost)

    def close(self) -> None:
        """Stop the KV proxy, every worker process and every Redis server this cluster started, and
        remove the partd directories its jobs left."""
        if self.supervisor is not None:
            self.supervisor.halt()  # the servers stopped below must stay stopped
        self.scratch.close()
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.pool is not None:
            self.pool.stop(self.stores.mds if self.stores is not None else None)
            self.pool = None
        if self.stores is not None:
            self.stores.close()
            self.stores = None
        for server in self.servers:
            server.stop()
        self.servers.clear()
        if self.supervisor is not None:  # only now: servers it restarted die with its thread
            self.supervisor.finish()
            self.supervisor = None
        self.tmp.close()
        self._sigterm.uninstall()
        atexit.unregister(self._atexit)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


    def __repr__(self) -> str:
        state = "closed" if self.pool is None else f"{self.pool.alive()} workers"
        return f"<LocalCluster redis={self.spec.mds if hasattr(self, 'spec') else None} {state}>"


def _close_at_exit(cluster: LocalCluster) -> Callable[[], None]:
    """Register closing ``cluster`` at interpreter exit, without keeping it alive until then."""
    ref = weakref.ref(cluster)

    def close() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    atexit.register(close)
    return close
