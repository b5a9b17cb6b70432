"""Plan speed: Wukong's static schedule generation against ``dask.order`` on the same 100,000-task graphs.

For each graph (a tree reduction, TSQR and GEMM; as a legacy dict and as the graph object a Dask
collection hands a scheduler), times in one process, median of --repeat runs:

- convert: ``to_task_mapping`` (Expr/HLG/legacy -> task spec), the step both need first;
- wukong: ``normalize_graph`` + ``generate_schedules`` on the converted graph (what dask.order gets);
- wukong end to end: the same, from the graph as Dask hands it over (conversion included);
- dask.order: ``dask.order.order`` on the converted graph.

    .venv/bin/python bench/plan_speed.py [--repeat 5] [--tasks 100000] [--quick] [--no-write]

Writes its section of BENCHMARKS.md (between the plan_speed markers) unless --quick or --no-write.
"""

from __future__ import annotations

import argparse
import gc
import operator
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import dask
import dask.array as da
from dask.order import order

from wukong.graph import normalize_graph, to_task_mapping
from wukong.schedule import generate_schedules

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench/plan_speed.py: generated section begins -->"
END = "<!-- bench/plan_speed.py: generated section ends -->"


def tree_dict(n_tasks: int) -> tuple[dict, list]:
    """A hand-built legacy dict of tuples: pairwise ``operator.add`` over literal leaves."""
    n_leaves = (n_tasks + 1) // 2
    dsk: dict = {("leaf", i): i for i in range(n_leaves)}
    level, names = 0, [("leaf", i) for i in range(n_leaves)]
    while len(names) > 1:
        level += 1
        nxt = []
        for i in range(0, len(names) - 1, 2):
            key = ("add", level, i // 2)
            dsk[key] = (operator.add, names[i], names[i + 1])
            nxt.append(key)
        if len(names) % 2:
            nxt.append(names[-1])
        names = nxt
    return dsk, [names[0]]


def handed_over(*collections) -> tuple[object, list]:
    """The (graph, keys) a custom ``get`` receives for these collections in this Dask version."""
    seen = {}

    def capture(dsk, keys, **kwargs):
        seen["dsk"], seen["keys"] = dsk, keys
        return [None] * len(keys) if isinstance(keys, list) else None

    try:
        dask.compute(*collections, scheduler=capture, optimize_graph=False)
    except Exception:  # the dummy results may not unpack into arrays; the graph is captured first
        pass
    return seen["dsk"], seen["keys"]


def tree_array(n_tasks: int):
    chunks = max(2, n_tasks // 3)  # a ones chunk, its partial sum, and a tree node per chunk
    return da.ones(chunks, chunks=1).sum(split_every=2)


def tsqr_array(n_tasks: int):
    blocks = max(2, round(n_tasks / 12))  # about 12 tasks per block with Q and R requested
    q, r = da.linalg.tsqr(da.random.random((blocks * 8, 4), chunks=(8, 4)))
    return q, r


def gemm_array(n_tasks: int):
    n = max(2, round((n_tasks / 2.4) ** (1 / 3)))  # blocks per side; about 2.4 n^3 tasks
    a = da.ones((2 * n, 2 * n), chunks=(2, 2))
    return (a @ a.T,)


def workloads(n_tasks: int):
    """(name, form, graph, keys) for each graph and form."""
    dsk, keys = tree_dict(n_tasks)
    yield "tree (pairwise add)", "legacy dict of tuples", dsk, keys
    for name, build in (("tree (da.sum, split_every=2)", lambda: (tree_array(n_tasks),)),
                        ("TSQR (da.linalg.tsqr, Q and R)", lambda: tsqr_array(n_tasks)),
                        ("GEMM (A @ A.T, 2x2 blocks)", lambda: gemm_array(n_tasks))):
        graph, keys = handed_over(*build())
        yield name, f"{type(graph).__name__} (as handed to get)", graph, keys
        yield name, "materialized dict", dict(to_task_mapping(graph)), keys


def timed(fns: dict, repeat: int) -> dict[str, tuple[float, float, float]]:
    """(median, min, max) seconds of each function; the runs interleave, in an order that rotates
    every round, so drift in the shared machine's load hits every function alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeat):
        for name in names[i % len(names):] + names[:i % len(names)]:
            gc.collect()
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), min(t), max(t)) for name, t in times.items()}


def measure(n_tasks: int, repeat: int) -> list[dict]:
    rows = []
    for name, form, graph, keys in workloads(n_tasks):
        converted = to_task_mapping(graph)
        n = len(normalize_graph(converted, keys))
        print(f"{name} [{form}]: {n:,} tasks", file=sys.stderr, flush=True)
        row = {"graph": name, "form": form, "tasks": n}
        row.update(timed({
            "convert": lambda: to_task_mapping(graph),
            "wukong": lambda: generate_schedules(normalize_graph(converted, keys)),
            "wukong_e2e": lambda: generate_schedules(normalize_graph(graph, keys)),
            "order": lambda: order(converted),
        }, repeat))
        print(f"  wukong {row['wukong'][0]:.3f} s, end to end {row['wukong_e2e'][0]:.3f} s, "
              f"dask.order {row['order'][0]:.3f} s", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def section(rows: list[dict], repeat: int, load: tuple[float, float]) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        BEGIN, "",
        f"Run of {when}: median (min–max) of {repeat} runs each, interleaved, one process "
        "(`bench/plan_speed.py`).", "",
        "| graph | form handed over | tasks | convert (s) | Wukong plan (s) | dask.order (s) | "
        "Wukong / order | Wukong end to end (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["wukong"][0] / r["order"][0]
        out.append(f"| {r['graph']} | {r['form']} | {r['tasks']:,} | {r['convert'][0]:.3f} | "
                   f"{r['wukong'][0]:.3f} ({r['wukong'][1]:.3f}–{r['wukong'][2]:.3f}) | "
                   f"{r['order'][0]:.3f} ({r['order'][1]:.3f}–{r['order'][2]:.3f}) | {ratio:.2f}x | "
                   f"{r['wukong_e2e'][0]:.3f} |")
    per_task = statistics.median(r["wukong"][0] / r["tasks"] for r in rows)
    out += [
        "",
        "- **Wukong plan** = `normalize_graph` (cull, topological numbering) + `generate_schedules` on "
        "the converted task-spec graph, the same mapping `dask.order.order` gets. **End to end** starts "
        "from the graph as handed over, so it includes the conversion.",
        f"- Median planning cost: {per_task * 1e6:.1f} µs per task (compare the simulator's `plan_seconds_per_task`).",
        f"- Machine: {os.cpu_count()} cores, Python {platform.python_version()}, dask {dask.__version__}; "
        f"1-minute load average {load[0]:.2f}–{load[1]:.2f} during the runs. The machine is shared with "
        "other sessions' test suites, so absolute times are noisy; the ratio compares runs made side by side.",
        "", END,
    ]
    return "\n".join(out)


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n## Plan speed\n\n" + text + "\n"
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 tasks, 2 runs, BENCHMARKS.md untouched")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.repeat, args.no_write = 10_000, 2, True
    warnings.simplefilter("ignore")  # dask's PerformanceWarning about many chunks is the point here
    load0 = os.getloadavg()[0]
    rows = measure(args.tasks, args.repeat)
    load = (min(load0, os.getloadavg()[0]), max(load0, os.getloadavg()[0]))
    text = section(rows, args.repeat, load)
    print(text)
    if not args.no_write:
        write_section(text)
    for r in rows:
        if r["wukong"][0] > r["order"][0]:
            print(f"slower than dask.order: {r['graph']} [{r['form']}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
