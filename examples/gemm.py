"""GEMM: the product of two random 10,000 x 10,000 matrices in 2,000 x 2,000 chunks (25 blocks each).

The seed's text runs as written. The check is Freivalds': ``z @ w`` against ``x @ (y @ w)`` for a few
random vectors ``w``, which needs no second 10k-cubed product (numpy's would take longer than the job).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from _seed import scaled_grid, script_main

SIZE, CHUNK = 10_000, 2_000


def build(scale: float = 1.0):
    """``z = da.matmul(x, y)`` at ``scale`` of the seed's size, and its check; ``(collection, check)``."""
    n, c = scaled_grid(SIZE, CHUNK, scale)
    x = da.random.random((n, n), chunks=(c, c))
    y = da.random.random((n, n), chunks=(c, c))
    z = da.matmul(x, y)

    def check(got) -> str:
        # the random blocks' seeds are fixed in the graph, so the sync scheduler rebuilds x and y exactly
        x_np, y_np = (a.compute(scheduler="sync") for a in (x, y))
        w = np.random.default_rng(0).random((n, 3))
        expected = x_np @ (y_np @ w)
        assert got.shape == (n, n), f"z has shape {got.shape}"
        error = float(np.abs(got @ w - expected).max() / np.abs(expected).max())
        assert error < 1e-10, f"z @ w differs from x @ (y @ w) by {error:.2e} (relative)"
        return f"z is {n:,} x {n:,}; z @ w matches x @ (y @ w) for 3 random w to {error:.1e} (relative)"

    return z, check


def run(client, scale: float = 1.0):
    z, check = build(scale)
    result = z.compute(scheduler=client.get)
    return result, check(result)


if __name__ == "__main__":
    script_main(run, __doc__)
