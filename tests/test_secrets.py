"""Security properties of the local runtime: the embedded Redis refuses unauthenticated clients and
listens on loopback only; a known Redis password and API token never reach a log record (DEBUG, in
this process or printed by workers and servers), a repr of the config or storage spec, or a report.
"""

from __future__ import annotations

import json
import logging
import socket
from operator import add

import pytest
import redis

from wukong import Client, LocalCluster, WukongConfig
from wukong.local.redis_server import RedisServerProcess
from wukong.service.server import LocalApiServer

PASSWORD = "redis-pw-" + "q7" * 12
TOKEN = "api-token-" + "z9" * 12


def non_loopback_address() -> str | None:
    """An address of this host other than 127.0.0.1, if it has one (the route to a public address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent for a UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_embedded_redis_wants_auth_and_listens_on_loopback_only(cluster):
    host, port = cluster.spec.mds
    assert host == "127.0.0.1"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=port, socket_timeout=5).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=port, password="wrong-" + cluster.spec.password, socket_timeout=5).ping()
    authed = redis.Redis(host=host, port=port, password=cluster.spec.password, socket_timeout=5)
    assert authed.config_get("bind")["bind"] == "127.0.0.1"
    assert authed.config_get("protected-mode")["protected-mode"] == "yes"
    assert len(cluster.spec.password) >= 32  # secrets.token_urlsafe(24): 192 bits
    elsewhere = non_loopback_address()
    if elsewhere is not None:
        with pytest.raises(OSError):
            socket.create_connection((elsewhere, port), timeout=5).close()


def inc(x: int) -> int:
    return x + 1


@pytest.mark.timeout(120)
def test_no_password_or_token_in_logs_reprs_or_reports(caplog, capfd):
    server = RedisServerProcess(password=PASSWORD).start()
    texts: list[str] = []
    try:
        with caplog.at_level(logging.DEBUG):
            with LocalCluster(n_workers=1, redis_endpoints=[server.endpoint], redis_password=PASSWORD) as cluster:
                client = Client(cluster)
                assert client.get({"x": 1, "y": (inc, "x")}, "y") == 2
                texts += [repr(cluster.config), str(cluster.config), repr(cluster.spec), repr(cluster),
                          client.last_report.summary(), json.dumps(client.last_report.as_dict())]
                with pytest.raises(ZeroDivisionError):
                    client.get({"x": 0, "y": (lambda x: 1 / x, "x")}, "y")
                texts.append(json.dumps(client.last_report.as_dict()))
                with LocalApiServer(cluster, token=TOKEN) as api:
                    remote = Client(endpoint=api.url, token=TOKEN)
                    assert remote.get({"a": 1, "b": (add, "a", 1)}, "b") == 2
                    handle = remote.submit({"a": 1, "b": (add, "a", 2)}, "b")
                    assert handle.result() == 3
                    texts += [repr(remote), repr(handle), handle.last_status.model_dump_json(),
                              repr(remote._config), str(remote._config)]
                    with pytest.raises(Exception):
                        Client(endpoint=api.url, token="not-" + TOKEN).get({"a": 1}, "a")
    finally:
        server.stop()
    texts += [repr(WukongConfig(redis_url=f"redis://:{PASSWORD}@127.0.0.1:1", token=TOKEN))]
    records = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # logging really was captured at DEBUG
    out, err = capfd.readouterr()  # what workers, servers and uvicorn printed
    for text in [*texts, *records, out, err]:
        assert PASSWORD not in text and TOKEN not in text, text[:300]
