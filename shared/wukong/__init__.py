"""Wukong: run Dask task graphs on serverless functions with decentralized, locality-aware scheduling.

    from wukong import LocalCluster, Client
    with LocalCluster() as cluster:
        client = Client(cluster)
        result = x.compute(scheduler=client.get)

The names below are imported on first use (PEP 562): a Lambda handler that imports
``wukong.executor`` never loads the local runtime, the progress bar or the service models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    "Client": "wukong.client",
    "LocalCluster": "wukong.local.cluster",
    "JobReport": "wukong.report",
    "WukongConfig": "wukong.config",
    **{name: "wukong.errors" for name in (
        "ExecutorCrashedError", "FunctionTimeoutError", "GraphCycleError", "InvalidGraphError", "JobFailedError",
        "JobTimeoutError", "MemoryLimitError", "MissingKeyError", "OutputTooLargeError", "RedisUnavailableError",
        "RemoteTaskError", "SerializationError", "UnsupportedGraphError", "ValueNotStoredError", "WukongError")},
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

if TYPE_CHECKING:
    from wukong.client import Client
    from wukong.config import WukongConfig
    from wukong.errors import (ExecutorCrashedError, FunctionTimeoutError, GraphCycleError, InvalidGraphError,
                               JobFailedError, JobTimeoutError, MemoryLimitError, MissingKeyError, OutputTooLargeError,
                               RedisUnavailableError, RemoteTaskError, SerializationError, UnsupportedGraphError,
                               ValueNotStoredError, WukongError)
    from wukong.local.cluster import LocalCluster
    from wukong.report import JobReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wukong' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
