"""The client's AWS mode against a stub endpoint on loopback: requests are SigV4-signed for
``execute-api`` (the stub re-computes each signature with botocore), and a large graph goes to the
presigned upload URL without our Authorization header.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import add

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from wukong import Client
from wukong.service.remote import BearerAuth, SigV4Auth as WukongSigV4, make_auth

KEY, SECRET, REGION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "eu-west-1"
AUTH_SHAPE = re.compile(r"^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/(\d{8})/eu-west-1/execute-api/aws4_request, "
                        r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


def _status(job_id: str) -> dict:
    return {"job_id": job_id, "state": "running", "tasks_done": 1, "tasks_total": 3,
            "timings": {"submitted_at": time.time()}}


class _Stub(BaseHTTPRequestHandler):
    """Records every request; answers like the job API would."""

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        if self.command == "POST" and self.path == "/prod/uploads":
            reply = {"upload_id": "up-1", "url": f"http://127.0.0.1:{self.server.server_port}/s3/graphs/up-1",
                     "max_bytes": 1 << 30, "expires_at": time.time() + 60}
        elif self.command == "PUT":
            reply = {"upload_id": "up-1", "size": len(body)}
        elif self.path.startswith("/prod/jobs?"):
            reply = {"jobs": [_status("job-1")]}
        else:
            reply = _status("job-1")
        data = json.dumps(reply).encode()
        self.send_response(202 if self.command == "POST" and self.path == "/prod/jobs" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


def verify_signature(method: str, url: str, headers: dict, body: bytes) -> None:
    """Re-sign the request as API Gateway would check it; raises AssertionError on a mismatch."""
    match = AUTH_SHAPE.match(headers["Authorization"])
    assert match, headers["Authorization"]
    signed = match.group(2).split(";")
    assert {"host", "x-amz-date"} <= set(signed)
    lower = {k.lower(): v for k, v in headers.items()}
    request = AWSRequest(method=method, url=url, data=body, headers={h: lower[h] for h in signed})
    request.context["timestamp"] = lower["x-amz-date"]
    signer = SigV4Auth(Credentials(KEY, SECRET), "execute-api", REGION)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    assert match.group(3) == expected
    assert match.group(1) == lower["x-amz-date"][:8]


@pytest.mark.timeout(30)
def test_requests_are_sigv4_signed_and_uploads_are_not(stub, aws_env):
    base = f"http://127.0.0.1:{stub.server_port}"
    client = Client(endpoint=f"{base}/prod", auth="sigv4", aws_region=REGION, inline_graph_limit=0)
    assert isinstance(client.service.auth, WukongSigV4)
    assert [s.job_id for s in client.jobs(limit=5)] == ["job-1"]
    handle = client.submit({"a": 1, "b": (add, "a", 2)}, "b")
    assert handle.job_id == "job-1"
    handle.cancel()
    calls = [(m, p) for m, p, _, _ in stub.seen]
    assert calls == [("GET", "/prod/jobs?limit=5"), ("POST", "/prod/uploads"), ("PUT", "/s3/graphs/up-1"),
                     ("POST", "/prod/jobs"), ("DELETE", "/prod/jobs/job-1")]
    for method, path, headers, body in stub.seen:
        if method == "PUT":  # the presigned URL is the credential; our signature would break S3's
            assert "Authorization" not in headers
            continue
        verify_signature(method, base + path, headers, body)
    assert json.loads(stub.seen[3][3]) == {"graph_upload": "up-1"}


@pytest.mark.timeout(30)
def test_a_tampered_request_fails_verification(stub, aws_env):
    base = f"http://127.0.0.1:{stub.server_port}"
    Client(endpoint=f"{base}/prod", auth="sigv4", aws_region=REGION).jobs(limit=3)
    method, path, headers, body = stub.seen[0]
    with pytest.raises(AssertionError):
        verify_signature(method, base + path.replace("limit=3", "limit=4"), headers, body)


def test_auth_mode_follows_the_endpoint(aws_env):
    gateway = make_auth("https://a1b2c3d4e5.execute-api.us-east-2.amazonaws.com/prod", None)
    assert isinstance(gateway, WukongSigV4) and gateway.region == "us-east-2"
    assert isinstance(make_auth("http://127.0.0.1:8750", "t0ken"), BearerAuth)
    assert "t0ken" not in repr(make_auth("http://127.0.0.1:8750", "t0ken"))
