"""The submit function: POST /uploads (a presigned S3 PUT for a large graph) and POST /jobs (the
request checked, translated to the execution input of docs/aws-runtime.md, the execution started).

Nothing here unpickles: the planner does that, so a graph that is a pickle but not a valid
``(dsk, keys)`` shows up as a failed job (kind ``internal``), not as a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from typing import Any

from pydantic import ValidationError

from wukong.aws.api.http import ApiError, ApiRequest, dispatch, respond
from wukong.aws.api.status import status_from_execution
from wukong.aws.observability import Observability
from wukong.aws.services import Services, job_config
from wukong.planning import new_job_id
from wukong.service.models import (
    AWS_INLINE_GRAPH_LIMIT,
    PICKLE_MEDIA_TYPE,
    SubmitRequest,
    UploadTicket,
    explain_errors,
)

#: A JSON body holds at most the base64 of an inline graph plus a small config.
MAX_JSON_BODY = (AWS_INLINE_GRAPH_LIMIT + 2) // 3 * 4 + 16 * 1024
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_UPLOAD_HINT = "; upload larger graphs with POST /uploads first"


def upload_key(upload_id: str) -> str:
    return f"graphs/{upload_id}"


def check_pickle(blob: bytes, what: str) -> None:
    """A cheap look at the first byte (pickle protocol 2+ opens with PROTO, 0x80), never a load."""
    if not blob:
        raise ApiError(400, f"{what} is empty")
    if blob[:1] != b"\x80":
        raise ApiError(400, f"{what} is not a pickle: send wukong.serialization.dumps((dsk, keys))")


def inline_graph(blob: bytes) -> dict:
    if len(blob) > AWS_INLINE_GRAPH_LIMIT:
        raise ApiError(413, f"an inline graph of {len(blob)} bytes is over the limit of "
                            f"{AWS_INLINE_GRAPH_LIMIT} bytes{_UPLOAD_HINT}")
    check_pickle(blob, "the graph")
    return {"inline": base64.b64encode(blob).decode("ascii")}


def parse_submit(request: ApiRequest) -> tuple[dict | None, str | None, dict]:
    """(inline graph, upload id, config overrides) of a POST /jobs body, or ApiError saying what is wrong."""
    if request.media_type == PICKLE_MEDIA_TYPE:
        return inline_graph(request.body), None, {}
    if request.media_type != "application/json":
        raise ApiError(415, f"send application/json or {PICKLE_MEDIA_TYPE}, not {request.media_type or 'no Content-Type'}")
    if len(request.body) > MAX_JSON_BODY:
        raise ApiError(413, f"request body of {len(request.body)} bytes is over the limit of {MAX_JSON_BODY} bytes"
                            + _UPLOAD_HINT)
    try:
        req = SubmitRequest.model_validate_json(request.body)
    except ValidationError as exc:
        raise ApiError(400, explain_errors(exc.errors())) from None
    config = req.config.overrides() if req.config else {}
    if req.graph_upload is not None:
        if not _UPLOAD_ID.match(req.graph_upload):
            raise ApiError(400, f"graph_upload {req.graph_upload!r} is not an upload id from POST /uploads")
        return None, req.graph_upload, config
    try:
        blob = base64.b64decode(req.graph, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "'graph' is not valid base64") from None
    return inline_graph(blob), None, config


class SubmitApi:
    def __init__(self, services: Services, obs: Observability):
        config = services.config
        if not config.state_machine_arn or not config.bucket:
            raise ValueError("set WUKONG_STATE_MACHINE_ARN and WUKONG_BUCKET for the submit function")
        self.services, self.obs, self.config = services, obs, config

    def routes(self) -> dict:
        return {("POST", "/uploads"): self.create_upload, ("POST", "/jobs"): self.submit}

    def create_upload(self, request: ApiRequest) -> dict:
        request.only_query()
        upload_id = secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]
        ttl = self.config.upload_ttl
        url = self.services.client("s3").generate_presigned_url(
            "put_object", Params={"Bucket": self.config.bucket, "Key": upload_key(upload_id)}, ExpiresIn=ttl)
        ticket = UploadTicket(upload_id=upload_id, url=url, max_bytes=self.config.max_upload_bytes,
                              expires_at=time.time() + ttl)
        return respond(201, ticket)

    def submit(self, request: ApiRequest) -> dict:
        request.only_query()
        graph, upload_id, config = parse_submit(request)
        if upload_id is not None:
            graph = self._uploaded_graph(upload_id)
        job_id = new_job_id()
        self.obs.logger.append_keys(job_id=job_id)
        started = self.services.client("stepfunctions").start_execution(
            stateMachineArn=self.config.state_machine_arn, name=job_id,
            input=json.dumps({"job_id": job_id, "graph": graph, "config": config}))
        self.obs.logger.info("submitted", extra={"caller": request.caller, "upload": upload_id})
        status = status_from_execution({"name": job_id, "status": "RUNNING", "startDate": started["startDate"]})
        return respond(202, status, {"Location": f"/jobs/{job_id}"})

    def _uploaded_graph(self, upload_id: str) -> dict:
        """The S3 location of a finished upload, after checking its size and first byte (one ranged GET)."""
        from botocore.exceptions import ClientError

        key = upload_key(upload_id)
        try:
            head = self.services.client("s3").get_object(Bucket=self.config.bucket, Key=key, Range="bytes=0-0")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise ApiError(400, f"no upload {upload_id!r}: PUT the graph to the URL POST /uploads returned first") from None
            if code == "InvalidRange":
                raise ApiError(400, f"upload {upload_id!r} is empty") from None
            raise
        first = head["Body"].read()
        size = int(str(head.get("ContentRange", "")).rpartition("/")[2] or head.get("ContentLength") or 0)
        if size > self.config.max_upload_bytes:
            raise ApiError(413, f"upload {upload_id!r} of {size} bytes is over the limit of "
                                f"{self.config.max_upload_bytes} bytes")
        check_pickle(first, f"upload {upload_id!r}")
        return {"s3": {"bucket": self.config.bucket, "key": key}}


def submit_api(event: dict, obs: Observability, context: Any = None) -> dict:
    with Services(job_config()) as services:
        return dispatch(event, SubmitApi(services, obs).routes())
