"""``wukong demo``: the seed's tree reduction and TSQR on the embedded default, checked against numpy.

Reports go to stdout (or one JSON document with ``--json``); progress bars and logs go to stderr.
``wukong demo --seed`` runs all of the seed's examples instead, through bench/seed_examples.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import operator
import time
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from wukong.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, positive_int

log = logging.getLogger("wukong.cli")

TREE_LEAVES = 1024
TSQR_SHAPE = (262_144, 128)
TSQR_CHUNKS = (8192, 128)


# --- demo workloads --------------------------------------------------------------------------

@dataclass
class DemoResult:
    """One demo job: whether its result matched numpy, and Wukong's report of it."""

    name: str
    passed: bool
    detail: str
    report: Any = None  # wukong.report.JobReport, or None when the job raised
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "error": self.error,
            "report": None if self.report is None else self.report.as_dict(),
            **self.extra,
        }


def tree_reduction_graph(n: int = TREE_LEAVES) -> tuple[dict, tuple]:
    """The seed's tree reduction: ``n`` numbers added pairwise, level by level, as a plain dict graph.

    Returns ``(dsk, root_key)``. ``n`` must be a power of two.
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"tree reduction needs a power of two leaves, got {n}")
    dsk: dict = {("leaf", i): i for i in range(n)}
    level, width, names = 0, n, [("leaf", i) for i in range(n)]
    while width > 1:
        level += 1
        width //= 2
        nxt = [("add", level, i) for i in range(width)]
        for i, key in enumerate(nxt):
            dsk[key] = (operator.add, names[2 * i], names[2 * i + 1])
        names = nxt
    return dsk, names[0]


def run_tree_reduction(client: Any) -> DemoResult:
    dsk, root = tree_reduction_graph(TREE_LEAVES)
    expected = sum(range(TREE_LEAVES))
    got = client.get(dsk, root)
    passed = got == expected
    return DemoResult(
        name="tree_reduction",
        passed=passed,
        detail=f"sum(range({TREE_LEAVES})) = {got}, numpy/python says {expected}",
        report=client.last_report,
    )


def run_tsqr(client: Any) -> DemoResult:
    import dask.array as da
    import numpy as np

    X = da.random.random(TSQR_SHAPE, chunks=TSQR_CHUNKS)
    _, r = da.linalg.tsqr(X)
    r_wukong = r.compute(scheduler=client.get)
    report = client.last_report
    # The random chunks' seeds are fixed in the graph, so the synchronous scheduler rebuilds
    # exactly the matrix Wukong factorized; numpy's R is then the reference.
    x_np = X.compute(scheduler="sync")
    r_numpy = np.linalg.qr(x_np, mode="r")
    del x_np
    error = relative_error_up_to_row_signs(r_wukong, r_numpy)
    passed = r_wukong.shape == r_numpy.shape and error < 1e-8
    return DemoResult(
        name="tsqr",
        passed=passed,
        detail=f"R is {r_wukong.shape[0]}x{r_wukong.shape[1]}; max relative difference to numpy's R "
               f"(up to row signs) = {error:.2e}",
        report=report,
        extra={"max_relative_error": error},
    )


def relative_error_up_to_row_signs(r_a: Any, r_b: Any) -> float:
    """QR's R is unique only up to the sign of each row: flip rows so diagonals are positive, compare."""
    import numpy as np

    if r_a.shape != r_b.shape:
        return float("inf")
    a = r_a * np.where(np.diag(r_a) < 0, -1.0, 1.0)[:, None]
    b = r_b * np.where(np.diag(r_b) < 0, -1.0, 1.0)[:, None]
    scale = float(np.abs(b).max()) or 1.0
    return float(np.abs(a - b).max() / scale)


DEMO_JOBS: tuple[tuple[str, Callable[[Any], DemoResult]], ...] = (
    ("tree reduction of range(1024)", run_tree_reduction),
    (f"TSQR {TSQR_SHAPE[0]:,} x {TSQR_SHAPE[1]}, chunks {TSQR_CHUNKS}", run_tsqr),
)


#: The seed examples' runner lives in the source checkout, beside examples/, not in the package.
SEED_RUNNER = Path(__file__).resolve().parents[3] / "bench" / "seed_examples.py"


def run_seed_examples(args: argparse.Namespace) -> int:
    """``wukong demo --seed``: bench/seed_examples.py with the same flags (it prints its own table)."""
    import importlib.util

    if not SEED_RUNNER.exists():
        log.error("--seed needs a source checkout of wukong (an editable install): %s is missing", SEED_RUNNER)
        return EXIT_FAILED
    spec = importlib.util.spec_from_file_location("seed_examples", SEED_RUNNER)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    argv = ["--scale", str(args.scale)] + [f"--only={name}" for name in args.only or []]
    if args.results_dir is not None:
        argv += ["--results-dir", args.results_dir]
    return runner.main(argv + (["--no-peers"] if args.no_peers else []))


def cmd_demo(args: argparse.Namespace) -> int:
    from wukong import Client, LocalCluster

    if args.seed:
        return run_seed_examples(args)
    if args.only or args.no_peers or args.scale != 1.0:
        log.error("--scale, --only and --no-peers go with --seed")
        return EXIT_USAGE

    settings = {} if args.workers is None else {"n_workers": args.workers}
    results: list[DemoResult] = []
    log.info("starting a LocalCluster (Redis + local executor processes)")
    t0 = time.perf_counter()
    with LocalCluster(**settings) as cluster:
        log.info("cluster up in %.1f s: %r", time.perf_counter() - t0, cluster)
        client = Client(cluster, progress=not args.no_progress)
        for title, job in DEMO_JOBS:
            log.info("job: %s", title)
            try:
                result = job(client)
            except Exception as exc:  # a task's own exception or a WukongError: the job failed
                result = DemoResult(name=job.__name__.removeprefix("run_"), passed=False,
                                    detail="the job raised", report=client.last_report,
                                    error=f"{type(exc).__name__}: {exc}")
            results.append(result)
            _print_result(result, as_json=args.json)
    ok = all(r.passed for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "jobs": [r.as_dict() for r in results]}, indent=2))
    for r in results:
        (log.info if r.passed else log.error)("check %s: %s (%s)", r.name, "passed" if r.passed else "FAILED",
                                               r.error or r.detail)
    return EXIT_OK if ok else EXIT_FAILED


def _print_result(result: DemoResult, as_json: bool) -> None:
    if as_json:  # the JSON document is printed once, at the end
        return
    status = "ok" if result.passed else "FAILED"
    print(f"== {result.name}: {status}")
    print(f"check  {result.error or result.detail}")
    if result.report is not None:
        print(result.report.summary())
    print(flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="run the seed's tree reduction and TSQR locally and check them against numpy",
        description="Start a LocalCluster (embedded Redis + worker processes), run the tree reduction of "
                    "range(1024) and TSQR of a 262,144 x 128 matrix, check both against numpy, and print "
                    "each job's report.",
    )
    demo.add_argument("--workers", type=positive_int, default=None, metavar="N",
                      help="local executor processes (default: WUKONG_N_WORKERS or max(2, CPUs))")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    demo.add_argument("--json", action="store_true", help="print the results and reports as one JSON document")
    seed = demo.add_argument_group(
        "the seed's examples", "--seed runs every script in examples/ (bench/seed_examples.py, from a source "
        "checkout) on Wukong, Dask's threaded scheduler and dask.distributed, checking each result")
    seed.add_argument("--seed", action="store_true", help="run the seed's examples instead of the two jobs above")
    seed.add_argument("--scale", type=float, default=1.0, metavar="S",
                      help="fraction of the seed's sizes along each dimension (default 1.0)")
    seed.add_argument("--only", action="append", metavar="NAME", help="only this example (repeatable)")
    seed.add_argument("--no-peers", action="store_true", help="Wukong only, no threaded or distributed runs")
    seed.add_argument("--results-dir", default=None, help=argparse.SUPPRESS)  # tests keep bench/results clean
    demo.set_defaults(func=cmd_demo)
