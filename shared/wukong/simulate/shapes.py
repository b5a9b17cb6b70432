"""Synthetic task graphs for the simulator: tree reductions, TSQR and GEMM, 10k to 1M+ tasks.

Graphs are plain integer adjacency (no Dask objects, so a million tasks build in seconds), with a
duration and an output size per task; :func:`to_task_graph` wraps one as a Wukong ``TaskGraph``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from wukong.graph import TaskGraph

SHAPES = ("tree", "tsqr", "gemm")

#: Sustained float64 GFLOP/s of one executor (about 2 vCPUs at 3008 MB; an assumption, see the docs).
GFLOPS = 20.0
F64 = 8


@dataclass(frozen=True)
class SimGraph:
    """Tasks ``0..n-1`` in topological order (every dependency has a smaller id)."""

    name: str
    dependencies: list[tuple[int, ...]]
    seconds: list[float]  # task id -> duration of the task itself
    out_bytes: list[int]  # task id -> serialized size of its output
    outputs: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.dependencies)

    def dependents(self) -> list[tuple[int, ...]]:
        users: list[list[int]] = [[] for _ in self.dependencies]
        for tid, deps in enumerate(self.dependencies):
            for d in deps:
                users[d].append(tid)
        return [tuple(u) for u in users]

    def critical_path(self) -> float:
        """The longest chain of task durations: no scheduler can finish sooner."""
        finish = [0.0] * len(self)
        for tid, deps in enumerate(self.dependencies):
            finish[tid] = max((finish[d] for d in deps), default=0.0) + self.seconds[tid]
        return max(finish, default=0.0)


class _Builder:
    def __init__(self) -> None:
        self.deps: list[tuple[int, ...]] = []
        self.seconds: list[float] = []
        self.nbytes: list[int] = []

    def add(self, deps: tuple[int, ...], seconds: float, nbytes: int) -> int:
        self.deps.append(deps)
        self.seconds.append(seconds)
        self.nbytes.append(nbytes)
        return len(self.deps) - 1

    def graph(self, name: str, outputs: list[int]) -> SimGraph:
        return SimGraph(name, self.deps, self.seconds, self.nbytes, tuple(outputs))


def _flop_seconds(flops: float) -> float:
    return flops / (GFLOPS * 1e9)


def _reduce(b: _Builder, ids: list[int], fan_in: int, seconds: float, nbytes: int) -> int:
    """Combine ``ids`` ``fan_in`` at a time, level by level, up to one root; returns the root."""
    while len(ids) > 1:
        nxt = []
        for i in range(0, len(ids), fan_in):
            group = tuple(ids[i:i + fan_in])
            nxt.append(group[0] if len(group) == 1 else b.add(group, seconds, nbytes))
        ids = nxt
    return ids[0]


def tree(n_tasks: int, fan_in: int = 2, leaf_seconds: float = 0.01, inner_seconds: float = 0.001,
         nbytes: int = 1024) -> SimGraph:
    """A reduction tree: ~n_tasks*(fan_in-1)/fan_in leaves combined ``fan_in`` at a time.

    Tiny tasks (10 ms leaves, 1 ms combines, 1 KB values): a scheduling-overhead benchmark.
    """
    n_leaves = max(1, round(n_tasks * (fan_in - 1) / fan_in) + 1)
    b = _Builder()
    leaves = [b.add((), leaf_seconds, nbytes) for _ in range(n_leaves)]
    root = _reduce(b, leaves, fan_in, inner_seconds, nbytes)
    return b.graph(f"tree(fan_in={fan_in}, leaves={n_leaves})", [root])


def tsqr(n_tasks: int, rows: int = 8192, cols: int = 128, fan_in: int = 2) -> SimGraph:
    """TSQR of a tall-skinny matrix in ``rows x cols`` blocks, computing Q and R (about 8 tasks a block).

    Per block: load -> qr -> (R, Q1) getitems; the Rs reduce in a ``fan_in`` tree of stacked QRs;
    the tree's Q factors flow back down (one 'piece' per tree node), and each block's Q is Q1 @ piece.
    Outputs: every Q block and the final R. Seed default: 8192 x 128 blocks (8 MB).
    """
    n_blocks = max(1, round((n_tasks + 3) / 8))
    block, small = rows * cols * F64, cols * cols * F64
    qr_s = _flop_seconds(2 * rows * cols * cols)
    b = _Builder()
    r_ids, q1_ids = [], []
    for _ in range(n_blocks):
        load = b.add((), _flop_seconds(rows * cols * 20), block)  # generate / read a block
        qr = b.add((load,), qr_s, block + small)
        r_ids.append(b.add((qr,), 1e-4, small))
        q1_ids.append(b.add((qr,), 1e-4, block))
    # up-sweep: parent[node] and children[node] for the Q back-propagation
    children: dict[int, tuple[int, ...]] = {}
    level = r_ids
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), fan_in):
            group = tuple(level[i:i + fan_in])
            if len(group) == 1:
                nxt.append(group[0])
                continue
            k = len(group)
            node = b.add(group, _flop_seconds(2 * k * cols * cols * cols), small * (k + 1))
            children[node] = group
            nxt.append(node)
        level = nxt
    root = level[0]
    # down-sweep: piece[c] is child c's block of its parent's Q, times the parent's own piece
    piece: dict[int, int] = {}
    stack = [root] if root in children else []
    while stack:
        node = stack.pop()
        above = (node,) if node not in piece else (node, piece[node])
        for c in children[node]:
            piece[c] = b.add(above, _flop_seconds(2 * cols ** 3), small)
            if c in children:
                stack.append(c)
    outputs = [root]
    for r, q1 in zip(r_ids, q1_ids):
        deps = (q1, piece[r]) if r in piece else (q1,)
        outputs.append(b.add(deps, qr_s, block))
    return b.graph(f"tsqr(blocks={n_blocks} of {rows}x{cols}, fan_in={fan_in})", outputs)


def gemm_blocks(n_tasks: int, split_every: int) -> int:
    """Blocks per side whose GEMM graph comes closest to ``n_tasks`` tasks."""
    def size(n: int) -> int:
        sums = math.ceil((n - 1) / (split_every - 1)) if n > 1 else 0
        return 2 * n * n + n ** 3 + n * n * sums
    top = max(1, round(n_tasks ** (1 / 3))) + 1
    return min(range(1, top + 1), key=lambda m: abs(size(m) - n_tasks))


def gemm(n_tasks: int, block: int = 1000, split_every: int = 4) -> SimGraph:
    """C = A @ B in ``block``-square blocks, n per side: n^3 block products, each C block summed
    in a ``split_every`` tree. Every A and B block fans out to n products (wide fan-outs).
    """
    n = gemm_blocks(n_tasks, split_every)
    nbytes = block * block * F64
    b = _Builder()
    load_s = _flop_seconds(block * block * 20)
    a = [[b.add((), load_s, nbytes) for _ in range(n)] for _ in range(n)]
    bb = [[b.add((), load_s, nbytes) for _ in range(n)] for _ in range(n)]
    mul_s, add_s = _flop_seconds(2 * block ** 3), _flop_seconds(block * block * split_every)
    outputs = []
    for i in range(n):
        for j in range(n):
            prods = [b.add((a[i][k], bb[k][j]), mul_s, nbytes) for k in range(n)]
            outputs.append(_reduce(b, prods, split_every, add_s, nbytes))
    return b.graph(f"gemm({n}x{n} blocks of {block}x{block}, split_every={split_every})", outputs)


def make_shape(shape: str, n_tasks: int) -> SimGraph:
    if shape == "tree":
        return tree(n_tasks)
    if shape == "tsqr":
        return tsqr(n_tasks)
    if shape == "gemm":
        return gemm(n_tasks)
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def from_task_graph(graph: TaskGraph, seconds: float, nbytes: int, name: str = "graph") -> SimGraph:
    """A SimGraph for a real (normalized) graph; every task gets the same duration and output size."""
    n = len(graph)
    return SimGraph(name, list(graph.dependencies), [seconds] * n, [nbytes] * n, tuple(graph.output_ids))


class _IdentityIndex(Mapping):
    """key -> id for graphs whose keys are their ids, without a million-entry dict."""

    def __init__(self, n: int):
        self._n = n

    def __getitem__(self, key: Any) -> int:
        if type(key) is int and 0 <= key < self._n:
            return key
        raise KeyError(key)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._n))

    def __len__(self) -> int:
        return self._n


def to_task_graph(sim: SimGraph) -> TaskGraph:
    """A Wukong TaskGraph for ``generate_schedules``: keys are task ids, nodes are placeholders."""
    n = len(sim)
    return TaskGraph(
        keys=tuple(range(n)),
        nodes=(None,) * n,
        dependencies=tuple(sim.dependencies),
        dependents=tuple(sim.dependents()),
        output_ids=sim.outputs,
        requested=list(sim.outputs),
        index=_IdentityIndex(n),  # type: ignore[arg-type]
    )
