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
#: Buffers this large skip the "__main__" scan in dumps() (they are data, not references).
OUT_OF_BAND = 64 * 1024


def dumps(obj: Any) -> bytes:
    # Large buffers (numpy arrays, bytes-like data) are first kept out of band, so the search
    # for "__main__" scans only the pickle's structure and not megabytes of array data; that
    # scan of every byte cost about as much as the pickling itself on 8 MB blocks.
    large: list[pickle.PickleBuffer] = []
    try:
        structure = pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=_keep_large(large))
    except Exception:
        return cloudpickle.dumps(obj, protocol=PROTOCOL)
    if b"__main__" in structure:  # by-reference to the user's script: only cloudpickle sends it by value
        return cloudpickle.dumps(obj, protocol=PROTOCOL)
    if not large:
        return structure
    try:
        return pickle.dumps(obj, protocol=PROTOCOL)  # in band, so loads() needs nothing but the bytes
    except Exception:  # an object that pickles only once: cloudpickle gets the second try
        return cloudpickle.dumps(obj, protocol=PROTOCOL)


def _keep_large(out: list[pickle.PickleBuffer]):
    """A pickle buffer_callback: buffers of at least OUT_OF_BAND bytes go out of band (False)."""

    def callback(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes >= OUT_OF_BAND:
            out.append(buf)
            return False
        return True

    return callback


def loads(data: bytes) -> Any:
    return pickle.loads(data)
