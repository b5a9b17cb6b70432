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


#: Tests that run `serverless package` (directly, or through the bundles tests/aws deploys into
#: moto). Concurrent packagings of one service directory overwrite each other's files, so under
#: pytest-xdist (scripts/test.sh runs two workers, with --dist loadgroup) they share one worker.
SERVERLESS_PACKAGING = ("tests/aws/", "tests/test_deploy_package.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.path.as_posix()
        if any(f"/{part}" in path for part in SERVERLESS_PACKAGING):
            item.add_marker(pytest.mark.xdist_group("serverless"))
