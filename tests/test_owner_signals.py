"""However the process owning a LocalCluster ends, nothing it started outlives it for more than a
few seconds: Valkey, the KV proxy, the worker processes (mid-task too), the temporary directory.
SIGKILL runs no cleanup (the children watch for their owner's death themselves); SIGTERM shuts
down as close() does; Ctrl-C ends a job with one line on stderr and exit code 130 (the CLI's: test_cli_jobs.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import alive

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals and /proc"),
    pytest.mark.timeout(180),
]

OWNER = """
import json, os, sys, time
from wukong import LocalCluster, Client

def sleepy(marker):
    open(marker, "w").close()
    time.sleep(300)
    return 1

cluster = LocalCluster(n_workers=2, use_local_proxy=sys.argv[2] == "proxy")
pids = [s._proc.pid for s in cluster.servers] + [p.pid for p in cluster.pool.processes]
pids += [cluster.tmp._reaper.pid] + ([cluster.proxy._proc.pid] if cluster.proxy else [])
print(json.dumps({"pids": pids, "tmp": cluster.tmp.path}), flush=True)
if sys.argv[1] == "busy":
    marker = sys.argv[3]
    Client(cluster).get({"a": (sleepy, marker), "b": (sleepy, marker + "-2")}, ["a", "b"])
else:
    time.sleep(300)
"""

#: Generous: the children see their owner go at once and exit in well under a second.
GONE_WITHIN = 30.0


def start_owner(state: str, tmp_path: Path, proxy: bool = True) -> tuple[subprocess.Popen, dict, Path]:
    marker = tmp_path / "task-started"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, state, "proxy" if proxy else "no-proxy", str(marker)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )
    info = json.loads(owner.stdout.readline())
    assert info["pids"] and all(alive(p) for p in info["pids"]) and os.path.isdir(info["tmp"])
    if state == "busy":
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and owner.poll() is None, owner.stderr.read()
            time.sleep(0.05)
    return owner, info, marker


def assert_nothing_left(info: dict) -> None:
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline:
        if not any(alive(p) for p in info["pids"]) and not os.path.exists(info["tmp"]):
            return
        time.sleep(0.1)
    left = [p for p in info["pids"] if alive(p)]
    raise AssertionError(f"after {GONE_WITHIN} s: processes {left} alive, temp dir there: {os.path.exists(info['tmp'])}")


@pytest.mark.parametrize("state", ["busy", "idle"])
def test_a_sigkilled_owner_leaves_no_process_and_no_temp_dir(tmp_path, state):
    owner, info, _ = start_owner(state, tmp_path)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert_nothing_left(info)


@pytest.mark.parametrize("state", ["busy", "idle"])
def test_sigterm_shuts_the_owner_down_as_close_does(tmp_path, state):
    owner, info, _ = start_owner(state, tmp_path)
    owner.send_signal(signal.SIGTERM)
    _, err = owner.communicate(timeout=60)
    assert owner.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    assert_nothing_left(info)


def test_ctrl_c_in_python_ends_the_job_with_one_line_and_exit_130(tmp_path):
    owner, info, _ = start_owner("busy", tmp_path, proxy=False)
    os.killpg(owner.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = owner.communicate(timeout=60)
    # Python ends itself with SIGINT after an uncaught KeyboardInterrupt: the shell shows 130
    assert owner.returncode in (-signal.SIGINT, 130), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted (Ctrl-C)" in lines[0] and "cancelled" in lines[0], err
    assert_nothing_left(info)
