"""Serialization of task values, schedules and payloads.

The standard pickler is tried first because it is several times faster than cloudpickle on
the many small objects a job moves; whatever it cannot carry faithfully (lambdas, closures,
anything defined in ``__main__``, which it would pickle by a reference that workers cannot
resolve) goes through cloudpickle. Sizes are always the length of the real serialized bytes.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(obj: Any) -> bytes:
    try:
        data = pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        return cloudpickle.dumps(obj, protocol=PROTOCOL)
    if b"__main__" in data:  # by-reference to the user's script: only cloudpickle sends it by value
        return cloudpickle.dumps(obj, protocol=PROTOCOL)
    return data


def loads(data: bytes) -> Any:
    return pickle.loads(data)
