"""The seed document's workloads, end to end on the session cluster through ``client.get``.

Each result is checked against numpy (or Dask's sync scheduler where the algorithm is randomized):
tree reduction, tall-skinny SVD, svd_compressed, TSQR, tall-skinny QR, Cholesky and GEMM.
"""

from __future__ import annotations

from operator import add

import dask
import dask.array as da
import numpy as np
from dask import delayed

N_LEAVES = 1024


def rng(seed: int):
    # a seeded Generator makes the dask array the same in every scheduler, so numpy can check it
    return da.random.default_rng(seed)


def test_tree_reduction_hand_built_graph(client):
    # the seed's pairwise-add reduction of range(1024), as a raw dict graph: 1024 data leaves,
    # then 512, 256, ... add tasks down to one root
    dsk = {("level-0", i): i for i in range(N_LEAVES)}
    width, level = N_LEAVES, 0
    while width > 1:
        for i in range(width // 2):
            dsk[(f"level-{level + 1}", i)] = (add, (f"level-{level}", 2 * i), (f"level-{level}", 2 * i + 1))
        width, level = width // 2, level + 1
    root = (f"level-{level}", 0)
    assert client.get(dsk, root) == sum(range(N_LEAVES))
    report = client.last_report
    assert report.status == "succeeded"
    assert report.n_tasks == len(dsk) == 2 * N_LEAVES - 1


def test_tree_reduction_delayed_as_in_seed(client):
    # the original repo's form: delayed(add) over the halves until one value is left
    values = list(range(N_LEAVES))
    while len(values) > 1:
        values = list(map(delayed(add), values[0::2], values[1::2]))
    assert values[0].compute(scheduler=client.get) == sum(range(N_LEAVES))


def test_tree_reduction_dask_array_sum(client):
    total = da.arange(N_LEAVES, chunks=1).sum()
    assert total.compute(scheduler=client.get) == total.compute(scheduler="sync") == sum(range(N_LEAVES))


def test_svd_tall_skinny(client):
    # the seed's size: 200,000 x 100 in chunks of 10,000 x 100 (runs in a few seconds)
    X = rng(0).random((200_000, 100), chunks=(10_000, 100))
    _, s, v = da.linalg.svd(X)
    s_got, v_got = dask.compute(s, v, scheduler=client.get)
    X_np = X.compute(scheduler="sync")
    _, s_np, v_np = np.linalg.svd(X_np, full_matrices=False)
    np.testing.assert_allclose(s_got, s_np, rtol=1e-10)
    # singular vectors are unique only up to sign, row by row
    np.testing.assert_allclose(np.abs(v_got), np.abs(v_np), atol=1e-8)
    np.testing.assert_allclose(v_got @ v_got.T, np.eye(100), atol=1e-10)


def test_svd_compressed_low_rank_matches_numpy(client):
    # 1,000 x 1,000 in 4 x 4 chunks of 250 instead of the seed's 10k x 10k in 2k chunks, for CI
    # time on 2 cores. The matrix has rank 5, so the randomized k=5 approximation is exact and
    # numpy can check it; on a uniform random matrix only the top singular value would compare.
    gen = rng(1)
    X = (gen.random((1000, 5), chunks=(250, 5)) @ gen.random((5, 1000), chunks=(5, 250))).rechunk(250)
    u, s, v = da.linalg.svd_compressed(X, k=5, seed=42)
    u_got, s_got, v_got = dask.compute(u, s, v, scheduler=client.get)
    X_np = X.compute(scheduler="sync")
    s_np = np.linalg.svd(X_np, compute_uv=False)[:5]
    np.testing.assert_allclose(s_got, s_np, rtol=1e-8)
    np.testing.assert_allclose((u_got * s_got) @ v_got, X_np, atol=1e-8 * np.abs(X_np).max())


def test_svd_compressed_random_matches_sync_scheduler(client):
    # the seed's uniform random input (1,000 x 1,000 in chunks of 250, for CI time): with a fixed
    # seed= the randomized algorithm is deterministic, so Wukong must give what Dask's sync gives
    X = rng(2).random((1000, 1000), chunks=(250, 250))
    _, s, v = da.linalg.svd_compressed(X, k=5, seed=7)
    s_got, v_got = dask.compute(s, v, scheduler=client.get)
    s_sync, v_sync = dask.compute(s, v, scheduler="sync")
    np.testing.assert_allclose(s_got, s_sync, rtol=1e-10)
    np.testing.assert_allclose(v_got, v_sync, atol=1e-10)
    # the leading singular value has a large gap, so even without power iterations the sketch
    # gets it to within a few percent of numpy's exact one
    top = np.linalg.svd(X.compute(scheduler="sync"), compute_uv=False)[0]
    np.testing.assert_allclose(s_got[0], top, rtol=0.03)


def test_tsqr(client):
    # the seed's TSQR: 262,144 x 128 in 32 chunks of 8,192 rows
    X = rng(3).random((262_144, 128), chunks=(8192, 128))
    _, r = da.linalg.tsqr(X)
    r_got = r.compute(scheduler=client.get)
    r_np = np.linalg.qr(X.compute(scheduler="sync"), mode="r")
    assert r_got.shape == (128, 128)
    np.testing.assert_array_equal(r_got, np.triu(r_got))
    # R is unique up to the sign of each row
    np.testing.assert_allclose(np.abs(r_got), np.abs(r_np), rtol=1e-8, atol=1e-8)


def test_qr_tall_skinny(client):
    # the seed's 128 x 128 in 16-row blocks; da.linalg.qr needs a single column chunk (TSQR form)
    X = rng(4).random((128, 128), chunks=(16, 128))
    q, r = da.linalg.qr(X)
    q_got, r_got = dask.compute(q, r, scheduler=client.get)
    X_np = X.compute(scheduler="sync")
    np.testing.assert_allclose(q_got @ r_got, X_np, atol=1e-10)
    np.testing.assert_allclose(q_got.T @ q_got, np.eye(128), atol=1e-10)
    np.testing.assert_array_equal(r_got, np.triu(r_got))


def test_cholesky(client):
    # the seed's get_sym(100): tril(ones) @ tril(ones).T is symmetric positive definite
    lA = da.tril(da.ones((100, 100), chunks=(25, 25)))
    X = da.asarray(lA.dot(lA.T), chunks=(25, 25))
    A_np = X.compute(scheduler="sync")
    lower_np = np.linalg.cholesky(A_np)
    upper = da.linalg.cholesky(X, lower=False).compute(scheduler=client.get)
    lower = da.linalg.cholesky(X, lower=True).compute(scheduler=client.get)
    np.testing.assert_allclose(upper, lower_np.T, atol=1e-8)
    np.testing.assert_allclose(lower, lower_np, atol=1e-8)


def test_gemm(client):
    # the seed's GEMM shape scaled down from 10k x 10k in 2k chunks to 2k x 2k in 500 chunks
    gen = rng(5)
    x = gen.random((2000, 2000), chunks=(500, 500))
    y = gen.random((2000, 2000), chunks=(500, 500))
    z = da.matmul(x, y).compute(scheduler=client.get)
    x_np, y_np = dask.compute(x, y, scheduler="sync")
    np.testing.assert_allclose(z, x_np @ y_np, rtol=1e-10)
