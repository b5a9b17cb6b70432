"""The KV proxy through real LocalClusters: wide fan-outs, fan-in mixes against dask.get, refused
unauthenticated, oversized and replayed frames, idle connections closed and reconnected, fallback
when the proxy is down, and the proxy's lifetime."""

from __future__ import annotations

import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from operator import add

import dask
import pytest

from wukong import Client, LocalCluster
from wukong.invocation import ParallelInvoker, split_batches
from wukong.local.proxy_process import ProxyProcess
from wukong.local.redis_server import free_port
from wukong.local.workers import RedisQueueInvoker
from wukong.proxy import client as client_module
from wukong.proxy import protocol
from wukong.proxy.client import ProxyClient, ProxyUnavailable


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


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "the proxy closed the connection"
        buf += chunk
    return buf


def _handshake(address, secret: str) -> tuple[socket.socket, protocol.Session]:
    """A raw connection past the hello, and a client session keyed with ``secret`` (right or wrong:
    the server's hello is not checked here, as an attacker would not check it)."""
    sock = socket.create_connection(address, timeout=60)
    nonce, hello = protocol.client_hello()
    sock.sendall(hello)
    _, server_nonce, _, _ = protocol.SERVER_HELLO.unpack(_recv_exactly(sock, protocol.SERVER_HELLO.size))
    return sock, protocol.Session(protocol.derive_key(secret), nonce, server_nonce, protocol.TO_SERVER)


def _read_frame(sock: socket.socket) -> bytes:
    header = _recv_exactly(sock, protocol.HEADER.size)
    (length, _, _) = protocol.HEADER.unpack(header)
    return header + _recv_exactly(sock, length)


def _open(session: protocol.Session, frame: bytes) -> dict:
    length, digest = session.open_header(frame[:protocol.HEADER.size])
    return session.open_body(digest, frame[protocol.HEADER.size:])


def _closed(sock: socket.socket) -> bool:
    """Whether the proxy closes ``sock`` without answering; waits up to the socket's (generous) timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_unauthenticated_frames_are_refused_before_unpickling(proxied, tmp_path):
    marker = tmp_path / "unpickled"
    message = {"kind": "stats", "x": _Touch(str(marker))}
    before = proxied.proxy.stats().get("auth_failures", 0)
    # signed with a key derived from another password
    sock, forged = _handshake(proxied.proxy.address, "not the password")
    with sock:
        sock.sendall(forged.seal(message))
        assert _closed(sock)
    # even a correctly signed frame may carry only Wukong's plain-data classes
    sock, session = _handshake(proxied.proxy.address, proxied.spec.password)
    with sock:
        sock.sendall(session.seal(message))
        assert _closed(sock)
    assert not marker.exists()
    assert proxied.proxy.stats()["auth_failures"] == before + 2
    # and the proxy still serves its key holders
    assert ProxyClient(proxied.proxy.address, proxied.spec.password).stats()["requests"] > 0


def _vm(pid: int, field: str) -> int:
    """A VmRSS/VmHWM figure of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def _flood(address, greet: bool, megabytes: int = 64) -> bool:
    """Announce a 512 MB frame under a bad MAC and stream ``megabytes`` of its body; True when the
    proxy closes the connection on us first."""
    with socket.create_connection(address, timeout=60) as sock:
        if greet:  # the handshake needs no key, so an attacker gets this far: then a header with a bad MAC
            sock.sendall(protocol.client_hello()[1])
            _recv_exactly(sock, protocol.SERVER_HELLO.size)
            header = protocol.HEADER.pack(protocol.MAX_FRAME, bytes(32), bytes(32))
        else:  # the attack as it was found: a length and a MAC, no hello
            header = struct.pack(">I", 512 * 1024 * 1024) + bytes(32)
        chunk = bytes(1 << 20)
        try:
            sock.sendall(header)
            for _ in range(megabytes):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return True
        return _closed(sock)


def test_announced_512_mb_frames_with_bad_macs_cost_the_proxy_no_memory(proxied):
    """The attack that took the proxy from 52 to 553 MB in 2.5 s: connections announce 512 MB frames
    without a valid MAC and stream their bodies. The proxy now reads at most a hello and one header
    from such a peer, closes it, and its resident memory stays where it was."""
    pid = proxied.proxy.pid
    before = proxied.proxy.stats().get("auth_failures", 0)
    rss_before, peak_before = _vm(pid, "VmRSS"), _vm(pid, "VmHWM")
    with ThreadPoolExecutor(4) as pool:
        floods = [pool.submit(_flood, proxied.proxy.address, greet) for greet in (True, True, False, False)]
        rss_during = rss_before
        while not all(f.done() for f in floods):  # sampled as well: VmHWM alone can hide under an earlier peak
            rss_during = max(rss_during, _vm(pid, "VmRSS"))
            time.sleep(0.02)
        assert all(f.result() for f in floods)  # every connection was closed on the attacker
    limit = 50 * 1024 * 1024  # generous: the proxy buffers ~100 bytes per such peer; 4 floods sent 256 MB
    assert rss_during - rss_before < limit
    assert _vm(pid, "VmHWM") - peak_before < limit
    assert proxied.proxy.stats()["auth_failures"] == before + 4


def test_replayed_frames_are_refused_on_the_same_and_on_another_connection(proxied):
    address, password = proxied.proxy.address, proxied.spec.password
    before = proxied.proxy.stats().get("auth_failures", 0)
    sock, session = _handshake(address, password)
    with sock:
        captured = session.seal({"kind": "stats"})
        sock.sendall(captured)
        assert "stats" in _open(session, _read_frame(sock))  # signed right: served
        sock.sendall(captured)  # again on its own connection: its sequence number is spent
        assert _closed(sock)
    sock, _ = _handshake(address, password)
    with sock:
        sock.sendall(captured)  # on a new connection: signed under another session's key
        assert _closed(sock)
    sock, session = _handshake(address, password)
    with sock:
        sock.sendall(session.seal({"kind": "stats"}))
        sock.sendall(_read_frame(sock))  # the proxy's own reply, sent back to it: the wrong direction
        assert _closed(sock)
    assert proxied.proxy.stats()["auth_failures"] == before + 3


def test_sessions_refuse_replayed_reordered_reflected_and_foreign_frames():
    key = protocol.derive_key("password")
    nonce, hello = protocol.client_hello()
    server, answer = protocol.server_hello(key, protocol.read_client_hello(hello), idle_timeout=7.5)
    client, idle = protocol.read_server_hello(key, nonce, answer)
    assert idle == 7.5
    first, second = client.seal({"n": 1}), client.seal({"n": 2})
    assert _open(server, first) == {"n": 1}
    with pytest.raises(protocol.AuthError):
        _open(server, first)  # replayed
    reply = server.seal({"ok": True})
    with pytest.raises(protocol.AuthError):
        _open(server, reply)  # reflected
    assert _open(server, second) == {"n": 2} and _open(client, reply) == {"ok": True}
    third, fourth = client.seal({"n": 3}), client.seal({"n": 4})
    with pytest.raises(protocol.AuthError):
        _open(server, fourth)  # reordered: the proxy expects the third
    # another connection's session, or a body swapped under a valid header, does not verify either
    other, _ = protocol.server_hello(key, protocol.client_hello()[0], idle_timeout=7.5)
    with pytest.raises(protocol.AuthError):
        _open(other, third)
    length, digest = server.open_header(third[:protocol.HEADER.size])
    with pytest.raises(protocol.AuthError):
        server.open_body(digest, fourth[protocol.HEADER.size:])
    # a server hello answers one client nonce, under one key
    with pytest.raises(protocol.WrongSecret):
        protocol.read_server_hello(key, protocol.client_hello()[0], answer)
    with pytest.raises(protocol.WrongSecret):
        protocol.read_server_hello(protocol.derive_key("another password"), nonce, answer)


def test_a_wrong_secret_is_named_on_both_sides(proxied):
    abandoned = proxied.proxy.stats().get("handshakes_abandoned", 0)
    with pytest.raises(ProxyUnavailable, match="different Redis passwords") as refused:
        ProxyClient(proxied.proxy.address, "not the password").stats()
    assert "KV proxy 127.0.0.1" in str(refused.value)  # which component, then what to do
    # the proxy logs the client that left after checking its hello; its counter shows it
    _wait_for(lambda: proxied.proxy.stats().get("handshakes_abandoned", 0) > abandoned)


IDLE = 1.0  # the short-idle proxy's bound; the tests wait up to 60 s for it


@pytest.fixture(scope="module")
def short_idle_proxy(proxied):
    """A second proxy on the same stores and queue, closing connections idle for IDLE seconds."""
    proxy = ProxyProcess(proxied.spec, proxied.queue_key, n_invokers=2, idle_timeout=IDLE).start()
    yield proxy
    proxy.stop()


def test_idle_connections_are_closed(short_idle_proxy):
    before = short_idle_proxy.stats().get("idle_closed", 0)
    silent = socket.create_connection(short_idle_proxy.address, timeout=60)  # never says a word
    greeted, _ = _handshake(short_idle_proxy.address, short_idle_proxy.spec.password)  # sits after the hello
    with silent, greeted:
        assert _closed(silent) and _closed(greeted)
    assert short_idle_proxy.stats()["idle_closed"] >= before + 2


@pytest.mark.parametrize("reuse_fraction", [client_module.REUSE_FRACTION, 1e6],
                         ids=["reuse-window", "closed-connection-check"])
def test_the_client_reconnects_after_an_idle_close(short_idle_proxy, monkeypatch, reuse_fraction):
    # 1e6: the client would reuse the connection for ever, so only its check for a closed one saves it
    monkeypatch.setattr(client_module, "REUSE_FRACTION", reuse_fraction)
    client = ProxyClient(short_idle_proxy.address, short_idle_proxy.spec.password)
    try:
        first = client.stats()
        old = client._sock
        assert _closed(old)  # the proxy closed it for idleness (read on the client's own socket)
        assert client.stats()["requests"] > first["requests"]
        assert client._sock is not old
    finally:
        client.close()


def test_jobs_go_through_the_proxy_after_it_closed_their_executors_idle_connection(monkeypatch):
    # ProxyProcess passes no --idle-timeout here, so the proxy reads it from the environment it inherits
    monkeypatch.setenv("WUKONG_PROXY_IDLE_TIMEOUT", "2")
    with LocalCluster(n_workers=1, use_local_proxy=True, max_task_fanout=4) as cluster, Client(cluster) as client:
        for _ in range(2):  # one worker: the second job's hand-off comes from the connection the first left
            closed = cluster.proxy.stats().get("idle_closed", 0)
            assert client.get(fan_out_graph(50), "sum") == sum(2 + i for i in range(50))
            assert client.last_report.proxy_invokes == 49  # not done by the executor's fallback
            _wait_for(lambda: cluster.proxy.stats().get("idle_closed", 0) > closed)
        assert cluster.proxy.stats().get("auth_failures", 0) == 0


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
