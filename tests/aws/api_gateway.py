"""API Gateway for the tests: the REST API's routes as serverless.yml declares them, IAM (SigV4)
authorization, and the Lambda proxy integration's event shape, in front of the functions in moto.

``ApiGateway.call`` builds the proxy event and invokes the function through moto's Lambda API (so
the harness runs our handler). ``ApiGateway.serve`` puts the same behind a loopback HTTP server
that checks each request's SigV4 signature with botocore, as API Gateway does: the real client
then talks to it like to an execute-api URL.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

#: (method, resource) -> function, as in serverless.yml (tests/test_deploy_package.py checks the template)
ROUTES = {
    ("POST", "/uploads"): "submit", ("POST", "/jobs"): "submit",
    ("GET", "/jobs"): "jobs", ("GET", "/jobs/{id}"): "jobs", ("GET", "/jobs/{id}/result"): "jobs",
    ("DELETE", "/jobs/{id}"): "jobs",
}
BINARY_MEDIA_TYPES = ("application/octet-stream",)  # provider.apiGateway.binaryMediaTypes
MAX_PAYLOAD = 10 * 1024 * 1024  # API Gateway's request payload limit
ACCOUNT = "123456789012"
_FORBIDDEN = {"message": "Missing Authentication Token"}


def _pattern(resource: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(resource)) + "$")


def match(method: str, path: str) -> tuple[str, str, dict] | None:
    """(function, resource, path parameters) of a request, or None for a route API Gateway lacks."""
    for (route_method, resource), function in ROUTES.items():
        found = _pattern(resource).match(path)
        if found and route_method == method:
            return function, resource, found.groupdict()
    return None


def proxy_event(method: str, path: str, resource: str, params: dict, query: dict, headers: dict,
                body: bytes, caller: str) -> dict:
    binary = headers.get("Content-Type", headers.get("content-type", "")).split(";")[0] in BINARY_MEDIA_TYPES
    return {
        "resource": resource, "path": path, "httpMethod": method, "headers": headers,
        "queryStringParameters": query or None, "pathParameters": params or None,
        "body": (base64.b64encode(body).decode() if binary else body.decode()) if body else None,
        "isBase64Encoded": bool(body) and binary,
        "requestContext": {"resourcePath": resource, "httpMethod": method, "stage": "test",
                           "identity": {"userArn": caller, "caller": caller.rpartition("/")[2]}},
    }


class ApiGateway:
    def __init__(self, lambda_client: Any, functions: dict[str, str], credentials: Credentials, region: str):
        # the credentials IAM knows: a request signed with any others is refused
        self.lambda_ = lambda_client
        self.functions = functions  # route target -> function name
        self.credentials, self.region = credentials, region

    def call(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
             query: dict | None = None, caller: str = f"arn:aws:iam::{ACCOUNT}:user/tester") -> dict:
        """What API Gateway answers an authorized request: the function's proxy response."""
        found = match(method, path)
        if found is None:  # API Gateway answers an unknown route like an unsigned request
            return {"statusCode": 403, "headers": {"Content-Type": "application/json"}, "body": json.dumps(_FORBIDDEN)}
        if len(body) > MAX_PAYLOAD:
            return {"statusCode": 413, "headers": {}, "body": json.dumps({"message": "Request Too Long"})}
        function, resource, params = found
        event = proxy_event(method, path, resource, params, query or {}, dict(headers or {}), body, caller)
        answer = self.lambda_.invoke(FunctionName=self.functions[function], Payload=json.dumps(event))
        payload = json.loads(answer["Payload"].read())
        if "FunctionError" in answer:
            return {"statusCode": 502, "headers": {}, "body": json.dumps({"message": "Internal server error",
                                                                           "error": payload})}
        return payload

    def signature_ok(self, method: str, url: str, headers: dict, body: bytes) -> bool:
        """Recompute the request's SigV4 signature over the headers it says it signed."""
        auth = headers.get("Authorization", "")
        fields = dict(part.strip().split("=", 1) for part in auth.removeprefix("AWS4-HMAC-SHA256 ").split(",")
                      if "=" in part) if auth.startswith("AWS4-HMAC-SHA256 ") else {}
        if not fields or not fields.get("Credential", "").startswith(self.credentials.access_key + "/"):
            return False
        signed = fields["SignedHeaders"].split(";")
        lower = {k.lower(): v for k, v in headers.items()}
        request = AWSRequest(method=method, url=url, data=body,
                             headers={name: lower.get(name, "") for name in signed})
        request.context["timestamp"] = lower.get("x-amz-date", "")
        signer = SigV4Auth(self.credentials, "execute-api", self.region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        return expected == fields.get("Signature")

    @contextmanager
    def serve(self) -> Iterator[str]:
        """A loopback URL serving the API; yields it and stops the server afterwards."""
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                url = f"http://{self.headers.get('Host')}{self.path}"
                if not gateway.signature_ok(self.command, url, headers, body):
                    return self._send(403, {"Content-Type": "application/json"}, json.dumps(_FORBIDDEN).encode())
                split = urlsplit(self.path)
                answer = gateway.call(self.command, split.path, body, headers, dict(parse_qsl(split.query)),
                                      caller=f"arn:aws:iam::{ACCOUNT}:user/{gateway.credentials.access_key}")
                raw = answer.get("body") or ""
                data = base64.b64decode(raw) if answer.get("isBase64Encoded") else raw.encode()
                self._send(answer["statusCode"], answer.get("headers") or {}, data)

            def _send(self, status: int, headers: dict, data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, name="api-gateway", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
