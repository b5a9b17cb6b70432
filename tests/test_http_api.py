"""The HTTP job API end to end: a real uvicorn server on loopback, backed by the session's real
Redis and worker processes, driven by ``Client(endpoint=...)`` and by raw HTTP requests.

Task functions are defined inside the tests so cloudpickle sends them by value to the workers.
"""

from __future__ import annotations

import base64
import http.client
import json
import pickle
import time
import uuid
from operator import add
from pathlib import Path

import numpy as np
import pytest
from task_bodies import wait_for_key
from api_server import TOKEN, api_server
from graph_shapes import tree_sum_graph

from wukong import Client, JobFailedError, LocalCluster
from wukong.config import MB
from wukong.serialization import dumps
from wukong.service.base import JobNotFinishedError, UnknownJobError
from wukong.service.models import JobState
from wukong.service.remote import AuthenticationError

DOCS_OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def api(cluster):
    with api_server(cluster) as server:
        yield server


@pytest.fixture(scope="module")
def remote(api):
    with Client(endpoint=api.url, token=TOKEN) as client:
        yield client


def call(api, method, path, body=None, headers=None, token=TOKEN):
    """One raw request; returns (status, parsed JSON or raw bytes)."""
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.getheader("content-type", "").startswith("application/json"):
        return response.status, json.loads(data)
    return response.status, data


def slow_chain(n: int, seconds: float, prefix: str) -> tuple[dict, str]:
    def step(previous, pause=seconds):
        time.sleep(pause)
        return (previous or 0) + 1

    dsk = {f"{prefix}-0": (step, None)}
    for i in range(1, n):
        dsk[f"{prefix}-{i}"] = (step, f"{prefix}-{i - 1}")
    return dsk, f"{prefix}-{n - 1}"


# --- submit, follow, fetch -------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_remote_get_returns_correct_results(remote):
    import dask.array as da

    dsk, root = tree_sum_graph(256, "http-tree")
    assert remote.get(dsk, root) == sum(range(256))
    assert remote.last_report.status == "succeeded"
    assert remote.last_report.n_tasks == 511
    x = da.arange(10_000, chunks=1000)
    assert (x * 2).sum().compute(scheduler=remote.get) == 2 * sum(range(10_000))
    assert remote.get(dsk, [[root], root]) == ((sum(range(256)),), sum(range(256)))


@pytest.mark.timeout(60)
def test_progress_counts_rise_to_the_total(remote):
    dsk, root = slow_chain(12, 0.05, "progress")
    handle = remote.submit(dsk, root)
    seen = []
    while True:
        status = handle.service.status(handle.job_id, wait=0.1)
        seen.append(status.tasks_done)
        if status.state.finished:
            break
    assert status.state is JobState.succeeded
    assert seen == sorted(seen)
    assert seen[-1] == status.tasks_total == 12
    assert handle.result() == 12
    assert status.timings.finished_at >= status.timings.submitted_at
    assert status.report["tasks_run"] == 12


@pytest.mark.timeout(60)
def test_progress_bar_on_stderr_and_off_on_request(remote, capsys):
    dsk, root = tree_sum_graph(16, "bar")
    assert remote.get(dsk, root, progress=True) == sum(range(16))
    assert "31/31" in capsys.readouterr().err
    assert remote.get(dsk, root, progress=False) == sum(range(16))
    assert "31/31" not in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_job_handle_status_wait_result_and_listing(remote):
    dsk, root = tree_sum_graph(32, "handle")
    handle = remote.submit(dsk, root)
    assert handle.status().job_id == handle.job_id
    final = handle.wait(progress=False)
    assert final.state is JobState.succeeded and final.result_available
    assert handle.result() == sum(range(32))
    assert handle.report.tasks_run == 63
    assert handle.job_id in [s.job_id for s in remote.jobs(limit=20)]


@pytest.mark.timeout(60)
def test_task_failure_reraises_its_own_type_naming_the_key(remote):
    def explode(x):
        return x / 0

    dsk = {"one": 1, "boom": (explode, "one"), "out": (add, "boom", 1)}
    with pytest.raises(ZeroDivisionError) as info:
        remote.get(dsk, "out")
    assert any("'boom'" in note for note in info.value.__notes__)
    status = remote.jobs(limit=1)[0]
    assert status.state is JobState.failed
    assert status.error.kind == "task" and status.error.key == "'boom'"
    assert status.error.type == "builtins.ZeroDivisionError"


@pytest.mark.timeout(60)
def test_local_client_submit_gives_the_same_handle(client):
    dsk, root = tree_sum_graph(16, "local-handle")
    handle = client.submit(dsk, root)
    assert handle.result() == sum(range(16))
    assert handle.status().state is JobState.succeeded
    assert handle.report.status == "succeeded"


# --- cancellation -------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_cancel_stops_a_running_job(remote, api):
    dsk, root = slow_chain(40, 0.25, "cancel")
    handle = remote.submit(dsk, root)
    with pytest.raises(JobNotFinishedError):  # no result while it runs
        handle.service.result_blob(handle.job_id)
    code, body = call(api, "GET", f"/jobs/{handle.job_id}/result")
    assert code == 409 and "no result" in body["detail"]
    handle.cancel()
    final = handle.wait(progress=False)
    assert final.state is JobState.cancelled
    assert final.error.kind == "cancelled"
    assert final.tasks_done < final.tasks_total
    with pytest.raises(JobFailedError, match="cancelled"):
        handle.result()
    assert call(api, "GET", f"/jobs/{handle.job_id}/result")[0] == 409


@pytest.mark.timeout(60)
def test_cancelling_a_finished_job_leaves_it_alone(remote):
    dsk, root = tree_sum_graph(8, "done-cancel")
    handle = remote.submit(dsk, root)
    assert handle.result() == sum(range(8))
    assert handle.cancel().state is JobState.succeeded
    assert handle.result() == sum(range(8))


# --- auth, sizes, bad input -----------------------------------------------------------------------

class _Touch:
    """Unpickling this creates a file: proof of whether the server unpickled a body."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


ROUTES = [("POST", "/jobs"), ("GET", "/jobs"), ("GET", "/jobs/abc"), ("GET", "/jobs/abc/result"),
          ("DELETE", "/jobs/abc"), ("POST", "/uploads")]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_unauthenticated_requests_get_401(api, token):
    for method, path in ROUTES:
        code, body = call(api, method, path, body=b"{}", token=token)
        assert code == 401, (method, path)
        assert "token" in body["detail"]


@pytest.mark.timeout(30)
def test_nothing_is_unpickled_before_authentication(api, tmp_path):
    marker = tmp_path / "unpickled"
    blob = pickle.dumps(_Touch(marker))
    for token in (None, "wrong"):
        code, _ = call(api, "POST", "/jobs", blob, {"Content-Type": "application/octet-stream"}, token=token)
        assert code == 401
        assert not marker.exists()
    code, body = call(api, "POST", "/jobs", blob, {"Content-Type": "application/octet-stream"})
    assert marker.exists()  # with the token the server did unpickle it: a graph is code
    assert code == 400 and "tuple (dsk, keys)" in body["detail"]


@pytest.mark.timeout(30)
def test_client_with_wrong_token_raises(api):
    with Client(endpoint=api.url, token="nope") as bad:
        with pytest.raises(AuthenticationError, match="401"):
            bad.jobs()


@pytest.mark.timeout(60)
def test_body_over_the_limit_gets_413_stating_the_limit(api):
    limit = api.config.max_body_bytes
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    conn.putrequest("POST", "/jobs")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(limit + 1))
    conn.endheaders()  # the server answers from the header alone
    response = conn.getresponse()
    assert response.status == 413
    assert str(limit) in json.loads(response.read())["detail"]
    conn.close()
    # a chunked body has no Content-Length: the cap applies as the bytes arrive
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    chunks = (b"x" * MB for _ in range(limit // MB + 2))
    conn.request("POST", "/jobs", body=chunks, encode_chunked=True,
                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"})
    response = conn.getresponse()
    assert response.status == 413
    assert str(limit) in json.loads(response.read())["detail"]
    conn.close()


@pytest.mark.timeout(30)
def test_upload_over_its_cap_gets_413(api):
    code, ticket = call(api, "POST", "/uploads")
    assert code == 201 and ticket["max_bytes"] == api.config.max_upload_bytes
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    conn.putrequest("PUT", ticket["url"])
    conn.putheader("Content-Length", str(ticket["max_bytes"] + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    assert str(ticket["max_bytes"]) in json.loads(response.read())["detail"]


def _b64(obj) -> str:
    return base64.b64encode(dumps(obj)).decode()


MALFORMED = [
    ("not json", b"{nope", "application/json", "malformed"),
    ("no graph", b"{}", "application/json", "exactly one"),
    ("both graphs", json.dumps({"graph": "AA==", "graph_upload": "x" * 20}).encode(), "application/json", "exactly one"),
    ("unknown field", json.dumps({"graph": "AA==", "colour": 1}).encode(), "application/json", "colour"),
    ("bad base64", json.dumps({"graph": "***"}).encode(), "application/json", "base64"),
    ("bad config", json.dumps({"graph": "AA==", "config": {"job_timeout": -1}}).encode(), "application/json",
     "job_timeout"),
    ("huge job_ttl", json.dumps({"graph": "AA==", "config": {"job_ttl": 10**20}}).encode(), "application/json",
     "job_ttl"),
    ("huge payload_limit", json.dumps({"graph": "AA==", "config": {"payload_limit": 10**9}}).encode(),
     "application/json", "payload_limit"),
    ("not a pickle", json.dumps({"graph": base64.b64encode(b"hello").decode()}).encode(), "application/json",
     "unpickle"),
    ("not a tuple", json.dumps({"graph": _b64([1, 2, 3])}).encode(), "application/json", "tuple"),
    ("missing key", json.dumps({"graph": _b64(({"a": 1}, "zzz"))}).encode(), "application/json", "zzz"),
    ("empty body", b"", "application/octet-stream", "empty"),
    ("unknown upload", json.dumps({"graph_upload": "y" * 32}).encode(), "application/json", "upload"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name,body,media,says", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_submissions_get_400_saying_what_is_wrong(api, name, body, media, says):
    code, answer = call(api, "POST", "/jobs", body, {"Content-Type": media})
    assert code == 400, answer
    assert says in answer["detail"]


@pytest.mark.timeout(30)
def test_other_bad_requests(api):
    code, body = call(api, "POST", "/jobs", b"graph", {"Content-Type": "text/plain"})
    assert code == 415 and "application/json" in body["detail"]
    code, body = call(api, "GET", "/jobs?limit=abc")
    assert code == 400 and "limit" in body["detail"]
    code, body = call(api, "GET", "/jobs/bad%20id")
    assert code == 400


@pytest.mark.timeout(30)
def test_unknown_jobs_get_404(api, remote):
    for method, path in [("GET", "/jobs/nosuchjob"), ("GET", "/jobs/nosuchjob/result"), ("DELETE", "/jobs/nosuchjob")]:
        code, body = call(api, method, path)
        assert code == 404 and "nosuchjob" in body["detail"]
    with pytest.raises(UnknownJobError):
        remote.job("nosuchjob").status()


@pytest.mark.timeout(30)
def test_upload_urls_are_single_use_capabilities(api):
    code, ticket = call(api, "POST", "/uploads")
    graph = dumps(({"a": 1, "b": (add, "a", 41)}, "b"))
    assert call(api, "PUT", ticket["url"], graph, token=None)[0] == 200
    assert call(api, "PUT", ticket["url"], graph, token=None)[0] == 401  # used
    assert call(api, "PUT", "/uploads/" + "z" * 32, graph, token=None)[0] == 401  # never issued
    code, status = call(api, "POST", "/jobs", json.dumps({"graph_upload": ticket["upload_id"]}).encode(),
                        {"Content-Type": "application/json"})
    assert code == 202
    code, again = call(api, "POST", "/jobs", json.dumps({"graph_upload": ticket["upload_id"]}).encode(),
                       {"Content-Type": "application/json"})
    assert code == 400  # consumed by the first job
    code, final = call(api, "GET", f"/jobs/{status['job_id']}?wait=20")
    assert final["state"] == "succeeded"
    code, blob = call(api, "GET", f"/jobs/{status['job_id']}/result")
    assert code == 200 and pickle.loads(blob) == 42


@pytest.mark.timeout(120)
def test_a_100_mb_graph_submits_through_the_upload_path(remote):
    big = np.arange(100 * MB // 8, dtype=np.float64)  # a 100 MB literal in the graph
    dsk = {"big": big, "total": (np.sum, "big"), "n": (len, "big")}
    handle = remote.submit(dsk, ["total", "n"])
    del dsk
    assert handle.result() == (float(big.sum()), big.size)


# --- the OpenAPI document ----------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_served_openapi_matches_the_committed_copy(api):
    code, served = call(api, "GET", "/openapi.json", token=None)
    assert code == 200
    assert served == json.loads(DOCS_OPENAPI.read_text()), (
        "docs/openapi.json is stale: regenerate it with `python -m wukong.service.app > docs/openapi.json`")
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/result", "/uploads"} <= set(served["paths"])


@pytest.mark.timeout(30)
def test_accepted_connections_have_tcp_nodelay(api):
    """Without TCP_NODELAY each response on a keep-alive connection waits for a delayed ACK (~40 ms)."""
    import socket

    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().read()  # the connection is accepted and kept alive
    sockets = [proto.transport.get_extra_info("socket") for proto in api._server.server_state.connections]
    assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
    conn.close()


@pytest.mark.timeout(30)
def test_an_empty_upload_is_refused(api):
    code, ticket = call(api, "POST", "/uploads")
    assert code == 201
    code, body = call(api, "PUT", ticket["url"], b"", {"Content-Type": "application/octet-stream"}, token=None)
    assert code == 400 and "empty" in body["detail"]
    code, body = call(api, "POST", "/jobs", json.dumps({"graph_upload": ticket["upload_id"]}).encode(),
                      {"Content-Type": "application/json"})
    assert code == 400  # nothing was stored under the id


@pytest.mark.timeout(60)
def test_health_says_503_when_the_redis_behind_it_is_gone():
    with LocalCluster(n_workers=1) as cluster, api_server(cluster) as server:
        assert call(server, "GET", "/health", token=None) == (200, {"status": "ok"})
        cluster.servers[0].stop()
        code, body = call(server, "GET", "/health", token=None)
        assert code == 503 and body["status"] == "unavailable" and "does not answer" in body["detail"]


@pytest.mark.timeout(120)
def test_health_and_jobs_answer_while_45_long_polls_are_open(api, cluster):
    from concurrent.futures import ThreadPoolExecutor

    (host, port), password = cluster.stores.spec.mds, cluster.stores.spec.password
    release = f"test-release-{uuid.uuid4().hex}"
    code, status = call(api, "POST", "/jobs", json.dumps({"graph": _b64(
        ({"x": (wait_for_key, host, port, password, release)}, "x"))}).encode(), {"Content-Type": "application/json"})
    assert code == 202
    with ThreadPoolExecutor(45) as pool:
        polls = [pool.submit(call, api, "GET", f"/jobs/{status['job_id']}?wait=20") for _ in range(45)]
        try:
            time.sleep(1.0)  # let the polls reach the server (they wait up to 20 s each)
            assert call(api, "GET", "/health", token=None) == (200, {"status": "ok"})
            assert call(api, "GET", "/jobs")[0] == 200
            assert not any(p.done() for p in polls)  # neither waited for a long poll to end
        finally:
            cluster.stores.mds.set(release, 1, ex=60)
        assert all(p.result()[0] == 200 for p in polls)
