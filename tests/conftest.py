"""Shared fixtures: one embedded LocalCluster (real Redis + 2 worker processes) per test session.

Other test modules use ``cluster``, ``client`` and ``stores``; keep this file small.
"""

from __future__ import annotations

import pytest

from wukong import Client, LocalCluster


@pytest.fixture(scope="session")
def cluster():
    with LocalCluster(n_workers=2) as c:
        yield c


@pytest.fixture(scope="session")
def client(cluster):
    # the client does not own the cluster, so closing it leaves the session cluster running
    with Client(cluster) as c:
        yield c


@pytest.fixture(scope="session")
def stores(cluster):
    """The session cluster's RedisStores (MDS + KV shards), for storage tests."""
    return cluster.stores

