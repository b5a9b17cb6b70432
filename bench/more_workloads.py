"""Issue-5 benchmark workloads beyond the first two: many independent tiny tasks plus an aggregate,
GEMM 4000^2 in 1000^2 chunks, and the SVD of a 200,000 x 100 matrix. Same interface as workloads.py.

Each also measures the total serialized bytes of all its task outputs once (outside timing), so
the report can put Wukong's KV traffic against everything the graph produced.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
from workloads import CollectionWorkload, GraphWorkload


@dataclass
class IndependentTasks(GraphWorkload):
    """10,000 independent tiny tasks and one aggregate over all of them: one huge fan-in."""

    n: int = 10_000
    name: str = "independent"
    graph: dict = field(init=False, repr=False)
    root: str = field(init=False, default="total")

    def __post_init__(self) -> None:
        self.graph = {("item", i): (operator.mul, i, 2) for i in range(self.n)}
        self.graph["total"] = (sum, [("item", i) for i in range(self.n)])

    @property
    def description(self) -> str:
        return (f"{self.n:,} independent tasks (operator.mul on an int) and one sum over all of them, "
                f"a dict graph through get(dsk, key)")


    def check(self, value: Any) -> None:
        assert value == self.n * (self.n - 1), f"got {value!r}"


@dataclass
class GEMM(CollectionWorkload):
    """Dense matrix product A @ B of random n x n matrices in c x c chunks, inputs made in the graph."""

    n: int = 4000
    chunk: int = 1000
    seed: int = 7
    name: str = "gemm"

    def __post_init__(self) -> None:
        rng = da.random.default_rng(self.seed)
        self.a = rng.random((self.n, self.n), chunks=(self.chunk, self.chunk))
        self.b = rng.random((self.n, self.n), chunks=(self.chunk, self.chunk))
        self.c = self.a @ self.b
        self._ref: np.ndarray | None = None

    @property
    def description(self) -> str:
        return f"GEMM {self.n:,}^2 in {self.chunk:,}^2 chunks (A @ B, random inputs generated in the graph)"

    @property
    def collection(self) -> Any:
        return self.c

    def reference(self) -> np.ndarray:
        if self._ref is None:
            self._ref = self.a.compute(scheduler="sync") @ self.b.compute(scheduler="sync")
        return self._ref

    def check(self, value: Any) -> None:
        assert np.allclose(np.asarray(value), self.reference(), rtol=1e-10), "A @ B differs from numpy"


@dataclass
class SVD(CollectionWorkload):
    """Singular values of a tall-skinny 200,000 x 100 matrix (``da.linalg.svd``, TSQR-based)."""

    rows: int = 200_000
    cols: int = 100
    chunk_rows: int = 10_000
    seed: int = 3
    name: str = "svd"

    def __post_init__(self) -> None:
        rng = da.random.default_rng(self.seed)
        self.x = rng.random((self.rows, self.cols), chunks=(self.chunk_rows, self.cols))
        _, self.s, _ = da.linalg.svd(self.x)
        self._ref: np.ndarray | None = None

    @property
    def description(self) -> str:
        return (f"SVD of {self.rows:,} x {self.cols} (chunks {self.chunk_rows:,} x {self.cols}), singular "
                f"values with s.compute(scheduler=...)")

    @property
    def collection(self) -> Any:
        return self.s

    def reference(self) -> np.ndarray:
        if self._ref is None:
            self._ref = np.linalg.svd(self.x.compute(scheduler="sync"), compute_uv=False)
        return self._ref

    def check(self, value: Any) -> None:
        assert np.allclose(np.asarray(value), self.reference(), rtol=1e-8), "singular values differ from numpy"
