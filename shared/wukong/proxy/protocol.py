"""The proxy's wire format: a signed handshake that gives each connection its own session key, then
frames whose header is authenticated before a byte of their body is read. Pure: no I/O here.

Why it is built this way (docs/security.md lists the bounds):

* **Handshake.** The client sends ``MAGIC`` and a random 16-byte nonce. The server answers with
  ``MAGIC``, its own random nonce, its idle timeout, and a MAC of all of that under the long-term
  key (derived from the Redis password). The client checks that MAC before it sends a request, so
  a proxy with another secret is reported as exactly that (:class:`WrongSecret`). The session key
  is the long-term key's MAC of both nonces, so a session recorded earlier is useless to either side.
* **Frames.** A frame is a 68-byte header (body length, SHA-256 of the body, and a MAC under the
  session key over direction, sequence number, length and digest), then the body: a pickled dict.
  The header MAC is checked before the body is read, so a peer without the key can make the proxy
  hold at most ``MAX_UNAUTHENTICATED`` bytes (hello + one header) before it is disconnected. The
  body is checked against the signed digest, then unpickled with an allow-list of plain-data classes.
* **Replays.** The sequence number is implicit: each side counts the frames of each direction, so a
  frame replayed on its own connection carries a stale number, one replayed on another connection
  was signed with another session key, and one sent back to its sender has the wrong direction.
  All three fail the header MAC. There is no clock to skew and no cache of seen nonces to bound.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
import secrets
import struct
from typing import Any

MAGIC = b"WKPROXY2"
NONCE_BYTES = 16
#: magic, client nonce
CLIENT_HELLO = struct.Struct(">8s16s")
#: magic, server nonce, the server's idle timeout in ms, MAC of (client nonce, all of the above)
SERVER_HELLO = struct.Struct(">8s16sI32s")
#: body length, SHA-256 of the body, MAC of (direction, sequence number, length, digest)
HEADER = struct.Struct(">I32s32s")
#: Bytes the proxy reads from a peer before the peer has proved it holds the key: its hello and
#: one frame header. Nothing more is read (or buffered) for a peer whose header MAC fails.
MAX_UNAUTHENTICATED = CLIENT_HELLO.size + HEADER.size
#: Largest frame accepted: a hand-off of 10,000 payloads of ~50 KB fits. Only a peer whose header
#: MAC checked can make the proxy allocate this much.
MAX_FRAME = 512 * 1024 * 1024
#: Which way a frame goes, inside its MAC: a frame reflected back to its sender does not verify.
TO_SERVER, TO_CLIENT = b"C", b"S"
# Fixed labels, neither a prefix of the other, keep the hello MAC and the session key apart: a MAC
# the server computes over a client's chosen nonce must never be a session key.
_HELLO_LABEL = b"wukong-proxy-v2 hello\0"
_SESSION_LABEL = b"wukong-proxy-v2 session\0"
#: Classes a message may carry; everything else in it is builtins (dict, list, tuple, bytes, int, str).
ALLOWED = {
    ("wukong.invocation", "JobSettings"),
    ("wukong.redis_connection", "StorageSpec"),
    ("wukong.storage", "StorageSpec"),  # as pickled before redis_connection existed: payloads in flight
    ("wukong.schedule", "DependentRef"),
}


class ProtocolError(Exception):
    """The connection cannot go on: a frame or hello was refused, or a message is too big to send."""


class AuthError(ProtocolError):
    """A hello or frame that does not verify (wrong key, replayed, reordered) or carries a forbidden class."""


class WrongSecret(AuthError):
    """The proxy's hello is signed with another key: the two sides were given different secrets."""


class FrameTooLarge(ProtocolError):
    """A message bigger than MAX_FRAME."""


def derive_key(secret: str) -> bytes:
    """The long-term MAC key from the shared secret (the Redis password): never the password on the wire."""
    return hmac.new(b"wukong-proxy-v1", secret.encode(), hashlib.sha256).digest()


def client_hello() -> tuple[bytes, bytes]:
    """A fresh client nonce and the hello that carries it."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce, CLIENT_HELLO.pack(MAGIC, nonce)


def read_client_hello(data: bytes) -> bytes:
    """The client's nonce; AuthError if ``data`` is not a hello of this protocol."""
    magic, nonce = CLIENT_HELLO.unpack(data)
    if magic != MAGIC:
        raise AuthError("not a KV proxy v2 hello (an executor of an older Wukong release, or not Wukong)")
    return nonce


def server_hello(key: bytes, client_nonce: bytes, idle_timeout: float) -> tuple["Session", bytes]:
    """The server's session for this connection and the hello to send."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    idle_ms = round(idle_timeout * 1000)
    mac = _hello_mac(key, client_nonce, nonce, idle_ms)
    return Session(key, client_nonce, nonce, sends=TO_CLIENT), SERVER_HELLO.pack(MAGIC, nonce, idle_ms, mac)


def read_server_hello(key: bytes, client_nonce: bytes, data: bytes) -> tuple["Session", float]:
    """The client's session and the server's idle timeout in seconds; WrongSecret if the hello is
    signed with another key (or answers another client's nonce)."""
    magic, nonce, idle_ms, mac = SERVER_HELLO.unpack(data)
    if magic != MAGIC:
        raise AuthError("the peer did not answer with a KV proxy v2 hello (a proxy of an older Wukong release?)")
    if not hmac.compare_digest(mac, _hello_mac(key, client_nonce, nonce, idle_ms)):
        raise WrongSecret(
            "the KV proxy signs with a different key: it and this executor were given different Redis "
            "passwords (the proxy derives its key from WUKONG_REDIS_PASSWORD, or the secret "
            "WUKONG_REDIS_PASSWORD_SECRET names). Give both the same password, and restart the proxy "
            "after rotating it (on AWS: systemctl restart wukong-proxy on the MDS host); meanwhile "
            "executors do their own fan-outs")
    return Session(key, client_nonce, nonce, sends=TO_SERVER), idle_ms / 1000


def _hello_mac(key: bytes, client_nonce: bytes, server_nonce: bytes, idle_ms: int) -> bytes:
    data = _HELLO_LABEL + MAGIC + client_nonce + server_nonce + idle_ms.to_bytes(4, "big")
    return hmac.new(key, data, hashlib.sha256).digest()


class Session:
    """One side of one connection: its session key and the number of frames sent and received."""

    def __init__(self, key: bytes, client_nonce: bytes, server_nonce: bytes, sends: bytes):
        self._key = hmac.new(key, _SESSION_LABEL + client_nonce + server_nonce, hashlib.sha256).digest()
        self._sends = sends
        self._receives = TO_CLIENT if sends == TO_SERVER else TO_SERVER
        self._sent = 0
        self._received = 0

    def seal(self, message: dict) -> bytes:
        """The frame (header + body) for ``message``, numbered next in this direction."""
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if len(body) > MAX_FRAME:  # checked before the count moves: the session stays usable
            raise FrameTooLarge(f"a message of {len(body)} bytes is over the proxy's limit of {MAX_FRAME}")
        digest = hashlib.sha256(body).digest()
        header = HEADER.pack(len(body), digest, self._mac(self._sends, self._sent, len(body), digest))
        self._sent += 1
        return header + body

    def open_header(self, header: bytes) -> tuple[int, bytes]:
        """The body length and digest ``header`` announces, once its MAC verifies as the next frame."""
        length, digest, mac = HEADER.unpack(header)
        if not hmac.compare_digest(mac, self._mac(self._receives, self._received, length, digest)):
            raise AuthError("frame header MAC does not match: a peer without the key, or a replayed, "
                            "reordered or reflected frame")
        if length > MAX_FRAME:
            raise FrameTooLarge(f"a frame of {length} bytes is over the limit of {MAX_FRAME}")
        self._received += 1
        return length, digest

    def open_body(self, digest: bytes, body: bytes | bytearray) -> dict:
        """The message in ``body``, once it matches the digest its verified header carried."""
        if not hmac.compare_digest(hashlib.sha256(body).digest(), digest):
            raise AuthError("frame body does not match its signed digest")
        message = _RestrictedUnpickler(io.BytesIO(body)).load()
        if not isinstance(message, dict):
            raise AuthError("malformed message")
        return message

    def _mac(self, direction: bytes, number: int, length: int, digest: bytes) -> bytes:
        data = direction + number.to_bytes(8, "big") + length.to_bytes(4, "big") + digest
        return hmac.new(self._key, data, hashlib.sha256).digest()


class _RestrictedUnpickler(pickle.Unpickler):
    # defence in depth behind the MAC: a leaked key still cannot make the proxy import code
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise AuthError(f"class {module}.{name} is not allowed in a proxy message")
        return super().find_class(module, name)
