"""The proxy's wire format: length-prefixed frames, each signed with HMAC-SHA256 of a shared secret.

A frame is a 4-byte big-endian length, a 32-byte MAC, then a pickled message. The MAC is checked
before anything is unpickled, and the unpickler admits only Wukong's plain-data classes.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
import struct
import time
from typing import Any

HEADER = struct.Struct(">I")
MAC_BYTES = 32
#: Largest frame accepted: a hand-off of 10,000 payloads of ~50 KB fits; anything bigger is refused
#: before it is read, so an unauthenticated peer cannot make the proxy buffer gigabytes.
MAX_FRAME = 512 * 1024 * 1024
#: A signed message older (or newer) than this is refused, which bounds replays of a captured frame.
MAX_AGE = 300.0
#: Classes a message may carry; everything else in it is builtins (dict, list, tuple, bytes, int, str).
ALLOWED = {
    ("wukong.invocation", "JobSettings"),
    ("wukong.redis_connection", "StorageSpec"),
    ("wukong.storage", "StorageSpec"),  # as pickled before redis_connection existed: payloads in flight
    ("wukong.schedule", "DependentRef"),
}


class AuthError(Exception):
    """A frame whose MAC does not match, whose age is out of bounds, or that carries a forbidden class."""


def derive_key(secret: str) -> bytes:
    """The MAC key from the shared secret (the Redis password): never the password itself on the wire."""
    return hmac.new(b"wukong-proxy-v1", secret.encode(), hashlib.sha256).digest()


def encode(key: bytes, message: dict) -> bytes:
    body = pickle.dumps({**message, "sent": time.time()}, protocol=pickle.HIGHEST_PROTOCOL)
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return HEADER.pack(MAC_BYTES + len(body)) + mac + body


def frame_length(header: bytes) -> int:
    """The length a header announces; AuthError if it is impossible or too big to read."""
    (n,) = HEADER.unpack(header)
    if n < MAC_BYTES or n > MAX_FRAME:
        raise AuthError(f"frame of {n} bytes refused")
    return n


def decode(key: bytes, frame: bytes) -> dict:
    """The message in ``frame`` (MAC + body), authenticated first; AuthError otherwise."""
    mac, body = frame[:MAC_BYTES], frame[MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise AuthError("bad MAC: the peer does not hold the proxy's secret")
    message = _RestrictedUnpickler(io.BytesIO(body)).load()
    if not isinstance(message, dict) or abs(time.time() - float(message.get("sent", 0))) > MAX_AGE:
        raise AuthError("stale or malformed message")
    return message


class _RestrictedUnpickler(pickle.Unpickler):
    # defence in depth behind the MAC: a leaked key still cannot make the proxy import code
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise AuthError(f"class {module}.{name} is not allowed in a proxy message")
        return super().find_class(module, name)
