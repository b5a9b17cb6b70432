"""``wukong serve`` and the job commands as real subprocesses: the server prints its URL and a
generated token, the commands submit, follow, fetch, list and cancel, and Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest
from processes import alive, descendants
from test_cli import WUKONG, clean_env

GRAPH_PY = """
from operator import add, mul
dsk = {"a": 6, "b": 7, "c": (mul, "a", "b"), "d": (add, "c", 0)}
keys = ["d", "c"]
"""


def start_serve() -> tuple[str, str, subprocess.Popen]:
    """A `wukong serve` process on a free port: (endpoint, token, process)."""
    proc = subprocess.Popen([str(WUKONG), "serve", "--port", "0", "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=clean_env())
    endpoint = proc.stdout.readline().strip()
    token = proc.stdout.readline().strip()
    if not (endpoint.startswith("WUKONG_ENDPOINT=http://127.0.0.1:") and token.startswith("WUKONG_TOKEN=")):
        proc.kill()
        raise AssertionError(f"unexpected serve output: {endpoint!r} {token!r}\n{proc.stderr.read()}")
    return endpoint.split("=", 1)[1], token.split("=", 1)[1], proc


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL the server (no cleanup runs) and check that nothing it started is left behind."""
    started = descendants(proc.pid)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30  # generous: its children see it go at once
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in started if alive(p)], "a SIGKILLed `wukong serve` left processes running"


@pytest.fixture(scope="module")
def served():
    endpoint, token, proc = start_serve()
    assert len(token) > 30  # generated, since no token was given
    try:
        yield endpoint, token, proc
    finally:
        stop(proc)


def wukong(*args: str, endpoint: str | None = None, token: str | None = None, cwd: Path | None = None):
    env = clean_env()
    if endpoint:
        env["WUKONG_ENDPOINT"] = endpoint
    if token:
        env["WUKONG_TOKEN"] = token
    return subprocess.run([str(WUKONG), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=env, timeout=60, cwd=cwd)


@pytest.mark.timeout(90)
def test_submit_wait_status_result_jobs(served, tmp_path):
    endpoint, token, _ = served
    graph = tmp_path / "graph.py"
    graph.write_text(GRAPH_PY)
    done = wukong("submit", str(graph), "--wait", endpoint=endpoint, token=token)
    assert done.returncode == 0, done.stderr
    job_id, value = done.stdout.splitlines()
    assert value == "(42, 42)"
    assert "4/4" in done.stderr  # the progress bar
    status = wukong("status", job_id, endpoint=endpoint, token=token)
    assert status.returncode == 0 and "succeeded" in status.stdout and "4/4 tasks" in status.stdout
    out = tmp_path / "result.pkl"
    fetched = wukong("result", job_id, "-o", str(out), endpoint=endpoint, token=token)
    assert fetched.returncode == 0 and pickle.loads(out.read_bytes()) == (42, 42)
    listed = wukong("jobs", "--json", endpoint=endpoint, token=token)
    assert job_id in listed.stdout
    # a pickle of (dsk, keys) works as FILE too; without --wait only the id is printed
    pickled = tmp_path / "graph.pkl"
    pickled.write_bytes(pickle.dumps(({"x": 1}, "x")))
    quick = wukong("submit", str(pickled), "--endpoint", endpoint, "--token", token)
    assert quick.returncode == 0 and len(quick.stdout.split()) == 1
    assert wukong("result", quick.stdout.strip(), "--wait", endpoint=endpoint, token=token).stdout.strip() == "1"


@pytest.mark.timeout(90)
def test_failures_and_cancel_exit_codes(served, tmp_path):
    endpoint, token, _ = served
    failing = tmp_path / "fail.py"
    failing.write_text("from operator import truediv\ndsk = {'z': (truediv, 1, 0)}\nkeys = 'z'\n")
    failed = wukong("submit", str(failing), "--wait", "--no-progress", endpoint=endpoint, token=token)
    assert failed.returncode == 1
    assert "ZeroDivisionError" in failed.stderr and "'z'" in failed.stderr
    job_id = failed.stdout.strip()
    assert wukong("result", job_id, endpoint=endpoint, token=token).returncode == 1
    cancelled = wukong("cancel", job_id, endpoint=endpoint, token=token)
    assert cancelled.returncode == 0 and "failed" in cancelled.stdout  # a finished job is left alone
    assert wukong("status", "no-such-job", endpoint=endpoint, token=token).returncode == 1
    assert wukong("jobs", endpoint=endpoint, token="wrong").returncode == 1
    assert wukong("jobs").returncode == 2  # no endpoint
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    assert wukong("submit", str(bad), endpoint=endpoint, token=token).returncode == 2


SLEEPY_PY = """
import time
dsk = {"a": (time.sleep, 600), "b": (time.sleep, 601)}
keys = ["a", "b"]
"""


@pytest.mark.timeout(120)
def test_ctrl_c_on_submit_wait_cancels_the_job_with_one_line_and_exit_130(served, tmp_path):
    endpoint, token, _ = served
    graph = tmp_path / "sleepy.py"
    graph.write_text(SLEEPY_PY)
    env = clean_env(WUKONG_ENDPOINT=endpoint, WUKONG_TOKEN=token)
    cli = subprocess.Popen([str(WUKONG), "submit", str(graph), "--wait", "--no-progress"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
                           start_new_session=True)  # its own process group, as a terminal gives it
    job_id = cli.stdout.readline().strip()
    deadline = time.monotonic() + 60
    while "running" not in wukong("status", job_id, endpoint=endpoint, token=token).stdout:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    time.sleep(0.5)  # the tasks are sleeping in both of the server's workers
    os.killpg(cli.pid, signal.SIGINT)
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and job_id in lines[0] and "interrupted" in lines[0], err
    assert "cancelled" in wukong("status", job_id, endpoint=endpoint, token=token).stdout
    # the sleeping tasks were stopped: both workers take the next job at once, not in 600 s
    quick = tmp_path / "quick.py"
    quick.write_text(GRAPH_PY)
    done = wukong("submit", str(quick), "--wait", "--no-progress", endpoint=endpoint, token=token)
    assert done.returncode == 0 and "(42, 42)" in done.stdout, done.stderr


@pytest.mark.timeout(90)
def test_ctrl_c_stops_the_server_cleanly():
    endpoint, token, proc = start_serve()
    try:
        assert wukong("jobs", endpoint=endpoint, token=token).returncode == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stderr.read()
        assert wukong("jobs", endpoint=endpoint, token=token).returncode == 1  # nobody listens any more
    finally:
        stop(proc)


def test_serve_help_mentions_the_token():
    proc = subprocess.run([str(WUKONG), "serve", "--help"], capture_output=True, text=True, env=clean_env(),
                          timeout=60)
    assert proc.returncode == 0
    for option in ("--host", "--port", "--token", "--workers"):
        assert option in proc.stdout
