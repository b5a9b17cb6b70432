"""TSQR: R of the tall-and-skinny QR of a random 262,144 x 128 matrix in 32 chunks of 8,192 x 128.

The seed's text runs as written. R is unique only up to the sign of each row, so the check compares
R^T R with X^T X (numpy, on the same X rebuilt by Dask's sync scheduler) and that R is upper triangular.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from _seed import scaled, scaled_grid, script_main

ROWS, COLS, CHUNK_ROWS = 262_144, 128, 8192


def build(scale: float = 1.0):
    """``r`` of ``q, r = da.linalg.tsqr(X)`` at ``scale`` of the seed's size, and its check."""
    rows, chunk_rows = scaled_grid(ROWS, CHUNK_ROWS, scale, min_chunk=2)
    cols = scaled(COLS, scale, minimum=2)
    X = da.random.random((rows, cols), chunks=(chunk_rows, cols))
    q, r = da.linalg.tsqr(X)

    def check(got) -> str:
        x_np = X.compute(scheduler="sync")
        gram = x_np.T @ x_np
        assert got.shape == (cols, cols), f"R has shape {got.shape}"
        assert np.array_equal(got, np.triu(got)), "R is not upper triangular"
        error = float(np.abs(got.T @ got - gram).max() / np.abs(gram).max())
        assert error < 1e-10, f"R^T R differs from X^T X by {error:.2e} (relative)"
        return f"R is {cols} x {cols}, upper triangular; R^T R matches numpy's X^T X to {error:.1e} (relative)"

    return r, check


def run(client, scale: float = 1.0):
    r, check = build(scale)
    result = r.compute(scheduler=client.get)
    return result, check(result)


if __name__ == "__main__":
    script_main(run, __doc__)
