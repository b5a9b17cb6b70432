"""``wukong serve`` when its embedded Redis dies: the server restarts it on the same port, the job
that was running fails saying why, and new jobs run; if Redis cannot be restarted, the server exits
non-zero saying so. Either way no Valkey, worker or server process is left behind.

Before, /health answered 503 from then on and every job failed: the server served nothing, for good.
"""

from __future__ import annotations

import http.client
import json
import operator
import os
import shutil
import signal
import time

import pytest
from test_cli import clean_env
from test_http_hardening import BOUND, assert_gone, children, health, running, start_serve, stop_serve

from wukong.local.redis_server import find_redis_binary
from wukong.serialization import dumps, loads


def redis_children(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        try:  # the executable: Valkey rewrites its command line ("valkey-server 127.0.0.1:port")
            exe = os.path.basename(os.readlink(f"/proc/{child}/exe"))
        except OSError:
            continue
        if exe.startswith(("valkey-server", "redis-server")):
            found.append(child)
    return found


def call(host: str, port: int, token: str, method: str, path: str, body: bytes | None = None):
    conn = http.client.HTTPConnection(host, port, timeout=BOUND)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if data.startswith(b"{") else data


def wait_for(predicate, what: str, bound: float = BOUND):
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {bound} s")


def finished(host, port, token, job_id) -> dict:
    def ended():
        _, status = call(host, port, token, "GET", f"/jobs/{job_id}?wait=5")
        return status if status["state"] in ("succeeded", "failed", "cancelled") else None
    return wait_for(ended, f"job {job_id} to end", bound=60)


@pytest.mark.timeout(180)
def test_serve_restarts_a_sigkilled_redis_fails_the_running_job_and_runs_new_ones(tmp_path):
    err = tmp_path / "stderr"
    host, port, token, proc = start_serve(err, "--workers", "2")
    kids = children(proc.pid)
    try:
        (valkey,) = redis_children(proc.pid)
        code, job = call(host, port, token, "POST", "/jobs", dumps(({"nap": (time.sleep, 60)}, "nap")))
        assert code == 202
        wait_for(lambda: call(host, port, token, "GET", f"/jobs/{job['job_id']}")[1]["state"] == "running",
                 "the job to run")

        os.kill(valkey, signal.SIGKILL)
        wait_for(lambda: health(host, port) == 200, "/health to answer 200 again")
        (restarted,) = wait_for(lambda: redis_children(proc.pid), "a new Redis process")
        assert restarted != valkey and not running(valkey)

        status = finished(host, port, token, job["job_id"])
        assert status["state"] == "failed"
        assert status["error"]["type"] == "wukong.errors.RedisUnavailableError"
        message = status["error"]["message"]
        assert "lost its data" in message and "killed by SIGKILL" in message and "submit the job again" in message

        code, job = call(host, port, token, "POST", "/jobs", dumps(({"x": (operator.add, 1, 2)}, "x")))
        assert code == 202 and finished(host, port, token, job["job_id"])["state"] == "succeeded"
        assert loads(call(host, port, token, "GET", f"/jobs/{job['job_id']}/result")[1]) == 3
        kids += children(proc.pid)
    finally:
        stop_serve(proc)
    assert_gone(kids)  # the new Redis and any replaced worker too
    log = err.read_text()
    assert "stopped (killed by SIGKILL); restarted it" in log and "Traceback" not in log, log[-3000:]


@pytest.mark.timeout(180)
def test_serve_exits_non_zero_saying_why_when_its_redis_cannot_be_restarted(tmp_path):
    """The Redis binary is gone by the time the server dies (a copy on PATH, deleted)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(find_redis_binary(), bin_dir / "redis-server")
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    err = tmp_path / "stderr"
    host, port, token, proc = start_serve(err, env=env)
    kids = children(proc.pid)
    try:
        (valkey,) = redis_children(proc.pid)
        (bin_dir / "redis-server").unlink()
        os.kill(valkey, signal.SIGKILL)
        assert proc.wait(60) == 1
    finally:
        stop_serve(proc, expect=1)
    assert_gone(kids)
    log = err.read_text()
    assert "stopped (killed by SIGKILL) and could not be restarted" in log, log[-3000:]
    assert "wukong: stopped: the embedded Redis on 127.0.0.1:" in log, log[-3000:]


@pytest.mark.timeout(180)
def test_a_restarted_redis_dies_with_a_sigkilled_serve(tmp_path):
    """The supervisor's thread starts the new server: it gets the parent-death signal like the first."""
    host, port, token, proc = start_serve(tmp_path / "stderr")
    kids = children(proc.pid)
    try:
        (valkey,) = redis_children(proc.pid)
        os.kill(valkey, signal.SIGKILL)
        wait_for(lambda: health(host, port) == 200, "/health to answer 200 again")
        (restarted,) = wait_for(lambda: redis_children(proc.pid), "a new Redis process")
        kids += children(proc.pid)
    finally:
        proc.kill()
        proc.wait(30)
    assert_gone([restarted, *kids])
