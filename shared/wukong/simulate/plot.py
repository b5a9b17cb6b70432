"""PNG plots of simulated runs (matplotlib, Agg backend, imported only when a plot is drawn)."""

from __future__ import annotations

from pathlib import Path

from wukong.simulate.report import SimResult

INSTALL_HINT = ("matplotlib is needed to draw the plot: pip install 'wukong[sim]' "
                "(or pip install matplotlib); use --no-plot to skip it")

_COLORS = {"wukong": "tab:blue", "central": "tab:red"}


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    return plt


def _completed_curve(result: SimResult, points: int = 400) -> tuple[list[float], list[int]]:
    """(time, tasks finished by then), at most ``points`` samples of the sorted finish times."""
    done = sorted(f for f in result.finish if f == f)  # f == f drops NaN (never finished)
    if not done:
        return [0.0], [0]
    step = max(1, len(done) // points)
    idx = list(range(step - 1, len(done), step))
    if idx[-1] != len(done) - 1:
        idx.append(len(done) - 1)
    return [0.0] + [done[i] for i in idx], [0] + [i + 1 for i in idx]


def plot_run(results: list[SimResult], out: Path) -> None:
    """Tasks completed over time, storage traffic and estimated cost of each scheduler on one graph."""
    plt = _pyplot()
    fig, (ax_t, ax_s, ax_c) = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [2, 1, 1]})
    for r in results:
        xs, ys = _completed_curve(r)
        ax_t.plot(xs, ys, label=f"{r.scheduler}: {r.makespan:.1f} s", color=_COLORS.get(r.scheduler))
    ax_t.axvline(results[0].critical_path, color="gray", linestyle=":", label="critical path")
    ax_t.set(xlabel="simulated time (s)", ylabel="tasks completed", title="Progress")
    ax_t.legend(loc="lower right")
    names = [r.scheduler for r in results]
    colors = [_COLORS.get(n, "gray") for n in names]
    ax_s.bar(names, [r.storage_bytes / 1e9 for r in results], color=colors)
    for i, r in enumerate(results):
        ax_s.annotate(f"{r.storage_ops:,} ops", (i, r.storage_bytes / 1e9), ha="center", va="bottom", fontsize=8)
    ax_s.set(ylabel="GB read + written", title="Storage traffic")
    ax_c.bar(names, [r.lambda_cost for r in results], color=colors, label="Lambda")
    ax_c.bar(names, [r.sfn_cost for r in results], bottom=[r.lambda_cost for r in results],
             color="tab:orange", label="Step Functions")
    ax_c.set(ylabel="USD", title="Estimated cost")
    ax_c.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{results[0].graph}: {results[0].n_tasks:,} tasks")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_sweep(results: list[SimResult], out: Path) -> None:
    """Makespan and cost against graph size, one line per scheduler."""
    plt = _pyplot()
    fig, (ax_m, ax_c) = plt.subplots(1, 2, figsize=(11, 4.4))
    for name in dict.fromkeys(r.scheduler for r in results):
        mine = sorted((r for r in results if r.scheduler == name), key=lambda r: r.n_tasks)
        xs = [r.n_tasks for r in mine]
        color = _COLORS.get(name)
        ax_m.plot(xs, [r.makespan for r in mine], marker="o", label=name, color=color)
        ax_c.plot(xs, [r.total_cost for r in mine], marker="o", label=name, color=color)
    crit = sorted({(r.n_tasks, r.critical_path) for r in results})
    ax_m.plot([c[0] for c in crit], [c[1] for c in crit], linestyle=":", color="gray", label="critical path")
    ax_m.set(xscale="log", yscale="log", xlabel="tasks", ylabel="makespan (s)", title="Makespan")
    ax_c.set(xscale="log", yscale="log", xlabel="tasks", ylabel="USD", title="Estimated Lambda + SFN cost")
    ax_m.legend()
    ax_c.legend()
    fig.suptitle(results[0].graph.split("(")[0] + ": size sweep")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
