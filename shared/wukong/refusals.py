"""Telling a server's refusal of a write from a lost server: a write that a live server refuses
(out of memory, or a string longer than it takes) becomes a :class:`ValueNotStoredError` naming
the size and the limit, instead of "a server stopped answering".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis

from wukong.errors import ValueNotStoredError

#: Writes shorter than this are never mistaken for refusals: a reset on them is a lost server.
REFUSABLE = 1 << 20
#: Writes at least this long are first checked against the server's free memory: a server takes
#: one write past its maxmemory (it checks before reading the value), then refuses every write,
#: so the job would fail at some small write later, blaming the wrong task.
CHECKED = 64 << 20


def check_room(client: redis.Redis, server: str, what: str, nbytes: int) -> None:
    """Refuse, before sending it, a write of ``nbytes`` that the server has no memory for: over
    its maxmemory, or (without one) over what its machine has left."""
    if nbytes < CHECKED:
        return
    try:
        info = client.info("memory")
    except redis.ResponseError:  # INFO not allowed (a restricted ACL): the write itself will tell
        return
    used, cap = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    machine = int(info.get("total_system_memory", 0))
    if cap and used + nbytes > cap:
        limit = f"its maxmemory is {cap:,} bytes, {used:,} in use"
    elif not cap and machine and used + nbytes > machine:
        limit = f"its machine has {machine:,} bytes of memory, {used:,} in use by it"
    else:
        return
    raise ValueNotStoredError(
        what, nbytes, f"Redis server {server} has no room for it ({limit}); give the stores more memory "
        "(maxmemory, a bigger node) or more KV shards, or make the value smaller")


def _config_value(client: redis.Redis, name: str) -> int | None:
    try:
        reply = client.config_get(name)
    except redis.RedisError:
        return None
    value = reply.get(name) or reply.get(name.encode())
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _still_answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def refusals(client: redis.Redis, server: str, what: str, nbytes: int, value_limit: int) -> Iterator[None]:
    """Classify errors of writing ``nbytes`` of ``what`` to ``client`` (the ``server``) by cause."""
    try:
        yield
    except redis.exceptions.OutOfMemoryError as exc:
        maxmemory = _config_value(client, "maxmemory")
        limit = f"its maxmemory is {maxmemory:,} bytes" if maxmemory else "its memory is full"
        raise ValueNotStoredError(
            what, nbytes, f"Redis server {server} is out of memory ({limit}; it answered: {exc}); give the "
            "stores more memory (maxmemory, a bigger node) or more KV shards, or make the value smaller"
        ) from exc
    except (redis.ConnectionError, redis.ResponseError) as exc:
        # an oversized string is answered "Protocol error: invalid bulk length", or, while the
        # client is still sending it, by closing the connection; a small write's reset is a lost server
        oversize = isinstance(exc, redis.ResponseError) and "bulk length" in str(exc)
        if not oversize and (isinstance(exc, redis.ResponseError) or nbytes < REFUSABLE or not _still_answers(client)):
            raise
        raise ValueNotStoredError(
            what, nbytes, f"Redis server {server} refused the write (it is up and answering): a string may "
            f"hold at most {value_limit:,} bytes there (proto-max-bulk-len, which Wukong read when the job "
            f"was planned; was it lowered since?), and the server's "
            f"client-query-buffer-limit and maxmemory bound a write too ({type(exc).__name__}: {exc})"
        ) from exc
