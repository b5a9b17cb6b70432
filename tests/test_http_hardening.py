"""``wukong serve`` against slow, idle and too many clients: slow headers and slow bodies are cut
off, idle keep-alive connections closed, at most ``max_connections`` are open, and running out of
file descriptors is logged once, not once per attempt. See wukong.service.connections.

Servers here use deadlines of a second or two; every wait is for an event, with a generous bound
(the suite runs on a busy two-core machine), never a tight wall-clock check.
"""

from __future__ import annotations

import http.client
import logging
import os
import resource
import select
import signal
import socket
import subprocess
import time

import pytest
from api_server import TOKEN
from test_cli import WUKONG, clean_env

from wukong.service.limits import HttpLimits, RateLimitedLog
from wukong.service.server import LocalApiServer

#: Longest any test waits for the server to close a connection it should close within a second or two.
BOUND = 30.0
# log_interval: this server logs every cut-off, so a test can look for its own
SHORT = HttpLimits(header_timeout=1.0, body_timeout=1.0, body_min_rate=1000, keep_alive_timeout=1.0,
                   send_timeout=2.0, max_connections=64, log_interval=0.001)


@pytest.fixture(scope="module")
def short(cluster):
    with LocalApiServer(cluster, token=TOKEN, limits=SHORT) as server:
        yield server


def connect(server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=BOUND)


def until_closed(socks: list[socket.socket], trickle: bytes = b"", every: float = 0.2,
                 bound: float = BOUND) -> dict[socket.socket, bytes]:
    """Read each socket until the server closes it, sending ``trickle`` every ``every`` seconds
    meanwhile; what each received. Fails if any is still open after ``bound`` seconds."""
    received = {s: b"" for s in socks}
    open_ = set(socks)
    deadline = time.monotonic() + bound
    while open_ and time.monotonic() < deadline:
        for s in list(open_):
            if trickle:
                try:
                    s.sendall(trickle)
                except OSError:  # closed under us: read what came first
                    pass
        readable, _, _ = select.select(list(open_), [], [], every)
        for s in readable:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                received[s] += data
            else:
                open_.discard(s)
    assert not open_, f"{len(open_)} of {len(socks)} connections still open after {bound} s"
    for s in socks:
        s.close()
    return received


def authorized_post(length: int) -> bytes:
    return (f"POST /jobs HTTP/1.1\r\nHost: wukong\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n").encode()


class Records(logging.Handler):
    """The log records of one logger, whatever the process's logging setup (the CLI's turns off
    propagation to the root logger, where pytest's caplog listens)."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> "Records":
        self.logger.addHandler(self)
        self.level_was = self.logger.level
        self.logger.setLevel(logging.DEBUG)  # setLevel, not .level =: the logger caches its decisions
        return self

    def __exit__(self, *exc_info) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_was)


# --- read deadlines ------------------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_clients_sending_headers_slowly_are_cut_off(short):
    """A header line every 0.2 s kept uvicorn's connections open for good (95 s and counting)."""
    socks = [connect(short) for _ in range(5)]
    for s in socks:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: wukong\r\n")
    received = until_closed(socks, trickle=b"X-Slow: 1\r\n")
    for data in received.values():
        assert data.startswith(b"HTTP/1.1 408 ") and b"header_timeout=1 s" in data


@pytest.mark.timeout(90)
def test_a_silent_connection_is_closed_without_an_answer(short):
    (data,) = until_closed([connect(short)]).values()
    assert data == b""  # it asked nothing, so it gets no 408: a pre-connecting browser is not told off


@pytest.mark.timeout(90)
def test_a_stalled_request_body_is_cut_off(short):
    socks = [connect(short) for _ in range(5)]
    for s in socks:
        s.sendall(authorized_post(1000) + b"x" * 10)  # 10 of 1,000 bytes, then nothing
    for data in until_closed(socks).values():
        assert data.startswith(b"HTTP/1.1 408 ") and b"body_timeout=1 s" in data


@pytest.mark.timeout(90)
def test_a_body_sent_a_byte_at_a_time_is_cut_off(short):
    """A byte every 0.1 s never leaves the body idle for body_timeout; the minimum rate catches it."""
    socks = [connect(short) for _ in range(5)]
    for s in socks:
        s.sendall(authorized_post(100_000))
    for data in until_closed(socks, trickle=b"x", every=0.1).values():
        assert data.startswith(b"HTTP/1.1 408 ") and b"body_min_rate=1000 bytes/s" in data


@pytest.mark.timeout(90)
def test_an_idle_keep_alive_connection_is_closed(short):
    conn = http.client.HTTPConnection(short.host, short.port, timeout=BOUND)
    conn.request("GET", "/health")
    response = conn.getresponse()
    assert response.status == 200 and response.read() and not response.will_close
    assert conn.sock.recv(1) == b""  # the server closed it: keep_alive_timeout=1 s
    conn.close()


@pytest.mark.timeout(90)
def test_a_client_that_reads_no_response_is_cut_off(short):
    """The response fills the socket buffers, then nothing moves: the server drops the connection."""
    with Records("wukong.service.connections") as log:
        s = connect(short)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # pipelined requests for the OpenAPI document (~27 KB each) that the client never reads: 54 MB,
        # more than the kernel's socket buffers take (200 of them, 5 MB, fitted in on loopback)
        s.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: wukong\r\n\r\n" * 2000)
        deadline = time.monotonic() + BOUND
        while not any("send_timeout" in m for m in log.messages) and time.monotonic() < deadline:
            time.sleep(0.1)
        while short._server.gate.count and time.monotonic() < deadline:
            time.sleep(0.1)
    assert any("read none of its response for send_timeout=2 s" in m for m in log.messages), log.messages
    assert short._server.gate.count == 0, "the connection that reads nothing is still open"
    s.close()


# --- the connection limit ------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_at_most_max_connections_are_open_and_the_limit_is_logged_once(cluster):
    limits = HttpLimits(header_timeout=60.0, max_connections=4)
    with LocalApiServer(cluster, token=TOKEN, limits=limits) as server, \
            Records("wukong.service.connections") as log:
        busy = [connect(server) for _ in range(4)]
        for s in busy:  # requests under way (headers half sent): not idle, so not closed to make room
            s.sendall(b"GET /health HTTP/1.1\r\n")
        waiting = [connect(server) for _ in range(20)]  # the kernel takes them; the server does not
        for s in waiting:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: wukong\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + BOUND
        while not log.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # a connection wrongly served would have its answer by now
        assert server._server.gate.count == 4
        assert not select.select(waiting, [], [], 0)[0], "a connection over the limit was served"
        busy[0].close()  # one slot frees: the waiting ones are served through it, one after another
        for data in until_closed(waiting).values():
            assert data.startswith(b"HTTP/1.1 200 ")
        for s in busy[1:]:
            s.close()
    limit_lines = [m for m in log.messages if "max_connections" in m]
    assert len(limit_lines) == 1, log.messages


@pytest.mark.timeout(120)
def test_at_the_limit_idle_connections_make_room(cluster):
    """Silent sockets fill every slot; a new client is answered after DRAIN_GRACE (1 s), not after
    the 60 s header timeout."""
    limits = HttpLimits(header_timeout=60.0, max_connections=4)
    with LocalApiServer(cluster, token=TOKEN, limits=limits) as server:
        idle = [connect(server) for _ in range(4)]
        deadline = time.monotonic() + BOUND
        while server._server.gate.count < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        conn = http.client.HTTPConnection(server.host, server.port, timeout=BOUND)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        assert sum(not select.select([s], [], [], 0)[0] for s in idle) < 4  # one at least was closed
        for s in idle:
            s.close()


def test_a_recurring_refusal_is_logged_once_per_interval_with_a_count():
    now = [0.0]
    with Records("wukong.test.ratelimit") as log:
        say = RateLimitedLog(log.logger, interval=60.0, clock=lambda: now[0])
        for t in range(0, 150):  # one a second for 150 s
            now[0] = float(t)
            say("fds", logging.WARNING, "out of %s", "descriptors")
            say("limit", logging.WARNING, "at the limit")
    assert log.messages == ["out of descriptors", "at the limit",
                            "out of descriptors (59 more like it in the last 60 s)",
                            "at the limit (59 more like it in the last 60 s)",
                            "out of descriptors (59 more like it in the last 60 s)",
                            "at the limit (59 more like it in the last 60 s)"]


# --- file descriptors: `wukong serve` under `ulimit -n 256` ------------------------------------------

def start_serve(stderr_path, *args: str, nofile: int | None = None, env: dict | None = None):
    """`wukong serve` on a free port, with RLIMIT_NOFILE ``nofile`` if given: (host, port, token,
    process). Its stderr goes to a file (a flood of tracebacks would fill a pipe and block it)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(stderr_path, "w") as err:
        proc = subprocess.Popen([str(WUKONG), "serve", "--port", "0", "--workers", "1", *args],
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
                                env=env or clean_env(), preexec_fn=limit if nofile else None)
    endpoint, token = proc.stdout.readline().strip(), proc.stdout.readline().strip()
    if not endpoint.startswith("WUKONG_ENDPOINT=http://127.0.0.1:"):
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"unexpected serve output {endpoint!r}: {stderr_path.read_text()}")
    return "127.0.0.1", int(endpoint.rsplit(":", 1)[1]), token.split("=", 1)[1], proc


def health(host: str, port: int) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=BOUND)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline and any(map(running, pids)):
        time.sleep(0.1)
    assert not [p for p in pids if running(p)], "processes of wukong serve still running"


def stop_serve(proc: subprocess.Popen, expect: int = 0) -> None:
    """Ctrl-C, as a user would, then check it exited ``expect`` and took its Redis and workers with it."""
    kids = children(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(60) == expect
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert_gone(kids)


@pytest.mark.timeout(180)
def test_260_idle_sockets_under_ulimit_256_do_not_keep_health_from_answering(tmp_path):
    """Before: every slot and descriptor held, /health timed out and asyncio logged 170,000
    tracebacks. Now at most 64 connections (a quarter of 256) are open, idle ones make room for new
    clients, and the limit is logged once. The 60 s header timeout shows it is not the deadlines."""
    err = tmp_path / "stderr"
    host, port, _, proc = start_serve(err, "--header-timeout", "60", nofile=256)
    socks = []
    try:
        socks = [socket.create_connection((host, port), timeout=BOUND) for _ in range(260)]
        assert health(host, port) == 200
    finally:
        for s in socks:
            s.close()
        stop_serve(proc)
    log = err.read_text()
    assert "Traceback" not in log and "Too many open files" not in log, log[-3000:]
    assert 1 <= log.count("the limit (max_connections)") <= 2, log[-3000:]


@pytest.mark.timeout(180)
def test_running_out_of_file_descriptors_is_logged_once_not_per_accept(tmp_path):
    """A connection limit above what the descriptors allow: accept() fails with EMFILE. asyncio
    logged a traceback for each attempt (1.3 million lines in 10 s); now one line, the server stops
    accepting for a second at a time, and /health answers once the idle sockets time out."""
    err = tmp_path / "stderr"
    host, port, _, proc = start_serve(err, "--max-connections", "1000", "--header-timeout", "2", nofile=256)
    socks = []
    try:
        socks = [socket.create_connection((host, port), timeout=BOUND) for _ in range(300)]
        deadline = time.monotonic() + BOUND
        while "cannot accept connections" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "cannot accept connections" in err.read_text()
        status = 0
        while status != 200 and time.monotonic() < deadline + BOUND:
            status = health(host, port)  # 503 while the Redis probe itself finds no descriptor
    finally:
        for s in socks:
            s.close()
        stop_serve(proc)
    assert status == 200
    log = err.read_text()
    assert "Traceback" not in log, log[-3000:]
    refusals = [line for line in log.splitlines() if "Too many open files" in line]
    assert 1 <= len(refusals) <= 2, log[-3000:]
