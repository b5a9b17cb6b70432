"""A job API server for tests: ``wukong serve``'s LocalApiServer on loopback, on the session cluster."""

from __future__ import annotations

from wukong.config import MB, make_config
from wukong.service.server import LocalApiServer

TOKEN = "test-token-" + "x" * 20


def api_server(cluster) -> LocalApiServer:
    """Started; use as a context manager so it stops (and cancels its jobs) at the end."""
    return LocalApiServer(cluster, token=TOKEN, config=make_config(cluster.config, max_upload_bytes=160 * MB))
