"""dask-ml ``ParallelPostFit(SVC)``: fit on 1,000 samples in memory, predict 100,000 in 20 chunks in parallel.

Changed from the seed: it imports seaborn, pandas and defaultdict and never uses them (dropped), and its
text stops after making the data, before the prediction its title names: ``clf.predict(X)``, computed here.
Needs the ``examples`` extra (scikit-learn, dask-ml, pandas). Checked against the fitted SVC's own predict.
"""

from __future__ import annotations

import numpy as np
from _seed import scaled_grid, script_main

EXTRA_MISSING = "examples/svc.py needs scikit-learn, dask-ml and pandas: pip install -e '.[examples]'"
try:
    import dask_ml.datasets
    import sklearn.datasets
    from dask_ml.wrappers import ParallelPostFit
    from sklearn.svm import SVC
except ImportError as exc:  # say which extra to install rather than which module is missing
    raise ImportError(EXTRA_MISSING) from exc

N_SAMPLES = 100_000


def build(scale: float = 1.0):
    """``clf.predict(X)`` for the seed's 100,000 samples (times ``scale``) in 20 chunks, and its check."""
    X, y = sklearn.datasets.make_classification(n_samples=1000)
    clf = ParallelPostFit(SVC(gamma='scale'))
    clf.fit(X, y)

    n_samples, _ = scaled_grid(N_SAMPLES, N_SAMPLES // 20, scale)  # 20 chunks, as the seed's text makes them
    X, y = dask_ml.datasets.make_classification(n_samples=n_samples,
                                                random_state=100000,
                                                chunks=n_samples // 20)
    predicted = clf.predict(X)

    def check(got) -> str:
        expected = clf.estimator.predict(X.compute(scheduler="sync"))
        assert got.shape == expected.shape, f"{got.shape[0]} predictions, expected {expected.shape[0]}"
        wrong = int(np.count_nonzero(got != expected))
        assert wrong == 0, f"{wrong} of {n_samples:,} predictions differ from the fitted SVC's own"
        return f"all {n_samples:,} predictions equal the fitted SVC's own (numpy, one process)"

    return predicted, check


def run(client, scale: float = 1.0):
    predicted, check = build(scale)
    result = predicted.compute(scheduler=client.get)
    return result, check(result)


if __name__ == "__main__":
    script_main(run, __doc__)
