"""``wukong simulate``: simulate a job at cloud scale, Wukong against a centralized scheduler.

Pure computation (no Redis, no workers); the model and its sources are in docs/simulator.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import time
from pathlib import Path

from wukong.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

log = logging.getLogger("wukong.cli")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a task count or comma-separated list") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("task counts must be at least 1")
    return sizes


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        out[name.strip()] = None if value.strip().lower() == "none" else value.strip()
    return out


def build_model(args: argparse.Namespace):
    from wukong.simulate import SimModel

    fields = json.loads(Path(args.model).read_text()) if args.model else {}
    fields.update(_overrides(args.set or []))
    return SimModel.ideal(**fields) if args.ideal else SimModel(**fields)


def load_graph(path: str, model, name: str):
    """A pickled ``(dsk, keys)`` normalized like ``Client.get`` does, as a SimGraph."""
    from wukong.graph import normalize_graph
    from wukong.simulate.shapes import from_task_graph

    with open(path, "rb") as f:
        loaded = pickle.load(f)  # a graph file is code, like any Dask graph: only run trusted files
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        raise ValueError(f"{path} must hold a pickled (dsk, keys) tuple")
    graph = normalize_graph(*loaded)
    return from_task_graph(graph, model.default_task_seconds, model.default_output_bytes, name)


def cmd_simulate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from wukong.simulate import comparison_table, make_shape, simulate_central, simulate_wukong

    try:
        model = build_model(args)
    except (ValueError, ValidationError, OSError) as exc:
        log.error("bad model: %s", exc)
        return EXIT_USAGE
    runners = {"wukong": simulate_wukong, "central": simulate_central}
    chosen = list(runners) if args.scheduler == "both" else [args.scheduler]
    graphs = []
    try:
        if args.graph:
            graphs.append(load_graph(args.graph, model, Path(args.graph).name))
        else:
            for n in args.tasks:
                log.info("building a %s graph of about %s tasks", args.shape, f"{n:,}")
                graphs.append(make_shape(args.shape, n))
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        log.error("cannot build the graph: %s", exc)
        return EXIT_USAGE
    results = []
    for sim in graphs:
        row = []
        for name in chosen:
            t0 = time.perf_counter()
            row.append(runners[name](sim, model))
            log.info("simulated %s on %s (%s tasks) in %.1f s", name, sim.name, f"{len(sim):,}",
                     time.perf_counter() - t0)
        results.append(row)
    flat = [r for row in results for r in row]
    if args.out:
        from wukong.simulate.plot import plot_run, plot_sweep

        try:
            (plot_sweep if len(graphs) > 1 else plot_run)(flat, Path(args.out))
        except RuntimeError as exc:  # matplotlib missing: say how to get it
            log.error("%s", exc)
            return EXIT_FAILED
        log.info("wrote %s", args.out)
    if args.json:
        print(json.dumps({"model": model.model_dump(), "results": [r.as_dict() for r in flat]}, indent=2,
                         default=str))
    else:
        for row in results:
            print(comparison_table(row))
            print()
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    from wukong.simulate.shapes import SHAPES

    p = sub.add_parser(
        "simulate", help="simulate a job at cloud scale: Wukong vs a centralized scheduler (no AWS needed)",
        description="Discrete-event simulation of one job on AWS Lambda + Redis: Wukong's real static "
                    "schedules and executor decisions, and the same graph under a centralized scheduler "
                    "that dispatches every task. Prints makespan, storage traffic and estimated cost; "
                    "--out draws a PNG. The model and its sources: docs/simulator.md.",
        epilog="examples: wukong simulate --shape tsqr --tasks 100000 --out sim.png; "
               "wukong simulate --shape tree --tasks 1e4,1e5,1e6 --out sweep.png --json; "
               "wukong simulate --graph job.pkl --set default_task_seconds=0.05",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--shape", choices=SHAPES, default="tree", help="synthetic graph shape (default: tree)")
    src.add_argument("--graph", metavar="FILE", help="a pickled (dsk, keys) tuple instead of a synthetic shape")
    p.add_argument("--tasks", type=_sizes, default=[100_000], metavar="N[,N...]",
                   help="about how many tasks (default 100000); several sizes draw a makespan-vs-size sweep")
    p.add_argument("--scheduler", choices=("both", "wukong", "central"), default="both")
    p.add_argument("--out", metavar="PNG", help="write a plot here (needs matplotlib: pip install 'wukong[sim]')")
    p.add_argument("--json", action="store_true", help="print the model and results as JSON")
    p.add_argument("--model", metavar="JSON", help="a JSON file of SimModel fields to change")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="change one SimModel field, e.g. --set concurrency_limit=10000 (repeatable; "
                        "'none' removes a limit)")
    p.add_argument("--ideal", action="store_true",
                   help="zero latency, no limits, infinite bandwidth (makespan = critical path)")
    p.set_defaults(func=cmd_simulate)

