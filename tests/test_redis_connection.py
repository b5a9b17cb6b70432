"""The wire path of values: big arguments go out as their own buffers, and values pickled with
large buffers still carry ``__main__`` objects by value and come back writeable."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np

from wukong.redis_connection import LARGE_ARGUMENT, LargeValuePacker, connect
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
