"""The benchmark's report: BENCHMARKS.md's generated section and its figure, from a raw result.

Runs no benchmark: a small result in the shape bench/run.py writes is rendered, so the report
code cannot rot between the (slow, manual) full runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from plots import draw, plot_path  # noqa: E402
from report_md import BEGIN, END, update_benchmarks_md  # noqa: E402

MACHINE = {"date": "2026-11-29 10:00 UTC", "cores": 2, "cpu": "test", "memory_gib": 1, "os": "linux",
           "python": "3.11", "dask": "x", "distributed": "x", "numpy": "x", "redis_py": "x",
           "redis_server": "Valkey", "wukong_commit": "abc1234", "blas_env": "unset"}


def result() -> dict:
    wukong = {"workload": "gemm", "backend": "wukong", "median_s": 3.0, "min_s": 2.9, "max_s": 3.2,
              "vs_threaded": 2.0, "vs_distributed": 1.5, "redis_ops": 100, "round_trips": 30,
              "kv_bytes_written": 800 << 20, "kv_bytes_read": 1200 << 20, "kv_share_of_outputs": 0.5,
              "executors": 68, "plan_s": 0.004, "executor_busy_s": 6.0, "task_s": 2.7}
    threaded = {"workload": "gemm", "backend": "threaded", "median_s": 1.5, "min_s": 1.4, "max_s": 1.6,
                "vs_threaded": 1.0, "vs_distributed": 0.75}
    return {"machine": MACHINE, "quick": False, "repeat": 3, "runs": {},
            "backends": {"wukong": "Wukong local", "threaded": "dask threads"},
            "workloads": {"gemm": {"description": "GEMM", "n_tasks": 176, "output_bytes": 1600 << 20}},
            "summary": [wukong, threaded]}


def test_the_generated_section_shows_the_table_and_the_figure_and_keeps_notes(tmp_path):
    raw = tmp_path / "20261129T100000Z-full.json"
    figure = draw(result(), plot_path(raw))
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\nintro kept\n\n{BEGIN}\nold table\n{END}\n\n## Notes kept\n")
    update_benchmarks_md(md, result(), raw)
    text = md.read_text()
    assert "intro kept" in text and "## Notes kept" in text and "old table" not in text
    assert f"]({figure})" in text  # the figure is embedded
    assert "| gemm | Wukong local | 3.000 | 2.900–3.200 | 2.00x | 1.50x |" in text
    assert "800.0 MB / 1.2 GB" in text and "50.0%" in text
    assert "gemm: 2.00x threaded's time (target ≤ 1.25x): **missed**" in text
