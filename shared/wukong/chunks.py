"""Blobs split over the KV shards: any value too big for one Redis string, and with
``chunk_large_tasks`` any value of ``chunk_size`` or more. The chunks are placed round-robin
from the blob key's own shard and written and read with one pipeline per shard; the blob's own
key then holds a small stand-in naming them. :class:`wukong.storage.JobStorage` calls these.

Each chunked write gets its own chunk names (a random tag in the stand-in), so two writers of
one key (a duplicate delivery, a retry) never mix their chunks: a reader always follows one
complete set, the one whose stand-in it read. Every set is recorded for cleanup.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wukong.storage import JobStorage

#: Starts the stand-in a chunked blob's own key holds: b"<magic><n chunks>:<total bytes>:<set>".
#: Every real value is a pickle, which starts with b"\x80", so the two never collide.
CHUNKED = b"\x00wukong-chunked:"


@dataclass(frozen=True)
class ChunkSet:
    """One chunked write: ``base`` names its chunks (``<prefix>k:<base>:<i>``), ``n`` of them."""

    base: str
    n: int
    total: int

    def stand_in(self) -> bytes:
        return CHUNKED + f"{self.n}:{self.total}:{self.base}".encode()

    @classmethod
    def parse(cls, blob: bytes) -> "ChunkSet":
        n, total, base = blob[len(CHUNKED):].decode().split(":", 2)
        return cls(base=base, n=int(n), total=int(total))


def is_stand_in(blob: bytes | None) -> bool:
    return blob is not None and blob[:len(CHUNKED)] == CHUNKED


def new_chunk_set(key: str, prefix: str, nbytes: int, n: int) -> ChunkSet:
    """A fresh set of ``n`` chunk names for the blob at ``key`` (a key of the job, under ``prefix``)."""
    return ChunkSet(base=f"{key[len(prefix):]}.{secrets.token_hex(4)}", n=n, total=nbytes)


def chunk_shards(storage: "JobStorage", base: str, n: int) -> list[str]:
    """The shard of each chunk: round-robin from the shard of the set's first chunk key, so any
    n >= the shard count uses every shard (consistent hashing of a few keys would not)."""
    nodes = sorted(storage.stores.shards)
    first = nodes.index(storage.stores.ring.get_node(storage.keys.chunk(base, 0)))
    return [nodes[(first + i) % len(nodes)] for i in range(n)]


def put_chunks(storage: "JobStorage", key: str, data: bytes | memoryview, n: int, what: str) -> bytes:
    """Write ``data`` (``what``, for errors) as ``n`` chunks after recording the set for cleanup;
    returns the stand-in, which the caller stores at ``key`` last, once every chunk is there."""
    chunk_set = new_chunk_set(key, storage.keys.prefix, len(data), n)
    pipe = storage.stores.mds.pipeline(transaction=False)
    pipe.hset(storage.keys.chunk_counts, chunk_set.base, n)
    pipe.expire(storage.keys.chunk_counts, storage.ttl)
    storage._execute(pipe, mds=True)
    size, view = -(-len(data) // n), memoryview(data)
    pipes, sent = {}, defaultdict(int)
    for i, node in enumerate(chunk_shards(storage, chunk_set.base, n)):
        pipe = pipes.setdefault(node, storage.stores.shards[node].pipeline(transaction=False))
        chunk = view[i * size:(i + 1) * size]
        pipe.set(storage.keys.chunk(chunk_set.base, i), chunk, ex=storage.ttl)
        sent[node] += len(chunk)
    for node, pipe in pipes.items():
        with storage._refusals(storage.stores.shards[node], f"part of {what}", sent[node]):
            storage._execute(pipe, mds=False)
    storage.stats.kv_bytes_written += len(data)
    return chunk_set.stand_in()


def get_chunks(storage: "JobStorage", stand_ins: Mapping[Hashable, bytes]) -> dict[Hashable, bytes]:
    """Reassemble chunked blobs from their stand-ins: one pipeline per shard for all of them.

    Each blob is read into one preallocated buffer, so reassembly costs no second copy.
    """
    sets = {name: ChunkSet.parse(blob) for name, blob in stand_ins.items()}
    pipes, order = {}, defaultdict(list)
    for name, chunk_set in sets.items():
        for i, node in enumerate(chunk_shards(storage, chunk_set.base, chunk_set.n)):
            pipes.setdefault(node, storage.stores.shards[node].pipeline(transaction=False)).get(
                storage.keys.chunk(chunk_set.base, i))
            order[node].append((name, i))
    out = {name: bytearray(chunk_set.total) for name, chunk_set in sets.items()}
    filled: dict[Hashable, int] = defaultdict(int)
    for node, pipe in pipes.items():
        for (name, i), blob in zip(order[node], storage._execute(pipe, mds=False)):
            if blob is None:
                raise LookupError(f"chunk {i} of {name} is missing from KV shard {node} (expired or cleaned up)")
            chunk_set = sets[name]
            start = i * -(-chunk_set.total // chunk_set.n)
            out[name][start:start + len(blob)] = blob
            filled[name] += len(blob)
    for name, chunk_set in sets.items():
        if filled[name] != chunk_set.total:
            raise LookupError(f"chunked {name} reassembled to {filled[name]} bytes, not {chunk_set.total}")
        storage.stats.kv_bytes_read += chunk_set.total
    return out  # bytearrays: pickle.loads and every caller take any bytes-like object
