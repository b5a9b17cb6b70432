"""The benchmark's figure: median wall time per workload and scheduler, and Wukong's KV traffic
against all task-output bytes. Drawn from a raw results file, next to it, as a PNG.

    .venv/bin/python bench/plots.py bench/results/<stamp>-full.json   # bench/run.py calls this itself
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLORS = {"wukong": "#c0392b", "threaded": "#7f8c8d", "distributed": "#2471a3"}


def plot_path(raw_path: Path) -> Path:
    """Where the figure of ``raw_path`` goes: beside it, same stem."""
    return raw_path.with_suffix(".png")


def draw(result: dict, out: Path) -> Path:
    """Write the two-panel figure of one run to ``out``; needs matplotlib (the bench extra)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    rows = result["summary"]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    backends = [b for b in result["backends"] if any(r["backend"] == b for r in rows)]
    fig, (times, traffic) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})

    width = 0.8 / max(1, len(backends))
    for i, backend in enumerate(backends):
        xs, med, lo, hi = [], [], [], []
        for j, w in enumerate(workloads):
            row = next((r for r in rows if r["workload"] == w and r["backend"] == backend), None)
            if row is None:
                continue
            xs.append(j + (i - (len(backends) - 1) / 2) * width)
            med.append(row["median_s"])
            lo.append(row["median_s"] - row["min_s"])
            hi.append(row["max_s"] - row["median_s"])
        times.bar(xs, med, width, yerr=[lo, hi], capsize=2, label=result["backends"][backend],
                  color=COLORS.get(backend))
    times.set_yscale("log")
    times.set_xticks(range(len(workloads)), workloads)
    times.set_ylabel("median wall time (s, log scale; bars: min-max)")
    times.set_title("Wall time per workload")
    times.legend(fontsize=8)

    wk = [r for r in rows if r["backend"] == "wukong" and "kv_bytes_written" in r]
    names = [r["workload"] for r in wk]
    total = [result["workloads"][n].get("output_bytes") or 0 for n in names]
    series = [("all task outputs", total, "#bdc3c7"),
              ("KV written", [r["kv_bytes_written"] for r in wk], COLORS["wukong"]),
              ("KV read", [r["kv_bytes_read"] for r in wk], "#e59866")]
    for i, (label, values, color) in enumerate(series):
        traffic.bar([j + (i - 1) * 0.27 for j in range(len(names))], [max(v, 1) for v in values], 0.27,
                    label=label, color=color)
    traffic.set_yscale("log")
    traffic.set_xticks(range(len(names)), names)
    traffic.set_ylabel("bytes (log scale)")
    traffic.set_title("Wukong's KV traffic vs all task outputs")
    traffic.legend(fontsize=8)

    fig.suptitle(f"Run of {result['machine']['date']}, {result['machine']['cores']} cores", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    raw = Path(argv[0])
    print(draw(json.loads(raw.read_text()), plot_path(raw)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
