"""Serialization of task values, schedules and payloads.

cloudpickle, so lambdas and closures in user graphs travel; sizes are always the length of
the real serialized bytes, never an in-memory estimate.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(obj: Any) -> bytes:
    return cloudpickle.dumps(obj, protocol=PROTOCOL)


def loads(data: bytes) -> Any:
    return pickle.loads(data)
