"""Task functions tests put in their graphs (the AWS tests and the HTTP API's): plain values in, so
they pickle anywhere."""

from __future__ import annotations

import time

import redis


def wait_for_key(host: str, port: int, password: str, key: str, seconds: float = 30.0) -> str:
    """Block until a Redis key exists (or ``seconds`` pass): a task the test releases when it wants."""
    client = redis.Redis(host=host, port=port, password=password)
    deadline = time.monotonic() + seconds
    while not client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    client.close()
    return "released"
