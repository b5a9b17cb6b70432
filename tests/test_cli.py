"""The ``wukong`` command, run as a real subprocess: help, version, exit codes, ``info``, and the
demo, which really starts Redis and worker processes and checks its results against numpy.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dask
import pytest

import wukong
from wukong.cli import relative_error_up_to_row_signs, tree_reduction_graph

WUKONG = Path(sys.executable).parent / "wukong"  # the console script pip installed into this venv
RUN_TIMEOUT = 240


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without Wukong settings, so the user's shell cannot change a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WUKONG_") and k != "REDIS_URL"}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    assert WUKONG.exists(), f"console script missing: {WUKONG}; run `pip install -e .`"
    return subprocess.run([str(WUKONG), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=env or clean_env(), timeout=RUN_TIMEOUT)


# --- pure helpers ------------------------------------------------------------------------------

def test_tree_reduction_graph_is_the_seed_sum():
    dsk, root = tree_reduction_graph(1024)
    assert len(dsk) == 2 * 1024 - 1
    assert dask.get(dsk, root) == sum(range(1024))


def test_tree_reduction_graph_rejects_non_powers_of_two():
    with pytest.raises(ValueError, match="power of two"):
        tree_reduction_graph(1000)


def test_r_comparison_ignores_row_signs_only():
    import numpy as np

    r = np.triu(np.arange(1.0, 17.0).reshape(4, 4))
    flipped = r * np.array([1.0, -1.0, 1.0, -1.0])[:, None]
    assert relative_error_up_to_row_signs(flipped, r) == 0.0
    wrong = r.copy()
    wrong[0, 3] += 1.0
    assert relative_error_up_to_row_signs(wrong, r) > 1e-3
    assert relative_error_up_to_row_signs(r[:3], r) == float("inf")


# --- the command ---------------------------------------------------------------------------------

def test_help_lists_the_commands():
    proc = run("--help")
    assert proc.returncode == 0
    assert "demo" in proc.stdout and "info" in proc.stdout
    assert proc.stdout.startswith("usage: wukong")


def test_demo_help():
    proc = run("demo", "--help")
    assert proc.returncode == 0
    for option in ("--workers", "--no-progress", "--json"):
        assert option in proc.stdout


def test_version():
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"wukong {wukong.__version__}"


@pytest.mark.parametrize(
    "args, message",
    [
        (("demo", "--bogus"), "unrecognized arguments"),
        (("demo", "--workers", "0"), "must be at least 1"),
        (("demo", "--workers", "two"), "not a whole number"),
        (("frobnicate",), "invalid choice"),
        ((), "usage: wukong"),
    ],
)
def test_usage_errors_exit_2(args, message):
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_bad_environment_setting_exits_2():
    proc = run("info", env=clean_env(WUKONG_N_WORKERS="many"))
    assert proc.returncode == 2
    assert "invalid configuration" in proc.stderr and "n_workers" in proc.stderr


def test_info_shows_config_and_redis_binary():
    proc = run("info")
    assert proc.returncode == 0
    assert f"wukong {wukong.__version__}" in proc.stdout
    binary = re.search(r"^embedded redis: (.+)$", proc.stdout, re.M).group(1)
    assert Path(binary).is_file() and os.access(binary, os.X_OK)
    assert re.search(r"^\s+payload_limit\s+= 1048576", proc.stdout, re.M)


def test_info_json_follows_environment_and_hides_passwords():
    env = clean_env(WUKONG_N_WORKERS="3", REDIS_URL="redis://:hunter2@127.0.0.1:6390")
    proc = run("info", "--json", env=env)
    assert proc.returncode == 0
    info = json.loads(proc.stdout)
    assert info["config"]["n_workers"]["value"] == 3
    assert info["config"]["redis_url"]["value"] == "redis://:***@127.0.0.1:6390"
    assert "existing server" in info["redis_binary"]
    assert "hunter2" not in proc.stdout


def test_info_takes_the_seeds_zero_workers_as_the_default():
    # the seed's LocalCluster(n_workers=0) means "no Dask workers, Lambdas do the work"
    proc = run("info", "--json", env=clean_env(WUKONG_N_WORKERS="0"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["config"]["n_workers"]["value"] == max(2, os.cpu_count() or 2)


def test_demo_runs_checks_and_prints_reports():
    proc = run("demo", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "== tree_reduction: ok" in proc.stdout
    assert "== tsqr: ok" in proc.stdout
    assert "sum(range(1024)) = 523776" in proc.stdout
    assert len(re.findall(r"^tasks\s+(\d+) run of \1 ", proc.stdout, re.M)) == 2  # every task ran
    assert len(re.findall(r"^executors\s+\d+ invoked", proc.stdout, re.M)) == 2
    # progress bars and log lines go to stderr, never stdout
    assert "task/s]" in proc.stderr
    assert "task/s]" not in proc.stdout
    assert "check tsqr: passed" in proc.stderr


def test_demo_json_report():
    proc = run("demo", "--json", "--no-progress", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # stdout holds the JSON document and nothing else
    assert doc["ok"] is True
    jobs = {job["name"]: job for job in doc["jobs"]}
    assert set(jobs) == {"tree_reduction", "tsqr"}
    assert all(job["passed"] and job["error"] is None for job in jobs.values())
    tree = jobs["tree_reduction"]["report"]
    assert tree["status"] == "succeeded"
    assert tree["n_tasks"] == tree["tasks_run"] == 2047
    assert tree["n_leaves"] == 1024
    assert tree["redis_ops"] == tree["mds_ops"] + tree["kv_ops"] > 0
    assert jobs["tsqr"]["report"]["kv_bytes_written"] > 0
    assert jobs["tsqr"]["max_relative_error"] < 1e-8
    assert "task/s]" not in proc.stderr  # --no-progress


def test_unreachable_redis_exits_1_with_one_clear_line():
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run("demo", "--no-progress", env=clean_env(REDIS_URL=f"redis://127.0.0.1:{port}"))
    assert proc.returncode == 1
    assert "RedisUnavailableError" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_exits_130_and_stops_the_embedded_redis():
    proc = subprocess.Popen([str(WUKONG), "demo", "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=clean_env())
    seen = []
    port = None
    try:
        for line in proc.stderr:
            seen.append(line)
            match = re.search(r"redis=\('127\.0\.0\.1', (\d+)\)", line)
            if match:
                port = int(match.group(1))
            if "job: tree reduction" in line:  # the cluster is up and a job is under way
                proc.send_signal(signal.SIGINT)
                break
        _, rest = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = "".join(seen) + rest
    assert port is not None, stderr
    assert proc.returncode == 130, stderr
    after = [line for line in rest.splitlines() if line.strip()]  # what the interrupt printed: one line
    assert len(after) == 1 and "interrupted" in after[0], stderr
    with socket.socket() as sock:  # the cluster's Redis server was shut down on the way out
        assert sock.connect_ex(("127.0.0.1", port)) != 0
