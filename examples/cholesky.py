"""Cholesky: the upper factor of a symmetric positive definite 100 x 100 matrix in 25 x 25 chunks.

Changed from the seed: its ``get_sym`` passes ``chunks = chunks``, a name it never defines (a NameError);
here ``get_sym`` takes the chunks as an argument, and gets the seed's (25, 25). Checked against numpy.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from _seed import scaled_grid, script_main

SIZE, CHUNK = 100, 25


def get_sym(input_size, chunks):
    A = da.ones((input_size, input_size), chunks=chunks)
    lA = da.tril(A)
    return lA.dot(lA.T)


def build(scale: float = 1.0):
    """``chol = da.linalg.cholesky(X, lower=False)`` at ``scale`` of the seed's size, and its check."""
    n, c = scaled_grid(SIZE, CHUNK, scale)
    input_matrix = get_sym(n, chunks=(c, c))
    X = da.asarray(input_matrix, chunks=(c, c))
    # Pass 'True' for the 'lower' parameter if you wish to compute the lower cholesky decomposition.
    chol = da.linalg.cholesky(X, lower=False)

    def check(got) -> str:
        # tril(ones) times its transpose has tril(ones) as its Cholesky factor, and numpy agrees
        lower_np = np.linalg.cholesky(X.compute(scheduler="sync"))
        assert got.shape == (n, n), f"the factor has shape {got.shape}"
        error = float(np.abs(got - lower_np.T).max())
        assert error < 1e-8, f"the upper factor differs from numpy's by {error:.2e}"
        return f"the upper factor is {n} x {n} and matches numpy's to {error:.1e}"

    return chol, check


def run(client, scale: float = 1.0):
    chol, check = build(scale)
    result = chol.compute(scheduler=client.get)
    return result, check(result)


if __name__ == "__main__":
    script_main(run, __doc__)
