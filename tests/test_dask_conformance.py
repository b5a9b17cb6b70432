"""Dask's own tests under Wukong, the fast part: test_bag and test_delayed run in a subprocess pytest
with bench/conformance_plugin.py routing every local scheduler to Wukong, and any test that passes
under dask.multiprocessing (bench/results/conformance.json, from bench/conformance.py) must pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from conformance import FAILING, SUMMARY_PATH, known_wukong_only, plugin_env, pytest_command, read_results  # noqa: E402

# suite -> a -k expression leaving out what is too slow for CI: test_groupby_tasks_2 with 1042
# partitions is a 56,000-task shuffle (tens of seconds under Wukong); bench/conformance.py runs it
CI_SUITES = {"bag": "not (test_groupby_tasks_2 and 1042)", "delayed": None}


def _run_pytest(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=plugin_env(), capture_output=True, text=True, timeout=900)


def _tail(proc: subprocess.CompletedProcess, lines: int = 40) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scheduler", ["wukong", "native"])
def test_plugin_routes_every_local_scheduler(tmp_path, scheduler):
    """Without the routing, the suites would quietly run on Dask's sync scheduler: a task's
    process id tells where each scheduler choice really ran ("native" routes nothing)."""
    (tmp_path / "test_where.py").write_text(textwrap.dedent(f"""
        import os
        import dask
        import dask.bag as db

        def where(**compute_kwargs):
            return dask.delayed(os.getpid, pure=False)().compute(**compute_kwargs)

        def test_where():
            # Dask runs these in the caller's process, unless routed
            in_caller = [where(), where(scheduler="sync"), where(scheduler="single-threaded"),
                         where(scheduler="threads")]
            with dask.config.set(scheduler="synchronous"):
                in_caller.append(where())
            if {scheduler == "native"}:
                assert in_caller == [os.getpid()] * len(in_caller)
                return
            # unrouted, "processes" and a bag's default (dask.multiprocessing.get) would each start
            # a pool of new processes; routed, everything runs on the cluster's two workers
            elsewhere = [where(scheduler="processes"),
                         db.from_sequence([0], npartitions=1).map(lambda _: os.getpid()).compute()[0]]
            assert os.getpid() not in in_caller + elsewhere
            assert len(set(in_caller + elsewhere)) <= 2, in_caller + elsewhere
    """))
    results = tmp_path / "results.jsonl"
    proc = _run_pytest(pytest_command(["test_where.py"], scheduler, results, timeout=120, workers=2,
                                      rootdir=tmp_path), tmp_path)
    assert proc.returncode == 0, _tail(proc)
    assert [r["outcome"] for r in read_results(results).values()] == ["passed"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("suite", list(CI_SUITES))
def test_no_wukong_only_failures(tmp_path, suite):
    summary = json.loads(SUMMARY_PATH.read_text(encoding="utf-8"))
    entry = summary["suites"][suite]
    baseline = entry["not_passed"]  # tests that did not pass under some scheduler, with outcomes
    results = tmp_path / "results.jsonl"
    cmd = pytest_command([entry["path"]], "wukong", results, timeout=120, workers=2, k=CI_SUITES[suite])
    proc = _run_pytest(cmd, ROOT)
    assert proc.returncode in (0, 1), f"pytest under Wukong ended with {proc.returncode}:\n{_tail(proc)}"
    got = read_results(results)
    expected_total = sum(entry["schedulers"]["multiprocessing"]["counts"].values())
    assert len(got) >= 0.9 * expected_total, f"only {len(got)} of ~{expected_total} tests ran:\n{_tail(proc)}"

    def failed_under_multiprocessing(nodeid: str) -> bool:
        return baseline.get(nodeid, {}).get("multiprocessing", {}).get("outcome") in FAILING

    failing = {n: r for n, r in got.items() if r["outcome"] in FAILING and not failed_under_multiprocessing(n)}
    unexplained = {n: r for n, r in failing.items() if known_wukong_only(n) is None}
    assert not unexplained, "tests passing under dask.multiprocessing fail under Wukong:\n" + "\n".join(
        f"  {n}: {r['message']}" for n, r in sorted(unexplained.items()))
    fixed = sorted(n for n, r in got.items() if known_wukong_only(n) and n not in failing)
    if fixed:  # KNOWN_WUKONG_ONLY in bench/conformance.py should shrink with the fixes
        warnings.warn(f"{len(fixed)} tests listed in KNOWN_WUKONG_ONLY pass now: {fixed}", stacklevel=1)
