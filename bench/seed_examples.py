"""Runs every seed example (examples/*.py) on Wukong, Dask's threaded scheduler and dask.distributed.

    .venv/bin/python bench/seed_examples.py [--scale S] [--only NAME] [--no-peers] [--repeat N]

Each result is checked by its example (numpy, or the threaded scheduler for the randomized one) before
its time is kept. Progress goes to stderr, the table to stdout, raw numbers to bench/results/*-seed.json;
a full-size run with peers also rewrites its own section of BENCHMARKS.md. Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLES_DIR = REPO / "examples"
for folder in (HERE, EXAMPLES_DIR):  # bench's backends and report_md, and the examples with their _seed
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from backends import make_backends  # noqa: E402
from report_md import machine_facts  # noqa: E402

from wukong.report import fmt_bytes  # noqa: E402

#: In the seed document's order (the tree reduction, which it only names, first).
EXAMPLES = ("tree_reduction", "gemm", "svd", "svd_compressed", "tsqr", "qr", "cholesky", "svc")
BACKENDS = ("wukong", "threaded", "distributed")
WARMUP_SCALE = 0.02  # each example once at this size on each scheduler, untimed: imports, first calls
BEGIN = "<!-- bench/seed_examples.py: generated section begins -->"
END = "<!-- bench/seed_examples.py: generated section ends -->"
HEADING = "## The seed's examples"
INTRO = """\
Each of the seed document's workloads as a script in `examples/` (`python examples/gemm.py`), at the
seed's size; each file's docstring says where the seed's text had to change. `bench/seed_examples.py`
runs them all on the three schedulers of the table above and checks every result (numpy, or the
threaded scheduler for `svd_compressed`) before its time is kept. Reproduce with

    .venv/bin/python bench/seed_examples.py              # seed sizes, all three schedulers; rewrites this section
    .venv/bin/python bench/seed_examples.py --scale 0.1 --no-peers   # a quick check on Wukong alone
"""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_example(name: str) -> ModuleType:
    """The module ``examples/<name>.py``; ImportError (naming the pip command) when its extra is missing."""
    if name not in EXAMPLES:
        raise ValueError(f"no seed example {name!r}; there are {', '.join(EXAMPLES)}")
    return importlib.import_module(name)


def run_example(name: str, client: Any, scale: float = 1.0) -> tuple[Any, str]:
    """One example on a Wukong client, as ``python examples/<name>.py`` runs it: (result, what its check found)."""
    return load_example(name).run(client, scale=scale)


def describe(module: ModuleType) -> str:
    """The example's first docstring line: what it computes, at the seed's size."""
    return (module.__doc__ or module.__name__).strip().splitlines()[0].rstrip(".").replace("``", "`")


def timed_check(collection: Any, check: Any, backend: Any) -> dict:
    """One run on ``backend``: the compute call's wall time, then the example's check of its result."""
    gc.collect()
    t0 = time.perf_counter()
    try:
        value = backend.compute(collection)
    except Exception as exc:  # a failed job is a result to report, not a reason to stop the others
        return {"seconds": None, "passed": False, "error": f"{type(exc).__name__}: {exc}"[:500],
                "report": backend.report()}
    seconds = time.perf_counter() - t0
    report = backend.report()
    try:
        detail = check(value)
    except AssertionError as exc:
        return {"seconds": seconds, "passed": False, "error": f"wrong result: {exc}", "report": report}
    except Exception as exc:  # e.g. a result of the wrong shape that the check cannot even compare
        return {"seconds": seconds, "passed": False, "report": report,
                "error": f"the check raised {type(exc).__name__}: {exc}"[:500]}
    return {"seconds": seconds, "passed": True, "check": detail, "report": report}


def run_all(names: list[str], backends: list, scale: float, repeat: int) -> dict:
    """Every example on every backend: an untimed small warm-up, then ``repeat`` timed, checked runs."""
    runs: dict[str, dict[str, list[dict]]] = {}
    examples: dict[str, dict] = {}
    for name in names:
        module = load_example(name)
        warm_collection, warm_check = module.build(min(scale, WARMUP_SCALE))
        for b in backends:
            outcome = timed_check(warm_collection, warm_check, b)
            if not outcome["passed"]:
                progress(f"  {name:15s} {b.name:12s} warm-up FAILED: {outcome['error']}")
        collection, check = module.build(scale)
        examples[name] = {"description": describe(module), "n_tasks": len(collection.__dask_graph__())}
        runs[name] = {b.name: [] for b in backends}
        for i in range(repeat):
            # rotate the order each repeat, so drift on a shared machine hits every scheduler alike
            for b in backends[i % len(backends):] + backends[: i % len(backends)]:
                outcome = timed_check(collection, check, b)
                outcome["load_1min"] = round(os.getloadavg()[0], 2)
                runs[name][b.name].append(outcome)
                took = "failed" if outcome["seconds"] is None else f"{outcome['seconds']:8.3f} s"
                verdict = "ok" if outcome["passed"] else f"FAILED: {outcome['error']}"
                progress(f"  {name:15s} {b.name:12s} run {i + 1}/{repeat} {took}  {verdict}")
        del collection, check
    return {"examples": examples, "runs": runs}


def summarize(runs: dict) -> list[dict]:
    """One row per example: each scheduler's best time (None if any run failed) and Wukong's ratios."""
    rows = []
    for name, by_backend in runs.items():
        row: dict[str, Any] = {"example": name, "passed": True, "errors": [], "check": None}
        for bname, outcomes in by_backend.items():
            ok = all(o["passed"] for o in outcomes)
            row[f"{bname}_s"] = round(min(o["seconds"] for o in outcomes), 4) if ok else None
            row["passed"] &= ok
            row["errors"] += [f"{bname}: {o['error']}" for o in outcomes if not o["passed"]]
            if bname == "wukong" and ok:
                row["check"] = outcomes[0]["check"]
                row["wukong_kv_bytes_written"] = (outcomes[0].get("report") or {}).get("kv_bytes_written")
        for peer in ("threaded", "distributed"):
            w, p = row.get("wukong_s"), row.get(f"{peer}_s")
            row[f"wukong_vs_{peer}"] = round(w / p, 2) if w and p else None
        rows.append(row)
    return rows


def _seconds(x: float | None) -> str:
    return "failed" if x is None else f"{x:.3f}"


def _ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def _bytes(n: int | None) -> str:
    return "" if n is None else fmt_bytes(n)


def _load_range(result: dict) -> str:
    loads = [o["load_1min"] for by_b in result["runs"].values() for outs in by_b.values() for o in outs]
    return f"{min(loads):.2f}–{max(loads):.2f}" if loads else "not recorded"


def table_lines(result: dict) -> list[str]:
    """The Markdown table of one run (also what the console shows)."""
    peers = [b for b in ("threaded", "distributed") if b in result["backends"]]
    head = ["example", "workload", "tasks", "Wukong (s)", *[f"{p} (s)" for p in peers],
            *[f"Wukong / {p}" for p in peers], "Wukong KV written", "check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (2 + 2 * len(peers)) + "---|"]
    for row in result["summary"]:
        info = result["examples"][row["example"]]
        verdict = f"passed: {row['check']}" if row["passed"] else "**FAILED**: " + "; ".join(row["errors"])
        cells = [row["example"], info["description"], f"{info['n_tasks']:,}", _seconds(row.get("wukong_s")),
                 *[_seconds(row.get(f"{p}_s")) for p in peers],
                 *[_ratio(row.get(f"wukong_vs_{p}")) for p in peers], _bytes(row.get("wukong_kv_bytes_written")),
                 verdict.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    for name, reason in result["skipped"].items():
        lines.append(f"| {name} | skipped: {reason} |" + " |" * (len(head) - 2))
    return lines


def render_section(result: dict, raw_path: str) -> str:
    m = result["machine"]
    size = "the seed's sizes" if result["scale"] == 1 else f"scale {result['scale']} of the seed's sizes"
    lines = [
        BEGIN, "",
        f"Run of {m['date']} at {size}, best of {result['repeat']} timed run(s) per scheduler after an "
        f"untimed warm-up at scale {WARMUP_SCALE}; Wukong at commit {m['wukong_commit']}, "
        f"{m['cores']} cores, 1-minute load {_load_range(result)} during the timed runs (the run itself "
        f"accounts for about 2); raw numbers: `{raw_path}`.",
        "", *table_lines(result), "",
        "Schedulers: " + "; ".join(result["backends"].values()) + ". A failed run has no time; its error is "
        "in the check column.", "", END,
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace this runner's section of BENCHMARKS.md, or append it with its heading; the rest is kept."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + section + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip() + f"\n\n{HEADING}\n\n{INTRO}\n{section}\n"
    path.write_text(doc)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0,
                   help="fraction of the seed's size along each dimension (default 1.0, the seed's size)")
    p.add_argument("--only", action="append", metavar="NAME",
                   help=f"run only this example (repeatable, or comma-separated): {', '.join(EXAMPLES)}")
    p.add_argument("--no-peers", action="store_true", help="Wukong only: no threaded or distributed runs")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per example and scheduler (default 1)")
    p.add_argument("--markdown", choices=["yes", "no"], default=None,
                   help="rewrite BENCHMARKS.md's section (default: only at scale 1 with peers)")
    p.add_argument("--benchmarks-md", type=Path, default=REPO / "BENCHMARKS.md", help=argparse.SUPPRESS)
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="only rewrite BENCHMARKS.md's section from an earlier raw results file")
    args = p.parse_args(argv)
    if args.scale <= 0 or args.repeat < 1:
        p.error("--scale must be positive and --repeat at least 1")
    names = [n for item in (args.only or [",".join(EXAMPLES)]) for n in item.split(",") if n]
    unknown = sorted(set(names) - set(EXAMPLES))
    if unknown:
        p.error(f"unknown example(s) {', '.join(unknown)}; there are {', '.join(EXAMPLES)}")
    args.names = [n for n in EXAMPLES if n in names]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        result["summary"] = summarize(result["runs"])  # as this version of the runner summarizes
        write_section(args.benchmarks_md, render_section(result, str(args.render)))
        progress(f"updated {args.benchmarks_md} from {args.render}")
        return 0
    names, skipped = [], {}
    for name in args.names:
        try:
            load_example(name)
            names.append(name)
        except ImportError as exc:  # only svc has an extra; say how to install it and go on
            skipped[name] = str(exc)
            progress(f"skipping {name}: {exc}")
    if not names:  # everything asked for was skipped: nothing ran, so nothing failed
        progress("no example left to run")
        return 0
    # before any backend starts: distributed's LocalCluster changes this process's BLAS environment
    facts = machine_facts()
    started_at = datetime.now(timezone.utc)
    backend_names = ["wukong"] if args.no_peers else list(BACKENDS)
    if "distributed" in backend_names and importlib.util.find_spec("distributed") is None:
        progress("skipping dask.distributed: it is not installed (pip install -e '.[bench]')")
        backend_names.remove("distributed")
    progress(f"examples: {', '.join(names) or 'none'}; scale {args.scale}; schedulers: {', '.join(backend_names)}")
    backends = []
    try:
        for b in make_backends(backend_names):
            t0 = time.perf_counter()
            backends.append(b.start())
            progress(f"started {b.name} in {time.perf_counter() - t0:.1f} s")
        measured = run_all(names, backends, args.scale, args.repeat)
    finally:
        for b in backends:
            b.close()

    result = {"started_at": started_at.isoformat(timespec="seconds"), "scale": args.scale,
              "repeat": args.repeat, "machine": facts, "backends": {b.name: b.label for b in backends},
              "skipped": skipped, **measured}
    result["summary"] = summarize(result["runs"])
    args.results_dir.mkdir(parents=True, exist_ok=True)
    tag = "seed" if args.scale == 1 else f"seed-scale{args.scale:g}"  # quick runs are told apart by name
    raw = args.results_dir / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}-{tag}.json"
    raw.write_text(json.dumps(result, indent=2, default=str) + "\n")
    shown = raw.resolve().relative_to(REPO) if raw.resolve().is_relative_to(REPO) else raw
    print("\n".join(table_lines(result)))
    progress(f"raw results: {shown}")
    if args.markdown == "yes" or (args.markdown is None and args.scale == 1 and not args.no_peers):
        write_section(args.benchmarks_md, render_section(result, str(shown)))
        progress(f"updated {args.benchmarks_md}")
    failed = [r["example"] for r in result["summary"] if not r["passed"]]
    if failed:
        progress(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
