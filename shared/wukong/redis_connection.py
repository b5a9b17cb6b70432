"""How Wukong connects to a Redis server: where the servers are, the retry policy, how long a
call may wait, and a wire format that sends big values without copying them.

The spec is small and picklable (it travels in invocation payloads); :func:`connect` is the one
place a Redis client is built, so every process talks to Redis the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import Encoder, PythonRespSerializer
from redis.retry import Retry

if TYPE_CHECKING:
    from wukong.config import WukongConfig

Endpoint = tuple[str, int]

#: Arguments at least this long are sent as their own buffer, never copied into a command buffer.
LARGE_ARGUMENT = 16 * 1024
#: Bytes asked of the socket per read. redis-py's 64 KB default means 128 reads and parser feeds
#: for one 8 MB value; 1 MB cut the client's CPU per byte read by about a third (measured here).
SOCKET_READ_SIZE = 1 << 20
#: The longest string a Redis or Valkey server takes when it will not say (``proto-max-bulk-len``'s
#: default; ElastiCache neither allows CONFIG nor lets users raise it).
DEFAULT_BULK_LIMIT = 512 * 1024 * 1024


@dataclass(frozen=True)
class StorageSpec:
    """Where a job's Redis servers are; small and picklable, so it travels in payloads."""

    mds: Endpoint
    kv: tuple[Endpoint, ...]
    password: str | None = None
    timeout: float = 30.0
    tls: bool = False

    def __repr__(self) -> str:  # never print the password
        return f"StorageSpec(mds={self.mds}, kv={self.kv}, tls={self.tls})"


def spec_from_config(config: "WukongConfig", password: str | None = None) -> StorageSpec | None:
    """The spec of the existing servers ``config`` names (endpoints, else REDIS_URL); None if none.

    ``password`` (e.g. read from a secret store) wins over the configured one.
    """
    if config.redis_endpoints:
        eps = tuple(config.redis_endpoints)
        return StorageSpec(mds=eps[0], kv=eps, password=password or config.redis_password,
                           timeout=config.redis_timeout, tls=config.redis_tls)
    if config.redis_url:
        url = urlparse(config.redis_url)
        if url.scheme not in ("redis", "rediss", "") or not url.hostname:
            raise ValueError(f"REDIS_URL {config.redis_url!r} must look like redis[s]://[:password@]host:port")
        ep = (url.hostname, url.port or 6379)
        return StorageSpec(mds=ep, kv=(ep,), password=password or url.password or config.redis_password,
                           timeout=config.redis_timeout, tls=config.redis_tls or url.scheme == "rediss")
    return None


class LargeValuePacker:
    """Packs commands for the wire: hiredis for small ones, buffers passed through for big ones.

    With hiredis installed, redis-py packs every command with ``hiredis.pack_command``, which
    copies each argument into one new buffer (and turns a memoryview into bytes first). For an
    8 MB value that copy cost ~9x the client CPU of redis-py's own packer, which sends a long
    argument as its own buffer (0.60 s against 0.07 s for 400 MB here). Short commands, the vast
    majority, keep hiredis's faster packing.
    """

    def __init__(self) -> None:
        # redis-py's default encoder settings, which our clients use (values are bytes)
        self._python = PythonRespSerializer(LARGE_ARGUMENT, Encoder("utf-8", "strict", False).encode)
        try:
            from redis.connection import HiredisRespSerializer
            from redis.utils import HIREDIS_AVAILABLE
        except ImportError:  # pragma: no cover - redis-py without the hiredis hooks
            HIREDIS_AVAILABLE = False
        self._small = HiredisRespSerializer() if HIREDIS_AVAILABLE else self._python

    def pack(self, *args: Any) -> list:
        # one plain loop: this runs for every command, and most have no buffer worth a second look
        for arg in args:
            if isinstance(arg, _BUFFERS) and (isinstance(arg, memoryview) or len(arg) >= LARGE_ARGUMENT):
                return self._pack_buffers(args)
        return self._small.pack(*args)

    def _pack_buffers(self, args: tuple) -> list:
        args = tuple(_flat_bytes(arg) if isinstance(arg, memoryview) else arg for arg in args)
        if any(isinstance(arg, _BUFFERS) and len(arg) >= LARGE_ARGUMENT for arg in args):
            return self._python.pack(*args)
        return self._small.pack(*args)


_BUFFERS = (bytes, bytearray, memoryview)


def _flat_bytes(view: memoryview) -> memoryview | bytes:
    """A view whose len() is its size in bytes, as the Python packer's length prefix assumes."""
    if view.ndim == 1 and view.itemsize == 1:
        return view
    return view.cast("B") if view.c_contiguous else view.tobytes()


def bulk_limit(client: redis.Redis) -> int:
    """The longest string ``client``'s server stores (``proto-max-bulk-len``), or the default when
    the server refuses CONFIG (ElastiCache, an ACL without it)."""
    try:
        reply = client.config_get("proto-max-bulk-len")
    except redis.ResponseError:
        return DEFAULT_BULK_LIMIT
    value = reply.get("proto-max-bulk-len") or reply.get(b"proto-max-bulk-len")
    try:
        return int(value)
    except (TypeError, ValueError):
        return DEFAULT_BULK_LIMIT


class _NamesServer:
    """A connection whose timeouts and connection errors name its server. redis-py's hiredis reader
    says only "Timeout reading from socket", and a write or connect timeout names no server either:
    with several shards, which one hung is what the user needs to know."""

    def _named(self, exc: redis.RedisError) -> None:
        where = f"{self.host}:{self.port}"
        if exc.args and isinstance(exc.args[0], str) and where not in exc.args[0]:
            exc.args = (f"{exc.args[0]} ({where})", *exc.args[1:])  # in place: its type and chain stay

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        try:
            return super().connect_check_health(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._named(exc)
            raise

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            return super().send_packed_command(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._named(exc)
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._named(exc)
            raise


class _Connection(_NamesServer, redis.Connection):
    pass


class _SSLConnection(_NamesServer, redis.SSLConnection):
    pass


def connect(endpoint: Endpoint, spec: StorageSpec, single_connection: bool = False) -> redis.Redis:
    """A client for one server. ``single_connection`` pins one connection instead of checking one
    out of the pool for every command, which halves redis-py's per-command CPU (~110 -> ~50 us
    measured); only for single-threaded processes such as executors, since a blocking call would
    hold the pinned connection for every other thread."""
    host, port = endpoint
    pool = redis.ConnectionPool(
        connection_class=_SSLConnection if spec.tls else _Connection,
        host=host,
        port=port,
        password=spec.password,
        socket_timeout=spec.timeout,
        socket_connect_timeout=min(spec.timeout, 5.0),
        # Only connection errors are retried: they come fast (refused, reset), and a restarted server
        # answers the retry. A timeout has already cost a whole redis_timeout, and a server silent that
        # long is hung: retrying it (and the connect and health check nested inside each retry, which
        # also timed out and retried) multiplied one hung server into minutes of waiting.
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3, supported_errors=(redis.ConnectionError,)),
        health_check_interval=30,
        command_packer=LargeValuePacker(),
        socket_read_size=SOCKET_READ_SIZE,
    )
    client = redis.Redis(connection_pool=pool, single_connection_client=single_connection)
    client.auto_close_connection_pool = True  # the pool is this client's alone
    return client


def blocking_timeout(seconds: float, spec: StorageSpec) -> float:
    """How long a blocking command (BLPOP, BLMOVE) may ask the server to wait, ``seconds`` at most:
    under half of the socket timeout, so an idle wait is never taken for a hung server."""
    return min(seconds, spec.timeout / 2)


def server_named(exc: BaseException, spec: StorageSpec) -> str | None:
    """Which of ``spec``'s servers the error's message names ("the metadata store h:p", "KV shard
    h:p"; :func:`connect`'s connections always name theirs), or None."""
    text = str(exc)
    for role, (host, port) in [("the metadata store", spec.mds), *(("KV shard", ep) for ep in spec.kv)]:
        if re.search(rf"(?<![\w.]){re.escape(host)}:{port}(?!\d)", text):
            return f"{role} {host}:{port}"
    return None


def unavailable(exc: redis.RedisError, spec: StorageSpec, during: str, server: str | None = None,
                check: str = "is the Redis server up?") -> str:
    """The message of a RedisUnavailableError: which server, what happened ``during`` what, what to
    check. A timeout means the server stopped answering within redis_timeout (hung, not gone); a
    connection error that it is gone, and ``check`` says what to look at. ``server`` names the
    server when the error names none of ``spec``'s."""
    server = (server_named(exc, spec) or server
              or f"a Redis server (the metadata store {address(spec.mds)} or a KV shard)")
    if isinstance(exc, redis.TimeoutError):
        return (f"{server} stopped answering while {during}: no reply within redis_timeout={spec.timeout} s "
                f"({exc}). Check that it is not stopped, swapping or overloaded and that the network to it "
                "is up; a server this busy needs a larger redis_timeout")
    return f"lost {server} while {during} ({type(exc).__name__}: {exc}); {check}"


def address(endpoint: Endpoint) -> str:
    """``host:port``, as redis-py's messages write a server."""
    return f"{endpoint[0]}:{endpoint[1]}"
