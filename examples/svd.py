"""SVD of a tall-skinny random 200,000 x 100 matrix in 10,000 x 100 chunks (``da.linalg.svd``, via TSQR).

Changed from the seed: its ``X = da.random.random(...).persist()`` is left as ``X = da.random.random(...)``.
Wukong has no cluster memory to persist into (executors end when their work does), so ``persist()``
would compute X in this process and ship all 160 MB of it inside the graph; X is generated in the graph.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from _seed import scaled, scaled_grid, script_main

ROWS, COLS, CHUNK_ROWS = 200_000, 100, 10_000


def build(scale: float = 1.0):
    """``v`` of ``u, s, v = da.linalg.svd(X)`` at ``scale`` of the seed's size, and its check."""
    rows, chunk_rows = scaled_grid(ROWS, CHUNK_ROWS, scale, min_chunk=2)
    cols = scaled(COLS, scale, minimum=2)
    X = da.random.random((rows, cols), chunks=(chunk_rows, cols))
    u, s, v = da.linalg.svd(X)

    def check(got) -> str:
        _, _, v_np = np.linalg.svd(X.compute(scheduler="sync"), full_matrices=False)
        assert got.shape == v_np.shape, f"v has shape {got.shape}, numpy's {v_np.shape}"
        # a singular vector is unique only up to its sign, so compare row by row in absolute value
        error = float(np.abs(np.abs(got) - np.abs(v_np)).max())
        assert error < 1e-8, f"|v| differs from numpy's by {error:.2e}"
        orthogonality = float(np.abs(got @ got.T - np.eye(cols)).max())
        assert orthogonality < 1e-10, f"v v^T differs from I by {orthogonality:.2e}"
        return (f"v is {cols} x {cols}; |v| matches numpy's to {error:.1e}, v v^T = I to {orthogonality:.1e}")

    return v, check


def run(client, scale: float = 1.0):
    v, check = build(scale)
    result = v.compute(scheduler=client.get)
    return result, check(result)


if __name__ == "__main__":
    script_main(run, __doc__)
