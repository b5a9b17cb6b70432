"""Benchmark: Wukong local mode vs Dask's threaded scheduler vs dask.distributed, in one run.

    .venv/bin/python bench/run.py [--repeat N] [--quick]

Every backend is started once, outside timing. Each workload first runs once untimed on each
backend (warm-up, still checked), then N timed repeats, rotating the backend order every repeat
so slow drift on a shared machine hits all of them alike. Every result is checked against a
reference before its time is accepted. Raw numbers go to bench/results/*.json and the summary
table into BENCHMARKS.md (between the generated-section markers; hand-written notes are kept).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backends import make_backends  # noqa: E402
from plots import draw, plot_path  # noqa: E402
from report_md import machine_facts, summarize, update_benchmarks_md  # noqa: E402
from workloads import make_workloads  # noqa: E402

BACKENDS = ["wukong", "threaded", "distributed"]
WORKLOADS = ["tree", "independent", "tsqr", "gemm", "svd"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="timed repeats per workload and backend (default 5)")
    p.add_argument("--quick", action="store_true",
                   help="small workloads (1024 leaves, TSQR 32,768 x 128), for a smoke run")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of " + ",".join(BACKENDS))
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of " + ",".join(WORKLOADS))
    p.add_argument("--markdown", default=None, choices=["yes", "no"],
                   help="write BENCHMARKS.md (default: yes for full runs, no for --quick)")
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="only rewrite BENCHMARKS.md's generated section from an earlier raw results file")
    return p.parse_args(argv)


def draw_figure(result: dict, raw: Path) -> None:
    """The run's figure beside its raw results (BENCHMARKS.md shows it); needs matplotlib."""
    try:
        print(f"figure: {shown(draw(result, plot_path(raw)))}")
    except ImportError:
        print("no figure: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)


def shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it (as BENCHMARKS.md cites it), else absolute."""
    path = path.resolve()
    return path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path


def timed_run(workload, backend) -> tuple[float, dict | None]:
    """One run: wall time of the computation alone, then the correctness check."""
    gc.collect()
    t0 = time.perf_counter()
    value = workload.run(backend)
    wall = time.perf_counter() - t0
    workload.check(value)  # raises: a wrong answer is never recorded as a time
    return wall, backend.report()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        draw_figure(result, args.render)
        update_benchmarks_md(HERE.parent / "BENCHMARKS.md", result, shown(args.render))
        print("updated BENCHMARKS.md")
        return 0
    names = [b for b in args.backends.split(",") if b]
    wanted = {w for w in args.workloads.split(",") if w}
    workloads = [w for w in make_workloads(args.quick) if w.name in wanted]
    started_at = datetime.now(timezone.utc)
    # before any backend starts: distributed's LocalCluster sets OMP_NUM_THREADS=1 etc. in this
    # process's environment for its workers, which would misreport the threaded scheduler's BLAS
    facts = machine_facts()
    print(f"backends: {names}; workloads: {[w.name for w in workloads]}; repeat {args.repeat}", flush=True)

    output_bytes = {}
    for w in workloads:
        if hasattr(w, "reference"):
            w.reference()  # computed once, outside every timing
        output_bytes[w.name] = w.output_bytes()  # all task outputs, pickled: what KV traffic is measured against

    backends = []
    try:
        for b in make_backends(names):
            t0 = time.perf_counter()
            backends.append(b.start())
            print(f"started {b.name} in {time.perf_counter() - t0:.2f} s", flush=True)

        runs: dict[str, dict[str, dict]] = {}
        for w in workloads:
            runs[w.name] = {b.name: {"warmup_seconds": None, "seconds": [], "load_1min": [], "reports": []} for b in backends}
            for b in backends:
                wall, _ = timed_run(w, b)
                runs[w.name][b.name]["warmup_seconds"] = wall
                print(f"  {w.name:5s} {b.name:12s} warm-up {wall:8.3f} s", flush=True)
            for i in range(args.repeat):
                order = backends[i % len(backends):] + backends[: i % len(backends)]
                for b in order:
                    wall, report = timed_run(w, b)
                    runs[w.name][b.name]["seconds"].append(wall)
                    # other work on a shared machine shows up here: read it next to the times
                    runs[w.name][b.name]["load_1min"].append(round(os.getloadavg()[0], 2))
                    if report is not None:
                        runs[w.name][b.name]["reports"].append(report)
                    print(f"  {w.name:5s} {b.name:12s} run {i + 1}/{args.repeat} {wall:8.3f} s", flush=True)
    finally:
        for b in backends:
            b.close()

    result = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeat": args.repeat,
        "machine": facts,
        "backends": {b.name: b.label for b in backends},
        "workloads": {w.name: {"description": w.description, "n_tasks": w.n_tasks,
                               "output_bytes": output_bytes[w.name]} for w in workloads},
        "runs": runs,
    }
    result["summary"] = summarize(result)

    args.results_dir.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else "full"
    out = args.results_dir / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}-{tag}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"raw results: {shown(out)}")
    draw_figure(result, out)

    write_md = args.markdown == "yes" or (args.markdown is None and not args.quick)
    if write_md:
        md = HERE.parent / "BENCHMARKS.md"
        update_benchmarks_md(md, result, shown(out))
        print(f"updated {shown(md)}")
    for row in result["summary"]:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
