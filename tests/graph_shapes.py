"""Small Dask graphs that several test modules build: shared here so each shape is written once."""

from __future__ import annotations

from operator import add


def tree_sum_graph(n: int, prefix: str) -> tuple[dict, tuple]:
    """A pairwise-add reduction of range(n) (n a power of two) and its root key."""
    dsk = {(f"{prefix}-0", i): i for i in range(n)}
    level = 0
    while n > 1:
        for i in range(n // 2):
            dsk[(f"{prefix}-{level + 1}", i)] = (add, (f"{prefix}-{level}", 2 * i), (f"{prefix}-{level}", 2 * i + 1))
        n, level = n // 2, level + 1
    return dsk, (f"{prefix}-{level}", 0)
