"""A LocalCluster's servers end with their owner: a SIGKILLed owner process (which runs no
cleanup at all) leaves no Valkey and no KV proxy behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from processes import alive

OWNER = """
import json, sys, time
from wukong import LocalCluster
cluster = LocalCluster(n_workers=1, use_local_proxy=True)
pids = [s._proc.pid for s in cluster.servers] + [cluster.proxy._proc.pid]
print(json.dumps(pids), flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.timeout(120)
def test_a_sigkilled_owner_leaves_no_redis_or_proxy_running():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(owner.stdout.readline())
        assert pids and all(alive(p) for p in pids)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 30  # generous: they get SIGTERM at once and exit in well under a second
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)]
