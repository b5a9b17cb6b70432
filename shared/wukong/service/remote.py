"""The job service over HTTP: what ``Client(endpoint=...)`` and the job commands talk to, whether
the endpoint is ``wukong serve`` (bearer token) or API Gateway on AWS (SigV4 via botocore).
Standard library HTTP only, so a base install stays light.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from wukong.errors import WukongError
from wukong.graph import TaskGraph
from wukong.planning import unserializable_task
from wukong.serialization import dumps
from wukong.service.base import (
    BadRequestError,
    JobNotFinishedError,
    JobService,
    ResultGoneError,
    ServiceError,
    UnknownJobError,
)
from wukong.service.models import (
    AWS_INLINE_GRAPH_LIMIT,
    PICKLE_MEDIA_TYPE,
    JobConfig,
    JobList,
    JobStatus,
    UploadTicket,
)

#: API Gateway hosts: <api-id>.execute-api.<region>.amazonaws.com
_EXECUTE_API = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")
_ERRORS = {400: BadRequestError, 404: UnknownJobError, 409: JobNotFinishedError, 410: ResultGoneError}


class ApiUnavailableError(WukongError, ConnectionError):
    """The endpoint could not be reached."""


class AuthenticationError(ServiceError):
    """The endpoint refused our credentials (401, or 403 from API Gateway)."""

    status = 401


class BearerAuth:
    def __init__(self, token: str):
        self._token = token

    def headers(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        return {**headers, "Authorization": f"Bearer {self._token}"}

    def __repr__(self) -> str:  # never show the token
        return "BearerAuth(<token>)"


class SigV4Auth:
    """Signs each request for API Gateway IAM auth (service ``execute-api``); credentials come from
    botocore's default chain (environment, profile, instance role) unless given."""

    def __init__(self, region: str, credentials: Any = None):
        try:
            import botocore.session
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise WukongError("SigV4 signing needs botocore: pip install 'wukong[aws]'") from exc
        self.region = region
        self._credentials = credentials or botocore.session.get_session().get_credentials()
        if self._credentials is None:
            raise WukongError("no AWS credentials found for SigV4 signing (environment, profile or role)")

    def headers(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth as _Signer
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        _Signer(self._credentials, "execute-api", self.region).add_auth(request)
        return dict(request.headers.items())


def make_auth(endpoint: str, token: str | None, mode: str = "auto", region: str | None = None) -> Any:
    """Bearer for ``wukong serve``; SigV4 for API Gateway (``mode="auto"`` tells them apart by host)."""
    match = _EXECUTE_API.match(urlsplit(endpoint).hostname or "")
    if mode == "sigv4" or (mode == "auto" and match and not token):
        region = region or (match.group(1) if match else None)
        if region is None:
            raise WukongError("SigV4 needs a region: set aws_region (WUKONG_AWS_REGION)")
        return SigV4Auth(region)
    if not token:
        raise WukongError(f"no token for {endpoint}: pass token= or set WUKONG_TOKEN (wukong serve prints one)")
    return BearerAuth(token)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects surface as HTTPError: following one must not carry our credentials along."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpJobService(JobService):
    """:class:`JobService` over the HTTP API of docs/http-api.md."""

    def __init__(self, endpoint: str, auth: Any, timeout: float = 60.0, inline_limit: int = 1024 * 1024):
        self.endpoint = endpoint.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)
        self.inline_limit = min(inline_limit, AWS_INLINE_GRAPH_LIMIT) if isinstance(auth, SigV4Auth) else inline_limit

    # --- the interface ---------------------------------------------------------------------
    def submit(self, graph: TaskGraph, config: JobConfig | None = None) -> JobStatus:
        try:
            blob = dumps((dict(zip(graph.keys, graph.nodes)), graph.requested))
        except Exception as exc:
            raise unserializable_task(zip(graph.keys, graph.nodes), exc) from exc
        body: dict[str, Any] = {"config": config.overrides()} if config and config.overrides() else {}
        if len(blob) <= self.inline_limit:
            body["graph"] = base64.b64encode(blob).decode()
        else:
            body["graph_upload"] = self.upload(blob)
        return JobStatus.model_validate_json(self._call("POST", "/jobs", json.dumps(body).encode(),
                                                        "application/json"))

    def upload(self, blob: bytes) -> str:
        """Upload a large graph through a single-use URL (presigned on AWS); returns its upload id."""
        ticket = UploadTicket.model_validate_json(self._call("POST", "/uploads"))
        # no Authorization header: the URL itself is the credential (and S3 would reject ours)
        url = ticket.url if ticket.url.startswith(("http://", "https://")) else self.endpoint + ticket.url
        self._call(ticket.method, url, blob, PICKLE_MEDIA_TYPE, signed=False)
        return ticket.upload_id

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        query = f"?{urlencode({'wait': round(wait, 3)})}" if wait > 0 else ""
        return JobStatus.model_validate_json(self._call("GET", f"/jobs/{job_id}{query}",
                                                        timeout=self.timeout + wait))

    def result_blob(self, job_id: str) -> bytes:
        return self._call("GET", f"/jobs/{job_id}/result")

    def jobs(self, limit: int = 50) -> list[JobStatus]:
        return JobList.model_validate_json(self._call("GET", f"/jobs?limit={int(limit)}")).jobs

    def cancel(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate_json(self._call("DELETE", f"/jobs/{job_id}"))

    # --- transport ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: bytes | None = None, media_type: str | None = None,
              signed: bool = True, timeout: float | None = None) -> bytes:
        url = path if path.startswith(("http://", "https://")) else self.endpoint + path
        headers = {"Accept": "application/json, application/octet-stream"}
        if media_type:
            headers["Content-Type"] = media_type
        if signed:
            headers = self.auth.headers(method, url, body, headers)
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location") if exc.code == 303 and method == "GET" else None
            if location:
                # API Gateway hands large answers (results) over as a presigned S3 URL, which is
                # its own credential: S3 refuses a request that also carries our signature
                exc.close()
                return self._call("GET", urljoin(url, location), signed=False, timeout=timeout)
            raise _service_error(exc, method, path) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnavailableError(f"cannot reach the Wukong API at {self.endpoint}: {reason}") from None

    def __repr__(self) -> str:
        return f"<HttpJobService {self.endpoint} auth={self.auth!r}>"


def _service_error(exc: urllib.error.HTTPError, method: str, path: str) -> ServiceError:
    raw = exc.read()
    try:
        detail = json.loads(raw).get("detail") or json.loads(raw).get("message")
    except (ValueError, AttributeError):
        detail = raw[:500].decode(errors="replace")
    detail = f"{method} {path.split('?')[0]} answered {exc.code}: {detail or exc.reason}"
    if exc.code in (401, 403):
        return AuthenticationError(detail)
    error = _ERRORS.get(exc.code, ServiceError)(detail)
    error.status = exc.code
    return error
