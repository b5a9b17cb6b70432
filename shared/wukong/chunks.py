"""Large values split over the KV shards (``chunk_large_tasks``): chunks placed round-robin from
the value key's own shard, written and read with one pipeline per shard, and a small stand-in at
the value key naming the count; :class:`wukong.storage.JobStorage` calls these.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wukong.storage import JobStorage

#: Starts the stand-in a chunked value's own key holds: b"<magic><n chunks>:<total bytes>". Every
#: real value is a pickle, which starts with b"\x80", so the two never collide.
CHUNKED = b"\x00wukong-chunked:"


def chunk_shards(storage: "JobStorage", tid: int, n: int) -> list[str]:
    """The shard of each chunk: round-robin from the value key's own shard, so any n >= the shard
    count uses every shard (consistent hashing of a few keys would not)."""
    nodes = sorted(storage.stores.shards)
    first = nodes.index(storage.stores.ring.get_node(storage.keys.value(tid)))
    return [nodes[(first + i) % len(nodes)] for i in range(n)]


def put_chunks(storage: "JobStorage", tid: int, data: bytes, n: int) -> bytes:
    """Write the chunks after recording their count for cleanup; returns the stand-in to store."""
    pipe = storage.stores.mds.pipeline(transaction=False)
    pipe.hset(storage.keys.chunk_counts, str(tid), n)
    pipe.expire(storage.keys.chunk_counts, storage.ttl)
    storage._execute(pipe, mds=True)
    size, view = -(-len(data) // n), memoryview(data)
    pipes = {}
    for i, node in enumerate(chunk_shards(storage, tid, n)):
        pipe = pipes.setdefault(node, storage.stores.shards[node].pipeline(transaction=False))
        pipe.set(storage.keys.chunk(tid, i), view[i * size:(i + 1) * size], ex=storage.ttl)
    for pipe in pipes.values():
        storage._execute(pipe, mds=False)
    storage.stats.kv_bytes_written += len(data)
    return CHUNKED + f"{n}:{len(data)}".encode()


def get_chunks(storage: "JobStorage", stand_ins: dict[int, bytes]) -> dict[int, bytes]:
    """Reassemble chunked values from their stand-ins: one pipeline per shard for all of them."""
    pipes, order, sizes = {}, defaultdict(list), {}
    for tid, header in stand_ins.items():
        n, sizes[tid] = (int(x) for x in header[len(CHUNKED):].split(b":"))
        for i, node in enumerate(chunk_shards(storage, tid, n)):
            pipes.setdefault(node, storage.stores.shards[node].pipeline(transaction=False)).get(storage.keys.chunk(tid, i))
            order[node].append((tid, i))
    parts: dict[int, dict[int, bytes]] = defaultdict(dict)
    for node, pipe in pipes.items():
        for (tid, i), blob in zip(order[node], storage._execute(pipe, mds=False)):
            if blob is None:
                raise LookupError(f"chunk {i} of the value of task id {tid} is missing from KV shard {node}")
            parts[tid][i] = blob
    out = {tid: b"".join(p[i] for i in range(len(p))) for tid, p in parts.items()}
    for tid, blob in out.items():
        if len(blob) != sizes[tid]:
            raise LookupError(f"chunked value of task id {tid} reassembled to {len(blob)} bytes, not {sizes[tid]}")
        storage.stats.kv_bytes_read += len(blob)
    return out
