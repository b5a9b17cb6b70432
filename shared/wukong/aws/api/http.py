"""API Gateway's Lambda proxy events and responses (REST API, payload 1.0), and routing. Pure.

Errors answer ``{"detail": ...}`` as ``wukong serve`` does; the routes are declared per function, so
one function never serves another's routes even if API Gateway were wired wrongly.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class ApiError(Exception):
    """Answer ``status`` with ``{"detail": detail}``."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, dict(headers or {})


@dataclass(frozen=True)
class ApiRequest:
    method: str
    resource: str  # the route template, e.g. /jobs/{id}
    path_params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    caller: str | None  # the IAM principal API Gateway authenticated

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def only_query(self, *allowed: str) -> None:
        """Refuse parameters the route does not take, so a typo (``?limt=5``) is not silently ignored."""
        unknown = sorted(set(self.query) - set(allowed))
        if unknown:
            raise ApiError(400, f"unknown query parameter(s): {', '.join(repr(u) for u in unknown)}")


def parse_event(event: Mapping[str, Any]) -> ApiRequest:
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "the request body is not valid base64") from None
    else:
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
    identity = (event.get("requestContext") or {}).get("identity") or {}
    return ApiRequest(
        method=str(event.get("httpMethod") or "").upper(),
        resource=str(event.get("resource") or ""),
        path_params=dict(event.get("pathParameters") or {}),
        query=dict(event.get("queryStringParameters") or {}),
        headers={str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()},
        body=body,
        caller=identity.get("userArn") or identity.get("caller"),
    )


def respond(status: int, body: BaseModel | Mapping[str, Any], headers: Mapping[str, str] | None = None) -> dict:
    text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body)
    return {"statusCode": status, "headers": {"Content-Type": "application/json", **(headers or {})},
            "body": text, "isBase64Encoded": False}


def problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> dict:
    return respond(status, {"detail": detail}, headers)


Route = Callable[[ApiRequest], dict]


def dispatch(event: Mapping[str, Any], routes: Mapping[tuple[str, str], Route]) -> dict:
    """Run the route for the event's method and resource; ApiError becomes its problem answer.

    The caller must be an IAM principal: API Gateway only invokes these functions after checking
    the SigV4 signature, and a route deployed without ``authorizer: aws_iam`` must not serve
    anything (a graph is code), so the body is not even read without one.
    """
    try:
        request = parse_event(event)
        if not request.caller:
            raise ApiError(401, "this API needs IAM authentication (SigV4-signed requests); none reached the function")
        route = routes.get((request.method, request.resource))
        if route is None:
            allowed = sorted(m for m, r in routes if r == request.resource)
            if allowed:
                raise ApiError(405, f"{request.method} is not allowed here; use {', '.join(allowed)}",
                               {"Allow": ", ".join(allowed)})
            raise ApiError(404, f"no route {request.method} {request.resource or '?'} on this function")
        return route(request)
    except ApiError as exc:
        return problem(exc.status, exc.detail, exc.headers)
