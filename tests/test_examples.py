"""The seed examples (examples/*.py) at a tiny scale on the session's Wukong cluster, through the runner.

Each example's own check must pass on Wukong's result and fail on a corrupted one; the runner's
command line is run once end to end (Wukong only) into a scratch BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import seed_examples  # noqa: E402  (puts examples/ on sys.path too)

TINY = 0.05  # of the seed's size along each dimension; the block grids stay the seed's (at 0.02 Dask
# blocks svd_compressed's sketch differently, so its graph would not be the seed's)
HAS_EXAMPLES_EXTRA = all(importlib.util.find_spec(m) for m in ("sklearn", "dask_ml"))


def needs_extra(name: str) -> list:
    if name != "svc":
        return []
    return [pytest.mark.skipif(not HAS_EXAMPLES_EXTRA,
                               reason="svc needs the examples extra: pip install -e '.[examples]'")]


EXAMPLES = [pytest.param(name, marks=needs_extra(name)) for name in seed_examples.EXAMPLES]


def corrupted(value):
    """A wrong answer of the same type and shape: every check must reject it."""
    if isinstance(value, np.ndarray):
        wrong = value.copy()
        wrong.flat[0] = wrong.flat[0] + 1  # one element off, enough for predictions and factors alike
        return wrong
    return value + 1


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_runs_on_wukong_and_its_check_rejects_a_wrong_answer(client, name):
    result, detail = seed_examples.run_example(name, client, scale=TINY)
    assert client.last_report.status == "succeeded"
    assert isinstance(detail, str) and detail
    _, check = seed_examples.load_example(name).build(TINY)
    with pytest.raises(AssertionError):
        check(corrupted(result))


def test_the_examples_keep_the_seed_sizes_by_default():
    z, _ = seed_examples.load_example("gemm").build()
    assert z.shape == (10_000, 10_000) and z.chunksize == (2_000, 2_000)
    r, _ = seed_examples.load_example("tsqr").build()
    assert r.shape == (128, 128)


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_quick_run_has_the_seed_sizes_task_graph(name):
    # the scale shrinks the chunks, never the number of blocks, so a tiny run tests the seed's graph
    module = seed_examples.load_example(name)
    seed_graph, tiny_graph = (module.build(scale)[0].__dask_graph__() for scale in (1.0, TINY))
    assert len(tiny_graph) == len(seed_graph)


def test_the_seeds_square_chunked_qr_is_rejected_by_dask_as_the_example_says():
    qr = seed_examples.load_example("qr")
    assert "tall-and-skinny" in qr.seed_chunks_rejected()


def test_runner_runs_checks_writes_json_and_its_own_benchmarks_section(tmp_path, capsys):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nHand-written notes stay.\n")
    argv = ["--scale", str(TINY), "--only", "qr,cholesky", "--no-peers", "--markdown", "yes",
            "--results-dir", str(tmp_path), "--benchmarks-md", str(md)]
    assert seed_examples.main(argv) == 0
    (raw,) = tmp_path.glob("*-seed-scale*.json")
    result = json.loads(raw.read_text())
    assert [r["example"] for r in result["summary"]] == ["qr", "cholesky"]
    assert all(r["passed"] and r["wukong_s"] > 0 for r in result["summary"])
    text = md.read_text()
    assert "Hand-written notes stay." in text and text.count(seed_examples.BEGIN) == 1
    assert "| qr |" in text and "| cholesky |" in text
    assert "| qr |" in capsys.readouterr().out
    # re-rendering (or a later run) replaces the section instead of adding another
    assert seed_examples.main(["--render", str(raw), "--benchmarks-md", str(md)]) == 0
    text = md.read_text()
    assert text.count(seed_examples.BEGIN) == 1 and "| qr |" in text and "Hand-written notes stay." in text


def test_a_failed_run_has_no_time_and_fails_the_row():
    ok = {"seconds": 1.0, "passed": True, "check": "fine"}
    failed = {"seconds": None, "passed": False, "error": "WukongError: value too large"}
    summary = seed_examples.summarize({"gemm": {"wukong": [failed], "threaded": [ok]},
                                       "qr": {"wukong": [ok], "threaded": [ok]}})
    gemm, qr = summary
    assert not gemm["passed"] and gemm["wukong_s"] is None and gemm["wukong_vs_threaded"] is None
    assert gemm["errors"] == ["wukong: WukongError: value too large"]
    assert qr["passed"] and qr["wukong_vs_threaded"] == 1.0


def test_wukong_demo_seed_runs_the_examples(tmp_path):
    wukong = Path(sys.executable).with_name("wukong")
    proc = subprocess.run([str(wukong), "demo", "--seed", "--scale", str(TINY), "--only", "qr", "--no-peers",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "| qr |" in proc.stdout and "passed: R is" in proc.stdout
    assert len(list(tmp_path.glob("*-seed-scale*.json"))) == 1


def test_wukong_demo_seed_flags_without_seed_are_a_usage_error():
    wukong = Path(sys.executable).with_name("wukong")
    proc = subprocess.run([str(wukong), "demo", "--only", "qr"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "go with --seed" in proc.stderr


def test_without_the_examples_extra_svc_is_skipped_with_the_pip_command():
    # a fresh interpreter in which sklearn cannot be imported, as on a machine without the extra
    code = ("import sys; sys.modules['sklearn'] = None; sys.path.insert(0, sys.argv[1]); "
            "import seed_examples; sys.exit(seed_examples.main(['--only', 'svc', '--no-peers']))")
    proc = subprocess.run([sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "skipping svc" in proc.stderr and "pip install -e '.[examples]'" in proc.stderr
