"""The KV proxy through real LocalClusters: wide fan-outs, fan-in mixes against dask.get, refused
unauthenticated frames, fallback when the proxy is down, and the proxy's lifetime."""

from __future__ import annotations

import os
import pickle
import socket
import struct
from operator import add

import dask
import pytest

from wukong import Client, LocalCluster
from wukong.invocation import ParallelInvoker, split_batches
from wukong.local.redis_server import free_port
from wukong.local.workers import RedisQueueInvoker
from wukong.proxy import protocol
from wukong.proxy.client import ProxyClient


def inc(x):
    return x + 1


def total(*xs):
    return sum(xs)


def fan_out_graph(width: int) -> dict:
    dsk = {"root": (inc, 1)}
    dsk.update({f"leaf-{i}": (add, "root", i) for i in range(width)})
    dsk["sum"] = (total, *[f"leaf-{i}" for i in range(width)])
    return dsk


@pytest.fixture(scope="module")
def proxied():
    with LocalCluster(n_workers=2, use_local_proxy=True, max_task_fanout=4) as cluster:
        yield cluster


def test_a_fan_out_of_1000_goes_through_the_proxy(proxied):
    before = proxied.proxy.stats()
    client = Client(proxied)
    assert client.get(fan_out_graph(1000), "sum") == sum(2 + i for i in range(1000))
    report = client.last_report
    # the root's executor continues with one dependent itself; the proxy invoked the other 999
    assert report.proxy_invokes == 999
    assert report.executors_invoked == 1000 and report.executors_finished == 1000
    after = proxied.proxy.stats()
    assert after["invoked"] - before.get("invoked", 0) == 999
    assert after["fanouts"] - before.get("fanouts", 0) == 1


def test_wide_fan_in_and_fan_out_mix_matches_dask(proxied):
    # 6 roots; each of 60 middles reads two roots (fan-ins every root bumps); 6 groups sum 10 middles each
    dsk = {f"r{i}": (inc, i) for i in range(6)}
    dsk.update({f"m{j}": (add, f"r{j % 6}", f"r{(j * 7 + 1) % 6}") for j in range(60)})
    dsk.update({f"g{k}": (total, *[f"m{j}" for j in range(k * 10, k * 10 + 10)]) for k in range(6)})
    dsk.update({f"w{j}": (inc, "g0") for j in range(12)})  # a plain wide fan-out from a fan-in result
    keys = [f"g{k}" for k in range(6)] + [f"w{j}" for j in range(12)]
    before = proxied.proxy.stats()
    client = Client(proxied)
    assert client.get(dsk, keys) == dask.get(dsk, keys)
    after = proxied.proxy.stats()
    assert after["fanouts"] - before.get("fanouts", 0) >= 6  # every root fans out to >= 4 counters
    assert after["claimed"] > before.get("claimed", 0)  # some fan-ins were completed by the proxy's bumps


class _Touch:
    """Unpickling this creates a file: the proof that a frame was (or was not) unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _send_raw(address, frame: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(frame)
        return sock.recv(1024)  # b"" when the proxy closes without answering


def test_unauthenticated_frames_are_refused_before_unpickling(proxied, tmp_path):
    marker = tmp_path / "unpickled"
    body = pickle.dumps({"kind": "stats", "x": _Touch(str(marker))})
    before = proxied.proxy.stats().get("auth_failures", 0)
    wrong_key = protocol.derive_key("not the password")
    forged = struct.pack(">I", 32 + len(body)) + protocol.hmac.new(wrong_key, body, "sha256").digest() + body
    assert _send_raw(proxied.proxy.address, forged) == b""
    # even a correctly signed frame may carry only Wukong's plain-data classes
    key = protocol.derive_key(proxied.spec.password)
    signed = struct.pack(">I", 32 + len(body)) + protocol.hmac.new(key, body, "sha256").digest() + body
    assert _send_raw(proxied.proxy.address, signed) == b""
    # a frame announcing 4 GB is refused from its header, before anything is buffered
    assert _send_raw(proxied.proxy.address, struct.pack(">I", 2**32 - 1)) == b""
    assert not marker.exists()
    assert proxied.proxy.stats()["auth_failures"] == before + 3
    # and the proxy still serves its key holders
    assert ProxyClient(proxied.proxy.address, proxied.spec.password).stats()["requests"] > 0


def test_executors_fall_back_when_the_proxy_is_down():
    nobody = free_port()  # nothing listens here: every hand-off is refused at connect
    with LocalCluster(n_workers=2, proxy_address="127.0.0.1", proxy_port=nobody, max_task_fanout=4) as cluster:
        client = Client(cluster)
        dsk = fan_out_graph(50)
        dsk.update({f"f{i}": (add, "leaf-0", f"leaf-{i}") for i in range(1, 8)})  # fan-ins below the fan-out
        keys = ["sum"] + [f"f{i}" for i in range(1, 8)]
        assert client.get(dsk, keys) == dask.get(dsk, keys)
        assert client.last_report.proxy_invokes == 0
        assert client.last_report.executors_invoked == client.last_report.executors_finished


def test_close_stops_the_proxy_process():
    cluster = LocalCluster(n_workers=1, use_local_proxy=True)
    proxy = cluster.proxy
    pid = proxy.pid
    os.kill(pid, 0)  # running
    cluster.close()
    assert cluster.proxy is None and not proxy.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped


def test_parallel_invoker_pushes_every_payload_once(stores):
    key = "wukong:test:parallel-invoker"
    stores.mds.delete(key)
    payloads = [f"p{i}".encode() for i in range(10_000)]
    try:
        ParallelInvoker(RedisQueueInvoker(stores.mds, key), n_invokers=8).invoke(payloads)
        assert sorted(stores.mds.lrange(key, 0, -1)) == sorted(payloads)
    finally:
        stores.mds.delete(key)


def test_split_batches_bounds_the_number_and_size_of_batches():
    items = [b"x"] * 1001
    batches = split_batches(items, 4, 100)
    assert len(batches) == 4 and sum(map(len, batches)) == 1001
    assert split_batches(items, 16, 500) == [items[:501], items[501:]]
    assert split_batches(items[:10], 16, 500) == [items[:10]]
    assert split_batches([], 4, 1) == []
