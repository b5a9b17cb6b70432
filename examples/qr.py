"""QR: R of a random 128 x 128 matrix, split into 8 blocks of 16 rows (the tall-skinny form, TSQR).

Changed from the seed: its ``chunks = (16, 16)`` cuts the columns too, and Dask rejects that
(``NotImplementedError: qr currently supports only tall-and-skinny (single column chunk/block; see
tsqr) and short-and-fat (single row chunk/block; see sfqr) matrices``).
So the 16-row blocks here span all 128 columns, ``chunks=(16, 128)``; ``seed_chunks_rejected()`` shows it.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from _seed import scaled_grid, script_main

SIZE, CHUNK_ROWS = 128, 16


def build(scale: float = 1.0):
    """``r`` of ``q, r = da.linalg.qr(X)`` at ``scale`` of the seed's size, and its check."""
    n, chunk_rows = scaled_grid(SIZE, CHUNK_ROWS, scale)
    X = da.random.random((n, n), chunks=(chunk_rows, n))
    q, r = da.linalg.qr(X)

    def check(got) -> str:
        r_np = np.linalg.qr(X.compute(scheduler="sync"), mode="r")
        assert got.shape == r_np.shape, f"R has shape {got.shape}, numpy's {r_np.shape}"
        assert np.array_equal(got, np.triu(got)), "R is not upper triangular"
        # R is unique up to the sign of each row: make both diagonals positive, then compare
        def positive(r):
            return r * np.where(np.diag(r) < 0, -1.0, 1.0)[:, None]
        error = float(np.abs(positive(got) - positive(r_np)).max() / np.abs(r_np).max())
        assert error < 1e-10, f"R differs from numpy's by {error:.2e} (relative, up to row signs)"
        return f"R is {n} x {n}, upper triangular, and matches numpy's to {error:.1e} (relative, up to row signs)"

    return r, check


def seed_chunks_rejected() -> str:
    """The seed's text as written: Dask 2026 refuses square blocks; returns Dask's message."""
    X = da.random.random((128, 128), chunks=(16, 16))
    try:
        da.linalg.qr(X)
    except NotImplementedError as exc:
        return str(exc).splitlines()[0]
    raise AssertionError("da.linalg.qr accepted square chunks: the note in examples/qr.py is out of date")


def run(client, scale: float = 1.0):
    r, check = build(scale)
    result = r.compute(scheduler=client.get)
    return result, check(result)


if __name__ == "__main__":
    script_main(run, __doc__)
