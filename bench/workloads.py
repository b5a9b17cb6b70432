"""The benchmark workloads: each builds its graph, knows how to run it on a backend, and checks the result.

A workload's ``run(backend)`` returns the computed value; ``check(value)`` raises AssertionError
when it is wrong, so a wrong answer can never be timed as a success.
"""

from __future__ import annotations

import operator
import pickle
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.callbacks import Callback


def tree_reduction_graph(n_leaves: int) -> tuple[dict, tuple]:
    """A dict graph summing ``range(n_leaves)`` by pairwise ``operator.add``; (graph, root key).

    The leaves are literal ints (data nodes), as in the seed's tree reduction of ``range(1024)``.
    """
    if n_leaves < 2 or n_leaves & (n_leaves - 1):
        raise ValueError("n_leaves must be a power of two >= 2")
    dsk: dict = {("tree", 0, i): i for i in range(n_leaves)}
    level, width = 0, n_leaves
    while width > 1:
        for i in range(width // 2):
            dsk[("tree", level + 1, i)] = (operator.add, ("tree", level, 2 * i), ("tree", level, 2 * i + 1))
        level, width = level + 1, width // 2
    return dsk, ("tree", level, 0)


def output_bytes_of(collection_or_graph: Any, keys: Any = None) -> int:
    """Sum of pickle sizes of every task output, from one run on Dask's sync scheduler.

    The graph is run as written (``optimize_graph=False``): Dask's array optimizer fuses
    blockwise chains (TSQR's random -> qr -> getitem) in some processes and not in others,
    depending on the string hash seed, and a fused chain reports only its last output, so the
    optimized count swung between 17 MB and 554 MB for the same TSQR.
    """
    total = 0
    skipped: list = []

    def posttask(key, result, dsk, state, worker_id):
        nonlocal total
        try:
            total += len(pickle.dumps(result, protocol=5))
        except Exception as exc:  # an unpicklable intermediate never crosses executors in Wukong either
            skipped.append((key, exc))

    with Callback(posttask=posttask):
        if keys is None:
            dask.compute(collection_or_graph, scheduler="sync", optimize_graph=False)
        else:
            dask.get(collection_or_graph, keys)
    if skipped:  # say so: a silently short total would distort the KV-share figure
        print(f"output bytes: {len(skipped)} outputs not counted, e.g. {skipped[0]!r}", flush=True)
    return total

class GraphWorkload:
    """A dict graph run through each scheduler's ``get(graph, root)``; subclasses set both."""

    graph: dict
    root: Any

    @property
    def n_tasks(self) -> int:
        return len(self.graph)

    def run(self, backend: Any) -> Any:
        return backend.get(self.graph, self.root)

    def output_bytes(self) -> int:
        return output_bytes_of(self.graph, self.root)


class CollectionWorkload:
    """A Dask collection run through ``compute(scheduler=...)``; subclasses name it in ``collection``."""

    @property
    def collection(self) -> Any:
        raise NotImplementedError

    @property
    def n_tasks(self) -> int:
        return len(self.collection.__dask_graph__())

    def run(self, backend: Any) -> Any:
        return backend.compute(self.collection)

    def output_bytes(self) -> int:
        return output_bytes_of(self.collection)


@dataclass
class TreeReduction(GraphWorkload):
    """Tiny tasks, all overhead: 2n-1 tasks, n leaves, one fan-in of two per inner task."""

    n_leaves: int = 8192
    name: str = "tree"
    graph: dict = field(init=False, repr=False)
    root: tuple = field(init=False)

    def __post_init__(self) -> None:
        self.graph, self.root = tree_reduction_graph(self.n_leaves)

    @property
    def description(self) -> str:
        return (f"tree reduction of range({self.n_leaves}): {self.n_leaves} literal-int leaves, pairwise "
                f"operator.add up to one root, a dict graph run through each scheduler's get(dsk, key)")


    def check(self, value: Any) -> None:
        expected = self.n_leaves * (self.n_leaves - 1) // 2
        assert value == expected, f"tree reduction gave {value!r}, expected {expected}"


@dataclass
class TSQR(CollectionWorkload):
    """Dense linear algebra: R of a tall-skinny QR, random input generated inside the graph."""

    rows: int = 262_144
    cols: int = 128
    chunk_rows: int = 8192
    seed: int = 42
    name: str = "tsqr"

    def __post_init__(self) -> None:
        rng = da.random.default_rng(self.seed)
        self.x = rng.random((self.rows, self.cols), chunks=(self.chunk_rows, self.cols))
        _, self.r = da.linalg.tsqr(self.x)
        self._gram: np.ndarray | None = None

    @property
    def description(self) -> str:
        return (f"TSQR of {self.rows:,} x {self.cols} (chunks {self.chunk_rows} x {self.cols}), "
                f"computing R with r.compute(scheduler=...), input generated in the graph")

    @property
    def collection(self) -> Any:
        return self.r

    def reference(self) -> np.ndarray:
        """X^T X of the same random input, computed once with Dask's sync scheduler and numpy."""
        if self._gram is None:
            x = self.x.compute(scheduler="sync")
            self._gram = x.T @ x
        return self._gram

    def check(self, value: Any) -> None:
        # R is unique only up to the signs of its rows, so compare R^T R with X^T X, and check
        # that R is upper triangular.
        r = np.asarray(value)
        assert r.shape == (self.cols, self.cols), f"R has shape {r.shape}"
        assert np.allclose(np.tril(r, -1), 0.0), "R is not upper triangular"
        gram = self.reference()
        assert np.allclose(r.T @ r, gram, rtol=1e-8, atol=1e-6 * np.abs(gram).max()), "R^T R != X^T X"


def make_workloads(quick: bool) -> list:
    """Every workload at full size, or small versions for a smoke run."""
    from more_workloads import GEMM, SVD, IndependentTasks

    if quick:
        return [TreeReduction(n_leaves=1024), TSQR(rows=32_768, cols=128, chunk_rows=4096),
                IndependentTasks(n=1000), GEMM(n=1000, chunk=250), SVD(rows=20_000, chunk_rows=2_000)]
    return [TreeReduction(n_leaves=8192), TSQR(), IndependentTasks(), GEMM(), SVD()]
