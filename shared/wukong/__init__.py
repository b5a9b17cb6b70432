"""Wukong: run Dask task graphs on serverless functions with decentralized, locality-aware scheduling.

    from wukong import LocalCluster, Client
    with LocalCluster() as cluster:
        client = Client(cluster)
        result = x.compute(scheduler=client.get)
"""

from wukong.client import Client
from wukong.config import WukongConfig
from wukong.errors import (
    ExecutorCrashedError,
    FunctionTimeoutError,
    GraphCycleError,
    InvalidGraphError,
    JobFailedError,
    JobTimeoutError,
    MemoryLimitError,
    MissingKeyError,
    OutputTooLargeError,
    RedisUnavailableError,
    RemoteTaskError,
    SerializationError,
    UnsupportedGraphError,
    ValueNotStoredError,
    WukongError,
)
from wukong.local.cluster import LocalCluster
from wukong.report import JobReport

__all__ = [
    "Client",
    "ExecutorCrashedError",
    "FunctionTimeoutError",
    "GraphCycleError",
    "InvalidGraphError",
    "JobFailedError",
    "JobReport",
    "JobTimeoutError",
    "MemoryLimitError",
    "MissingKeyError",
    "OutputTooLargeError",
    "LocalCluster",
    "RedisUnavailableError",
    "RemoteTaskError",
    "SerializationError",
    "UnsupportedGraphError",
    "ValueNotStoredError",
    "WukongConfig",
    "WukongError",
]
__version__ = "0.1.0"
