"""The results table and plots of docs/simulator.md: every shape at 10k, 100k and 1M tasks.

    .venv/bin/python bench/sim_table.py [--sizes 10000,100000,1000000] [--img docs/img]

Prints a Markdown table on stdout; writes a size sweep plot per shape and a run plot per shape at
the middle size into --img. Pure simulation: no wall-clock measurement, safe on a busy machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from wukong.report import fmt_bytes
from wukong.simulate import SHAPES, SimModel, make_shape, simulate_central, simulate_wukong
from wukong.simulate.plot import plot_run, plot_sweep
from wukong.simulate.report import fmt_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--img", default="docs/img")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    img = Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    model = SimModel()
    print("| shape | tasks | scheduler | makespan | vs critical path | Lambdas (cold) | storage ops | "
          "storage bytes | GB-s | SFN transitions | est. cost |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        sweep = []
        for n in sizes:
            sim = make_shape(shape, n)
            pair = []
            for run in (simulate_wukong, simulate_central):
                t0 = time.perf_counter()
                r = run(sim, model)
                print(f"{shape} {len(sim):,} {r.scheduler}: {time.perf_counter() - t0:.1f} s to simulate",
                      file=sys.stderr, flush=True)
                pair.append(r)
                print(f"| {shape} | {r.n_tasks:,} | {r.scheduler} | {fmt_seconds(r.makespan)} | "
                      f"{r.makespan / r.critical_path:.1f}x | {r.executors:,} ({r.cold_starts:,}) | "
                      f"{r.storage_ops:,} | {fmt_bytes(r.storage_bytes)} | {r.gb_seconds:,.0f} | "
                      f"{r.sfn_transitions:,} | ${r.total_cost:.3f} |", flush=True)
            if n == sizes[len(sizes) // 2]:
                plot_run(pair, img / f"sim-{shape}-{n // 1000}k.png")
            for r in pair:  # the sweep plot needs no per-task times: free them
                r.start, r.finish, r.runs = [], [], []
            sweep += pair
            del sim, pair
        plot_sweep(sweep, img / f"sim-{shape}-sweep.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
