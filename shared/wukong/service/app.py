"""The job API over HTTP (FastAPI): the routes of docs/http-api.md on any :class:`JobService`.

:class:`Guard` checks the bearer token and the body size limit before a route runs, so no request
body is read, let alone unpickled, before authentication. The OpenAPI document is generated here.
"""

from __future__ import annotations

import asyncio

import base64
import binascii
import hmac
import json
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from wukong.config import WukongConfig
from wukong.graph import TaskGraph, normalize_graph
from wukong.serialization import loads
from wukong.service.base import MAX_STATUS_WAIT, BadRequestError, JobService, ServiceError
from wukong.service.models import (
    JOB_ID_PATTERN,
    PICKLE_MEDIA_TYPE,
    JobList,
    JobStatus,
    Problem,
    SubmitRequest,
    UploadDone,
    UploadTicket,
    explain_errors,
)
from wukong.service.uploads import UploadError, UploadStore, open_private

#: Paths anyone may GET: the API description and a liveness probe reveal nothing about jobs.
PUBLIC_PATHS = frozenset({"/openapi.json", "/health"})

_JOB_ID = Path(pattern=JOB_ID_PATTERN, description="A job id from POST /jobs.")


#: Longest pause between two looks at a long-polled job: how late a long poll may answer after the job ends.
LONG_POLL_PACE = 0.1


def _problem(description: str) -> dict:
    return {"model": Problem, "description": description}


_AUTH = {401: _problem("Missing or wrong bearer token."), 400: _problem("Malformed request; the detail says why.")}
_JOB = {**_AUTH, 404: _problem("No such job on this server.")}
_BINARY = {"schema": {"type": "string", "format": "binary"}}


class _BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: bearer-token check (constant time), then the body size cap.

    Upload PUTs skip the token: like an S3 presigned URL, the unguessable upload id is the credential.
    """

    def __init__(self, app: Any, token: str, max_body: int, max_upload: int):
        self.app = app
        self._token = token.encode()
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        is_upload = method == "PUT" and path.startswith("/uploads/")
        headers = dict(scope["headers"])
        if path not in PUBLIC_PATHS and not is_upload and not self._authorized(headers):
            return await _send_problem(send, 401, "missing or wrong bearer token (send Authorization: Bearer <token>)",
                                       [(b"www-authenticate", b"Bearer")])
        limit = self.max_upload if is_upload else self.max_body
        hint = "" if is_upload else "; upload larger graphs with POST /uploads first"
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            return await _send_problem(send, 400, "Content-Length is not a number")
        if length is not None and int(length) > limit:
            return await _send_problem(send, 413, f"request body of {int(length)} bytes is over the limit of "
                                                  f"{limit} bytes{hint}")
        seen = {"bytes": 0, "started": False}

        async def capped_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:  # a chunked body with no Content-Length
                    raise _BodyTooLarge
            return message

        async def watched_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["started"] = True
            await send(message)

        try:
            await self.app(scope, capped_receive, watched_send)
        except ClientDisconnect:
            # the client left (or was cut off for sending too slowly) mid-body: nobody to answer, and
            # not an application error; uvicorn would log a traceback for every such request
            return
        except _BodyTooLarge:
            if seen["started"]:
                raise
            await _send_problem(send, 413, f"request body is over the limit of {limit} bytes{hint}")

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)


async def _send_problem(send: Any, status: int, detail: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def graph_from_blob(blob: bytes) -> TaskGraph:
    """Unpickle ``(dsk, keys)`` and validate it. Runs only after authentication: a graph is code."""
    if not blob:
        raise BadRequestError("the graph is empty")
    try:
        obj = loads(blob)
    except Exception as exc:
        raise BadRequestError(f"the graph does not unpickle: {type(exc).__name__}: {exc}") from None
    if not (isinstance(obj, tuple) and len(obj) == 2):
        raise BadRequestError(f"the graph must be a pickled tuple (dsk, keys), not {type(obj).__name__}")
    try:
        return normalize_graph(*obj)
    except KeyError as exc:
        raise BadRequestError(f"requested key {exc.args[0]!r} is not in the graph") from None
    except Exception as exc:
        raise BadRequestError(f"not a valid Dask graph: {type(exc).__name__}: {exc}") from None


async def _known_query_only(request: Request) -> None:  # async: a sync one takes a pool thread per request
    """Reject query parameters a route does not declare, so a typo (``?limt=5``) is not silently ignored."""
    route = request.scope.get("route")
    declared = {p.alias for p in route.dependant.query_params} if route is not None else set()
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        raise BadRequestError(f"unknown query parameter(s): {', '.join(repr(u) for u in unknown)}")


def create_app(service: JobService, token: str, config: WukongConfig, uploads: UploadStore) -> FastAPI:
    """The API on ``service``; every route but /openapi.json, /health and upload PUTs needs ``token``."""
    from wukong import __version__

    app = FastAPI(
        title="Wukong job API", version=__version__, docs_url=None, redoc_url=None,
        dependencies=[Depends(_known_query_only)],
        description="Submit Dask graphs, follow them, fetch results. A graph is code: only holders of the "
                    "token may submit one. See docs/http-api.md and docs/security.md.",
    )
    secured = [Security(HTTPBearer(auto_error=False, description="The token `wukong serve` printed."))]

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": explain_errors(exc.errors())}, status_code=400)

    @app.exception_handler(405)
    async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's Allow lists only the first route on the path; list every route's methods
        allowed = sorted({m for route in app.router.routes if route.matches(request.scope)[0] != Match.NONE
                          for m in (getattr(route, "methods", None) or ())})
        return JSONResponse({"detail": f"{request.method} is not allowed here; use {', '.join(allowed)}"},
                            status_code=405, headers={"Allow": ", ".join(allowed)})

    @app.get("/health", tags=["server"], summary="Liveness probe (no token needed): 503 when jobs cannot run.",
             responses={503: {"description": "The server cannot run jobs now; the detail says why."}})
    async def health() -> JSONResponse:
        # on the loop's own executor, not the 40 threads sync routes (and their long polls) share
        reason = await asyncio.get_running_loop().run_in_executor(None, service.unhealthy)
        if reason is not None:
            return JSONResponse({"status": "unavailable", "detail": reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.post(
        "/jobs", status_code=202, response_model=JobStatus, dependencies=secured, tags=["jobs"],
        summary="Submit a graph; answers at once with the job id.",
        responses={**_AUTH, 413: _problem("Body over max_body_bytes (the detail states the limit)."),
                   415: _problem("Body is neither JSON nor application/octet-stream.")},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}},
            PICKLE_MEDIA_TYPE: _BINARY,
        }}},
    )
    async def submit_job(request: Request, response: Response) -> JobStatus:
        body = await request.body()  # the Guard has authenticated the caller and capped the size
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        config_overrides = upload_id = None
        if media == "application/json":
            try:
                req = SubmitRequest.model_validate_json(body)
            except ValidationError as exc:
                raise BadRequestError(explain_errors(exc.errors())) from None
            config_overrides, upload_id = req.config, req.graph_upload
            if req.graph is not None:
                try:
                    body = base64.b64decode(req.graph, validate=True)
                except (binascii.Error, ValueError):
                    raise BadRequestError("'graph' is not valid base64") from None
        elif media != PICKLE_MEDIA_TYPE:
            raise HTTPException(415, f"send application/json or {PICKLE_MEDIA_TYPE}, not {media or 'no Content-Type'}")

        def intake() -> JobStatus:
            blob = uploads.take(upload_id) if upload_id is not None else body
            return service.submit(graph_from_blob(blob), config_overrides)

        status = await run_in_threadpool(intake)
        response.headers["Location"] = f"/jobs/{status.job_id}"
        return status

    @app.get("/jobs", response_model=JobList, dependencies=secured, tags=["jobs"], responses=_AUTH,
             summary="Recent jobs, most recent first.")
    def list_jobs(limit: int = Query(50, ge=1, le=1000)) -> JobList:
        return JobList(jobs=service.jobs(limit))

    @app.get("/jobs/{job_id}", response_model=JobStatus, dependencies=secured, tags=["jobs"], responses=_JOB,
             summary="A job's state, progress, timings and error.")
    async def job_status(job_id: str = _JOB_ID,
                         wait: float = Query(0.0, ge=0, le=MAX_STATUS_WAIT,
                                             description="Long poll: hold the answer up to this many seconds "
                                                         "until the job ends.")) -> JobStatus:
        # waits on the event loop, never in one of the 40 threads that sync routes share: 45 open
        # long polls held every thread for 19 s, and /health, GET /jobs and POST /jobs with them
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + wait, 0.01
        while True:
            status = service.status(job_id)  # in memory: answers at once
            left = deadline - loop.time()
            if status.state.finished or left <= 0:
                return status
            await asyncio.sleep(min(pause, left))
            pause = min(2 * pause, LONG_POLL_PACE)

    @app.get(
        "/jobs/{job_id}/result", dependencies=secured, tags=["jobs"], response_class=Response,
        summary="The results: a pickle of the values, nested as the keys were requested.",
        responses={200: {"content": {PICKLE_MEDIA_TYPE: _BINARY}, "description": "The pickled results."},
                   303: {"description": "API Gateway only: the results are at the Location URL (a presigned S3 "
                                        "GET, valid for minutes); follow it without credentials."},
                   **_JOB, 409: _problem("The job has not succeeded (yet)."),
                   410: _problem("The results expired or were evicted.")},
    )
    def job_result(job_id: str = _JOB_ID) -> Response:
        return Response(service.result_blob(job_id), media_type=PICKLE_MEDIA_TYPE)

    @app.delete("/jobs/{job_id}", response_model=JobStatus, dependencies=secured, tags=["jobs"], responses=_JOB,
                summary="Cancel a job; executors stop at their next check. A finished job is unchanged.")
    def cancel_job(job_id: str = _JOB_ID) -> JobStatus:
        return service.cancel(job_id)

    @app.post("/uploads", status_code=201, response_model=UploadTicket, dependencies=secured, tags=["uploads"],
              responses=_AUTH, summary="Get a single-use URL to PUT a large graph to.")
    def create_upload() -> UploadTicket:
        upload_id, expires_at = uploads.create()
        return UploadTicket(upload_id=upload_id, url=f"/uploads/{upload_id}", max_bytes=uploads.max_bytes,
                            expires_at=expires_at)

    @app.put(
        "/uploads/{upload_id}", response_model=UploadDone, tags=["uploads"],
        summary="Upload a graph's bytes (the upload id is the credential, as in a presigned URL).",
        responses={401: _problem("Unknown, expired or already used upload id."), 400: _problem("Malformed request."),
                   413: _problem("Upload over max_upload_bytes (the detail states the limit).")},
        openapi_extra={"requestBody": {"required": True, "content": {PICKLE_MEDIA_TYPE: _BINARY}}},
    )
    async def put_upload(request: Request, upload_id: str = Path(pattern=r"^[A-Za-z0-9_-]{16,64}$")) -> UploadDone:
        target = uploads.begin(upload_id)
        size = 0
        try:
            with open_private(target) as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    out.write(chunk)
        except BaseException:
            uploads.finish(upload_id, None)
            raise
        if size == 0:  # nothing a job could be made of; the id is spent, as after any failed PUT
            uploads.finish(upload_id, None)
            raise UploadError(400, "the upload is empty: PUT the pickled (dsk, keys), then POST /jobs with its id "
                                   "(this upload id is spent; ask POST /uploads for a new one)")
        uploads.finish(upload_id, size)
        return UploadDone(upload_id=upload_id, size=size)

    app.openapi = lambda: _openapi(app)
    app.add_middleware(Guard, token=token, max_body=config.max_body_bytes, max_upload=config.max_upload_bytes)
    return app


def openapi_document() -> dict:
    """The OpenAPI document, built without a cluster behind it; docs/openapi.json is this, written by
    ``python -m wukong.service.app > docs/openapi.json``."""
    return create_app(None, "", WukongConfig(), None).openapi()  # routes only use these per request


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, with our 400 in place of its 422 (validation errors answer 400 here)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        # POST /jobs reads its body itself (JSON or raw pickle), so FastAPI does not list this model
        submit = SubmitRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(submit.pop("$defs", {}), SubmitRequest=submit)
        app.openapi_schema = schema
    return app.openapi_schema


if __name__ == "__main__":
    print(json.dumps(openapi_document(), indent=2))
