"""Machine facts, medians and ratios, and the generated section of BENCHMARKS.md.

Only the part of BENCHMARKS.md between the two markers below is rewritten by a run; the
hand-written analysis around it is kept as it is.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from plots import plot_path

from wukong.report import fmt_bytes

REPO = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench/run.py: generated section begins -->"
END = "<!-- bench/run.py: generated section ends -->"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _redis_server() -> str:
    try:
        from wukong.local.redis_server import find_redis_binary

        out = subprocess.run([find_redis_binary(), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().split(" sha=")[0]
    except Exception as exc:  # facts are informative; a missing one must not lose a run
        return f"unknown ({type(exc).__name__})"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "shared/wukong"], capture_output=True,
                               text=True, cwd=Path(__file__).parent.parent, timeout=10).stdout.strip()
        return out.stdout.strip() + (" (+ uncommitted changes in shared/wukong)" if dirty else "")
    except Exception:
        return "unknown"


def machine_facts() -> dict:
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _mem_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "dask": _version("dask"),
        "distributed": _version("distributed"),
        "numpy": _version("numpy"),
        "redis_py": _version("redis"),
        "redis_server": _redis_server(),
        "wukong_commit": _git_commit(),
        "blas_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                     if k in os.environ} or "unset (BLAS picks its own thread count)",
        "load_1min_at_start": round(os.getloadavg()[0], 2),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def summarize(result: dict) -> list[dict]:
    """One row per (workload, backend): median, min, max, ratios, and Wukong's report medians."""
    rows = []
    for wname, by_backend in result["runs"].items():
        medians = {b: statistics.median(r["seconds"]) for b, r in by_backend.items() if r["seconds"]}
        for bname, r in by_backend.items():
            if not r["seconds"]:
                continue
            med = medians[bname]
            row = {
                "workload": wname,
                "backend": bname,
                "median_s": round(med, 4),
                "min_s": round(min(r["seconds"]), 4),
                "max_s": round(max(r["seconds"]), 4),
                "vs_threaded": round(med / medians["threaded"], 2) if "threaded" in medians else None,
                "vs_distributed": round(med / medians["distributed"], 2) if "distributed" in medians else None,
            }
            if r["reports"]:
                reps = r["reports"]
                row["redis_ops"] = int(statistics.median(x["redis_ops"] for x in reps))
                row["round_trips"] = int(statistics.median(x["round_trips"] for x in reps))
                row["kv_bytes_written"] = int(statistics.median(x["kv_bytes_written"] for x in reps))
                row["kv_bytes_read"] = int(statistics.median(x["kv_bytes_read"] for x in reps))
                out = result["workloads"][wname].get("output_bytes")
                if out:
                    row["kv_share_of_outputs"] = round(row["kv_bytes_written"] / out, 4)
                row["executors"] = int(statistics.median(x["executors_invoked"] for x in reps))
                row["plan_s"] = round(statistics.median(x["plan_seconds"] for x in reps), 4)
                row["executor_busy_s"] = round(statistics.median(x["executor_seconds"] for x in reps), 3)
                row["task_s"] = round(statistics.median(x["task_seconds"] for x in reps), 3)
            rows.append(row)
    return rows


#: Tiny-task workloads are judged against distributed, the seed workloads against threads.
TINY = ("tree", "independent")
SEED = ("tsqr", "gemm", "svd")


def target_lines(summary: list[dict]) -> list[str]:
    """One line per issue-5 target: the measured value and whether it was met."""
    wk = {r["workload"]: r for r in summary if r["backend"] == "wukong"}
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    for name in TINY:
        r = wk.get(name)
        if r and r.get("vs_distributed") is not None:
            lines.append(f"- {name}: {r['vs_distributed']:.2f}x distributed's time (target ≤ 0.5x): "
                         f"{verdict(r['vs_distributed'] <= 0.5)}")
    for name in SEED:
        r = wk.get(name)
        if r and r.get("vs_threaded") is not None:
            lines.append(f"- {name}: {r['vs_threaded']:.2f}x threaded's time (target ≤ 1.25x): "
                         f"{verdict(r['vs_threaded'] <= 1.25)}")
    r = wk.get("tsqr")
    if r and r.get("kv_share_of_outputs") is not None:
        share = r["kv_share_of_outputs"]
        lines.append(f"- tsqr: KV bytes written are {100 * share:.1f}% of all output bytes (target ≤ 10%): "
                     f"{verdict(share <= 0.10)}")
    return lines or ["- (no Wukong rows in this run)"]


def _ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def _load_range(result: dict) -> str:
    loads = [x for by_b in result["runs"].values() for r in by_b.values() for x in r.get("load_1min", [])]
    return f"{min(loads):.2f}–{max(loads):.2f}" if loads else "not recorded"


def render_section(result: dict, raw_path: Path) -> str:
    m = result["machine"]
    lines = [
        BEGIN,
        "",
        f"Run of {m['date']} ({'quick' if result['quick'] else 'full'} sizes, {result['repeat']} timed "
        f"repeats each, after one warm-up run; every result checked against its reference before its "
        f"time was kept); raw numbers: `{raw_path}`.",
        "",
        "| workload | scheduler | median (s) | min–max (s) | vs threaded | vs distributed "
        "| Wukong Redis ops (round trips) | Wukong KV bytes written / read | KV written / all outputs "
        "| Wukong executors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["summary"]:
        w = row["workload"]
        extra = ["", "", "", ""]
        if "redis_ops" in row:
            share = row.get("kv_share_of_outputs")
            extra = [
                f"{row['redis_ops']:,} ({row['round_trips']:,})",
                f"{fmt_bytes(row['kv_bytes_written'])} / {fmt_bytes(row['kv_bytes_read'])}",
                "" if share is None else f"{100 * share:.1f}%",
                f"{row['executors']:,}",
            ]
        lines.append(
            f"| {w} | {result['backends'][row['backend']]} | {row['median_s']:.3f} "
            f"| {row['min_s']:.3f}–{row['max_s']:.3f} | {_ratio(row['vs_threaded'])} "
            f"| {_ratio(row['vs_distributed'])} | " + " | ".join(extra) + " |"
        )
    figure = plot_path(raw_path)
    if (REPO / figure).exists():
        lines += ["", f"![Median wall times and Wukong's KV traffic in this run]({figure})"]
    lines += ["", "Workloads:", ""]
    for name, w in result["workloads"].items():
        out = f", {fmt_bytes(w['output_bytes'])} of task outputs (pickled)" if w.get("output_bytes") else ""
        lines.append(f"- **{name}**: {w['description']}; {w['n_tasks']:,} tasks in the graph handed over{out}.")
    lines += ["", "Targets (issue 5):", "", *target_lines(result["summary"])]
    wk = [r for r in result["summary"] if "plan_s" in r]
    if wk:
        lines += ["", "Wukong job-report medians (planning is client-side and inside the wall time; "
                  "executor busy time is summed over all executors):", ""]
        for r in wk:
            lines.append(f"- {r['workload']}: planning {r['plan_s']:.3f} s, executors busy "
                         f"{r['executor_busy_s']:.2f} s, inside tasks {r['task_s']:.2f} s")
    lines += [
        "",
        "Machine:",
        "",
        f"- {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['os']}",
        f"- Python {m['python']}, dask {m['dask']}, distributed {m['distributed']}, numpy {m['numpy']}, "
        f"redis-py {m['redis_py']}, {m['redis_server']}",
        f"- Wukong at commit {m['wukong_commit']}",
        f"- BLAS threads in the benchmark process (the threaded scheduler's): {m.get('blas_env', '?')}; "
        "Wukong's and distributed's worker processes pin BLAS to 1 thread each",
        f"- 1-minute load average during the timed runs: {_load_range(result)} (the benchmark itself "
        "accounts for about 2; more means other work on the machine)",
        "",
        END,
    ]
    return "\n".join(lines)


TEMPLATE = """# Benchmarks

How to reproduce: `.venv/bin/python bench/run.py` (`--repeat N`, default 5; `--quick` for a smoke run
with small sizes that leaves this file alone).

## Latest results

{section}
"""


def update_benchmarks_md(path: Path, result: dict, raw_path: Path) -> None:
    section = render_section(result, raw_path)
    if path.exists() and BEGIN in (text := path.read_text()) and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        path.write_text(head + section + tail)
    else:
        path.write_text(TEMPLATE.format(section=section))
