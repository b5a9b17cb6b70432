"""The wire path of values: big arguments go out as their own buffers, and values pickled with
large buffers still carry ``__main__`` objects by value and come back writeable. The retry
policy: a server that never answers costs one timeout, a refused connection fails fast, and
both errors name the server."""

from __future__ import annotations

import pickle
import socket
import sys
import time
import types

import numpy as np
import pytest
import redis

from wukong.redis_connection import LARGE_ARGUMENT, LargeValuePacker, StorageSpec, connect, unavailable
from wukong.serialization import dumps, loads


def test_a_large_argument_is_sent_as_its_own_buffer_not_copied():
    big = b"x" * (LARGE_ARGUMENT + 1)
    pieces = LargeValuePacker().pack("SET", b"key", big)
    assert any(piece is big for piece in pieces), "the value was copied into a command buffer"
    assert b"".join(bytes(p) for p in pieces) == b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$%d\r\n%s\r\n" % (len(big), big)


def test_small_commands_pack_to_the_same_bytes_either_way():
    pieces = LargeValuePacker().pack("HSET", b"h", "field", 12)
    assert b"".join(bytes(p) for p in pieces) == b"*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$5\r\nfield\r\n$2\r\n12\r\n"


def test_values_of_every_size_round_trip_through_a_real_server(cluster):
    spec = cluster.spec
    for single in (True, False):
        client = connect(spec.mds, spec, single_connection=single)
        try:
            for size in (0, 10, LARGE_ARGUMENT - 1, LARGE_ARGUMENT, 3 * (1 << 20) + 7):
                value = np.random.default_rng(size).bytes(size)
                client.set(f"test:wire:{size}", memoryview(value) if size % 2 else value, ex=60)
                assert client.get(f"test:wire:{size}") == value, size
                client.delete(f"test:wire:{size}")
        finally:
            client.close()


def test_a_memoryview_of_wide_items_is_sent_as_its_bytes(cluster):
    # len() of a float64 view counts items, not bytes: the length prefix must count bytes
    block = np.arange(20_000, dtype=np.float64)
    column = np.arange(40_000, dtype=np.float64).reshape(20_000, 2)[:, 0]  # not contiguous
    client = connect(cluster.spec.mds, cluster.spec, single_connection=True)
    try:
        for name, array in (("block", block), ("column", column)):
            client.set(f"test:view:{name}", memoryview(array), ex=60)
            assert client.get(f"test:view:{name}") == array.tobytes(), name
            client.delete(f"test:view:{name}")
        assert client.ping()  # the connection's stream is still in step
    finally:
        client.close()


def test_arrays_come_back_equal_and_writeable():
    a = np.arange(200_000, dtype=np.float64).reshape(400, 500)
    data = dumps({"a": a, "small": [1, 2, 3]})
    out = loads(data)
    assert np.array_equal(out["a"], a) and out["small"] == [1, 2, 3]
    out["a"][0, 0] = -1.0  # a task may update its own copy in place
    assert pickle.loads(data)["a"][0, 0] == 0.0, "the bytes must be plain in-band pickle"


def test_a_main_class_next_to_a_large_array_still_travels_by_value(monkeypatch):
    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    exec("class Point:\n    def __init__(self, x):\n        self.x = x\n", main.__dict__)
    value = {"point": main.Point(3), "block": np.ones((300, 300))}
    data = dumps(value)
    monkeypatch.delattr(main, "Point")  # as in a worker, which never ran the user's script
    out = loads(data)
    assert out["point"].x == 3 and out["block"].sum() == 90_000


@pytest.fixture()
def silent_server():
    """A port that accepts connections (the kernel's listen queue) and never answers: a hung server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()


@pytest.mark.parametrize("single", [True, False])
def test_a_server_that_never_answers_costs_one_timeout_not_four(silent_server, single):
    spec = StorageSpec(mds=silent_server, kv=(silent_server,), password="pw", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError) as info:
        client = connect(silent_server, spec, single_connection=single)  # a pinned one connects here
        try:
            client.ping()
        finally:
            client.close()
    # each retry used to wait its own timeout (and its reconnect's handshake another): 4 s and more
    assert time.monotonic() - started < 3.0
    where = f"127.0.0.1:{silent_server[1]}"
    assert where in str(info.value)
    message = unavailable(info.value, spec, "testing")
    assert message.startswith(f"the metadata store {where} stopped answering while testing") and \
        "redis_timeout=1.0 s" in message, message


def test_a_refused_connection_is_retried_and_fails_fast_naming_the_server():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    spec = StorageSpec(mds=("127.0.0.1", 1), kv=(("127.0.0.1", 1), ("127.0.0.1", port)), timeout=30.0)
    client = connect(("127.0.0.1", port), spec)
    started = time.monotonic()
    try:
        with pytest.raises(redis.ConnectionError) as info:
            client.ping()
    finally:
        client.close()
    assert time.monotonic() - started < 5  # backoffs of 0.1 + 0.2 + 0.4 s, not 30 s timeouts
    message = unavailable(info.value, spec, "testing", check="check it")
    assert message.startswith(f"lost KV shard 127.0.0.1:{port} while testing") and message.endswith("check it")
