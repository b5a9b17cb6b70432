"""Where Wukong's time goes on one benchmark workload: CPU per process, client phases, worker samples.

    .venv/bin/python bench/profile_workload.py [--workload tree|gemm|...] [--py-spy] [--runs 3]

Without --py-spy nothing is sampled: it reads each process's CPU time from /proc before and
after the job (client, each worker, the Redis server) and times the client's phases with
plain clocks wrapped around them, so the numbers are undistorted. With --py-spy (``pip install py-spy``) it also records the worker
processes, idle time included, and prints where their samples fall. With --inprocess it
first runs the job's executors one after another in this process (inprocess.py) and prints
the exact count and time of every storage call, (un)pickle and task per executor.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inprocess import print_inprocess, run_inprocess  # noqa: E402
from backends import WukongBackend  # noqa: E402
from workloads import GraphWorkload, make_workloads  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")

# Sampled frames are put into the first bucket whose marker occurs anywhere in the stack;
# the order matters (a payload unpickle inside the BLPOP loop is "unpickle", not "queue").
BUCKETS = [
    ("waiting for an invocation (BLPOP/LPOP on the queue)", ("blpop", "lpop")),
    ("Redis round trips (send+wait+parse)", ("redis/",)),
    ("unpickle payload / path / values", ("loads (wukong/serialization.py",)),
    ("pickle values / payloads", ("dumps (wukong/serialization.py",)),
    ("run the task itself", ("_run_task (wukong/executor.py",)),
    ("executor bookkeeping (decisions, records, counts)", ("wukong/",)),
]
HANDLE = "handle (wukong/executor.py"


@contextlib.contextmanager
def timed_phases(phases: collections.Counter):
    """Wrap the client's phase functions with wall clocks for the duration of the block."""
    import wukong.client
    import wukong.job

    targets = [(wukong.client, "normalize_graph", "normalize_graph"),
               (wukong.job, "plan_job", "plan_job (schedules, pickling)"),
               (wukong.job.JobRun, "_await", "await (executors run)"),
               (wukong.job, "finalize_job", "finalize (settle, cleanup)")]
    saved = []
    for owner, attr, label in targets:
        original = getattr(owner, attr)

        def wrapper(*a, _original=original, _label=label, **kw):
            t0 = time.perf_counter()
            try:
                return _original(*a, **kw)
            finally:
                phases[_label] += time.perf_counter() - t0

        saved.append((owner, attr, original))
        setattr(owner, attr, functools.wraps(original)(wrapper))
    try:
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def bucket_samples(raw: Path) -> dict[str, collections.Counter]:
    """py-spy raw output -> samples per bucket (all, and inside Executor.handle only), the
    wukong function under each Redis call, and the top leaf frames."""
    out = {k: collections.Counter() for k in ("all", "handle", "redis_caller", "leaf")}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        out["leaf"][frames[-1]] += count
        for name, markers in BUCKETS:
            if any(m in stack for m in markers):
                break
        else:
            name = "other (interpreter, imports, gc)"
        out["all"][name] += count
        if HANDLE in stack:
            out["handle"][name] += count
            if name.startswith("Redis"):
                caller = [f for f in frames if "wukong/storage.py" in f or "wukong/local" in f]
                out["redis_caller"][(caller[-1] if caller else frames[-1]).split(" (")[0]] += count
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default="tree", help="one of tree, independent, tsqr, gemm, svd")
    p.add_argument("--quick", action="store_true", help="the small --quick sizes of bench/run.py")
    p.add_argument("--runs", type=int, default=3, help="jobs measured (CPU accounting is summed per run)")
    p.add_argument("--py-spy", action="store_true", help="also sample the workers with py-spy (slows them)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--inprocess", action="store_true",
                   help="also run the executors serially in this process and time each step exactly")
    p.add_argument("--cpu-only", action="store_true", help="py-spy: sample only on-CPU time (no --idle)")
    args = p.parse_args()

    by_name = {w.name: w for w in make_workloads(args.quick)}
    if args.workload not in by_name:
        p.error(f"--workload must be one of {', '.join(by_name)}, not {args.workload!r}")
    work = by_name[args.workload]
    if args.inprocess and not isinstance(work, GraphWorkload):
        p.error(f"--inprocess needs a dict-graph workload (tree, independent), not {args.workload}")
    backend = WukongBackend(n_workers=2).start()  # its start() runs a warm-up job
    with contextlib.closing(backend):
        cluster, client = backend.cluster, backend.client
        if args.inprocess:
            result = run_inprocess(cluster.spec, work.graph, work.root)
            work.check(result["value"])
            print_inprocess(result)
        workers = [proc.pid for proc in cluster.pool.processes]
        redis_pids = [s._proc.pid for s in cluster.servers]
        procs = {"client": os.getpid(), **{f"worker {i}": pid for i, pid in enumerate(workers)},
                 **{f"redis {i}": pid for i, pid in enumerate(redis_pids)}}

        spies, outs = [], []
        if args.py_spy:
            tmp = Path(tempfile.mkdtemp(prefix="wukong-prof-"))
            for pid in workers:
                out = tmp / f"worker-{pid}.txt"
                spies.append(subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                     *([] if args.cpu_only else ["--idle"]), "-r", str(args.rate), "-f", "raw", "-o", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                outs.append(out)
            time.sleep(1.0)  # let py-spy attach before the job starts

        for run in range(args.runs):
            before = {name: cpu_seconds(pid) for name, pid in procs.items()}
            phases: collections.Counter = collections.Counter()
            t0 = time.perf_counter()
            with timed_phases(phases):
                value = work.run(backend)
            wall = time.perf_counter() - t0
            work.check(value)
            after = {name: cpu_seconds(pid) for name, pid in procs.items()}
            rep = client.last_report
            print(f"\n=== run {run + 1}: wall {wall:.3f} s; {rep.executors_invoked} executors, "
                  f"{rep.redis_ops} Redis ops in {rep.round_trips} round trips, plan {rep.plan_seconds:.3f} s, "
                  f"executors busy {rep.executor_seconds:.2f} s, in tasks {rep.task_seconds:.3f} s")
            total = 0.0
            for name in procs:
                used = after[name] - before[name]
                total += used
                print(f"  CPU {name:9s} {used:6.2f} s  ({100 * used / wall:5.1f}% of one core)")
            print(f"  CPU total     {total:6.2f} s of {2 * wall:.2f} s available on 2 cores "
                  f"(load avg now {os.getloadavg()[0]:.2f})")
            for name, seconds in phases.items():
                print(f"  client {name:28s} {seconds:6.3f} s")

        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(30)
    for out in outs:
        if not out.exists():
            print(f"py-spy wrote nothing to {out}")
            continue
        c = bucket_samples(out)
        for title, key in (("all samples, idle included", "all"), ("inside Executor.handle", "handle"),
                           ("Redis time inside Executor.handle, by caller", "redis_caller"),
                           ("top leaf frames", "leaf")):
            total = sum(c[key].values()) or 1
            print(f"\n=== py-spy {out.name}: {title} ({sum(c[key].values())} samples)")
            for name, n in c[key].most_common(10):
                print(f"  {100 * n / total:5.1f}%  {name[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
