"""The ``wukong`` command line: ``wukong demo`` runs the seed's workloads on the embedded default,
``wukong info`` shows the configuration and which Redis server would be started.

Results and reports go to stdout; progress bars and log messages go to stderr, so
``wukong demo --json > report.json`` captures only the reports. Exit codes: 0 success, 1 a job
failed or a result did not match numpy, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import operator
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("wukong.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

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


def cmd_demo(args: argparse.Namespace) -> int:
    from wukong import Client, LocalCluster

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


# --- info ------------------------------------------------------------------------------------

_SECRET_FIELDS = {"redis_password"}


def cmd_info(args: argparse.Namespace) -> int:
    from wukong import WukongConfig, __version__
    from wukong.errors import RedisUnavailableError
    from wukong.local.redis_server import find_redis_binary

    config = WukongConfig()  # defaults, as changed by WUKONG_* / REDIS_URL in this environment
    values = {}
    for name, info in WukongConfig.model_fields.items():
        value = getattr(config, name)
        if name in _SECRET_FIELDS and value is not None:
            value = "<set>"
        if name == "redis_url" and value:
            value = _redact_url(value)
        values[name] = {"value": value, "description": info.description or ""}
    if config.uses_external_redis:
        redis_line = "none started: an existing server is configured (redis_endpoints / REDIS_URL)"
    else:
        try:
            redis_line = find_redis_binary()
        except RedisUnavailableError as exc:
            redis_line = f"NOT FOUND: {exc}"
    if args.json:
        print(json.dumps({"version": __version__, "redis_binary": redis_line, "config": values},
                         indent=2, default=str))
        return EXIT_OK
    print(f"wukong {__version__}")
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    print(f"embedded redis: {redis_line}")
    print("configuration (explicit arguments > WUKONG_* environment > defaults):")
    width = max(len(n) for n in values)
    for name, entry in values.items():
        line = f"  {name:<{width}} = {entry['value']!r}"
        if entry["description"]:
            line += f"    # {entry['description']}"
        print(line)
    return EXIT_OK


def _redact_url(url: str) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


# --- argument parsing ------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from wukong import __version__

    parser = argparse.ArgumentParser(
        prog="wukong",
        description="Wukong runs Dask task graphs with decentralized, locality-aware scheduling: "
                    "locally on embedded Redis and worker processes, later on AWS Lambda.",
        epilog="Exit codes: 0 success, 1 a job or check failed, 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"wukong {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="run the seed's tree reduction and TSQR locally and check them against numpy",
        description="Start a LocalCluster (embedded Redis + worker processes), run the tree reduction of "
                    "range(1024) and TSQR of a 262,144 x 128 matrix, check both against numpy, and print "
                    "each job's report.",
    )
    demo.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                      help="local executor processes (default: WUKONG_N_WORKERS or max(2, CPUs))")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    demo.add_argument("--json", action="store_true", help="print the results and reports as one JSON document")
    demo.set_defaults(func=cmd_demo)

    info = sub.add_parser("info", help="show the configuration defaults and the Redis binary that would be used",
                          description="Show Wukong's configuration as this environment sets it, and which "
                                      "Redis server binary a LocalCluster would start.")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=cmd_info)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("wukong: %(levelname)s %(message)s" if verbose else "wukong: %(message)s"))
    root = logging.getLogger("wukong")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.verbose, args.quiet)
    from pydantic import ValidationError

    from wukong.errors import WukongError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except ValidationError as exc:  # e.g. a WUKONG_* environment variable with a bad value
        log.error("invalid configuration: %s", exc)
        return EXIT_USAGE
    except WukongError as exc:  # e.g. Redis unreachable: one clear line, not a traceback
        log.error("%s: %s", type(exc).__name__, exc)
        return EXIT_FAILED
    except BrokenPipeError:
        # stdout was closed early (`wukong info | head`): silence the flush at exit, too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
