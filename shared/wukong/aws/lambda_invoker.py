"""Asynchronous Lambda invokes of the executor function: the AWS implementation of ``Invoker``.

A payload travels base64-encoded in a small JSON envelope, which grows it by a third; the limit that
matters is the encoded request against Lambda's asynchronous invoke limit, and
:func:`raw_payload_limit` turns that into the serialized-bytes limit the executors plan with.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wukong.invocation import Invocation, Invoker
from wukong.serialization import loads

#: Largest request body of an asynchronous (InvocationType="Event") Lambda invoke.
ASYNC_REQUEST_LIMIT = 1024 * 1024
_ENVELOPE_BYTES = len(json.dumps({"payload": ""}))


def raw_payload_limit(request_limit: int = ASYNC_REQUEST_LIMIT) -> int:
    """The largest serialized Invocation whose encoded event still fits in one async invoke."""
    return (request_limit - _ENVELOPE_BYTES) // 4 * 3


def encode_event(payload: bytes) -> bytes:
    return json.dumps({"payload": base64.b64encode(payload).decode("ascii")}).encode()


def decode_event(event: dict) -> Invocation:
    """The Invocation an executor event carries. Unpickling runs code: only the job's own functions
    may invoke the executor (IAM)."""
    return loads(base64.b64decode(event["payload"]))


class LambdaInvoker(Invoker):
    """Starts one executor per payload with ``InvocationType="Event"``, fanning out on a thread pool.

    ``client_factory`` makes the Lambda client on the first invoke, so an executor that never
    fans out never pays for building one. Any failed invoke raises after the others were tried:
    the executor then fails the job instead of leaving it to hang.
    """

    def __init__(self, function_name: str, client_factory: Callable[[], Any], max_workers: int = 16,
                 request_limit: int = ASYNC_REQUEST_LIMIT):
        if not function_name:
            raise ValueError("no executor function configured: set WUKONG_EXECUTOR_FUNCTION")
        self.function_name = function_name
        self.client_factory = client_factory
        self.max_workers = max_workers
        self.request_limit = request_limit
        self._client: Any = None

    def invoke(self, payloads: Sequence[bytes]) -> None:
        bodies = [encode_event(p) for p in payloads]
        for body in bodies:
            if len(body) > self.request_limit:
                raise ValueError(f"an executor event of {len(body)} bytes exceeds the asynchronous invoke "
                                 f"limit of {self.request_limit} bytes; lower payload_limit")
        if not bodies:
            return
        if self._client is None:
            self._client = self.client_factory()
        if len(bodies) == 1:
            self._send(bodies[0])
            return
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(bodies))) as pool:
            futures = [pool.submit(self._send, body) for body in bodies]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(bodies)} executor invokes failed") from errors[0]

    def _send(self, body: bytes) -> None:
        response = self._client.invoke(FunctionName=self.function_name, InvocationType="Event", Payload=body)
        if response.get("StatusCode") != 202:
            raise RuntimeError(f"asynchronous invoke of {self.function_name} answered {response.get('StatusCode')}")
