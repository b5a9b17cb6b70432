"""An in-process AWS for the end-to-end tests: moto runs Step Functions (the real ASL file) and
Lambda's API; every Lambda invoke is routed to our real handler files, with a real Redis behind them.

Handlers run in this process (the development venv) by default; with ``runtime`` set to a
``BundleRuntime`` they run in an isolated interpreter on the deployed code instead
(tests/aws/bundle_runtime.py). Routing keeps Lambda's semantics either way: ``RequestResponse`` runs the handler in the caller's thread and
returns its result (or a function error); ``Event`` returns at once and runs the handler on a
thread pool, as an executor's asynchronous invoke does on AWS (DESIGN-NOTES §5).
"""

from __future__ import annotations

import importlib.util
import io
import json
import threading
import traceback
import uuid
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moto.awslambda_simple.models import LambdaSimpleBackend

from bundle_runtime import BundleRuntime, FunctionError

ROOT = Path(__file__).resolve().parents[2]
ASL = ROOT / "statemachine" / "wukong.asl.json"
#: function name -> (handler as serverless.yml names it, the ASL placeholder of its ARN)
FUNCTIONS = {
    "planner": ("functions/planner/handler.handler", "PlannerFunctionArn"),
    "invoker": ("functions/invoker/handler.handler", "InvokerFunctionArn"),
    "executor": ("functions/executor/handler.handler", None),
    "executorFailed": ("functions/executor_failed/handler.handler", None),
    "waiter": ("functions/waiter/handler.handler", "WaiterFunctionArn"),
    "finalizer": ("functions/finalizer/handler.handler", "FinalizerFunctionArn"),
    "submit": ("functions/submit/handler.handler", None),
    "jobs": ("functions/jobs/handler.handler", None),
}


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that our handlers and Powertools read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"

    def __post_init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def load_handler(handler: str) -> Callable[[dict, Any], Any]:
    """Import ``functions/x/handler.handler`` by path, as Lambda does."""
    file, _, attr = handler.rpartition(".")
    path = ROOT / f"{file}.py"
    spec = importlib.util.spec_from_file_location(f"lambda_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attr)


def definition(arns: dict[str, str]) -> str:
    """The deployed ASL file with the function ARNs substituted, as DefinitionSubstitutions does."""
    text = ASL.read_text()
    for placeholder, arn in arns.items():
        text = text.replace("${" + placeholder + "}", arn)
    assert "${" not in text, "an ASL placeholder has no substitution"
    return text


class LambdaRouter:
    """Replaces moto's simple Lambda backend's invoke with calls into our handlers."""

    def __init__(self, max_workers: int = 16, runtime: BundleRuntime | None = None):
        self.runtime = runtime
        self.handlers: dict[str, Callable] = {}
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lambda-event")
        self.lock = threading.Lock()
        self.async_futures: list[Future] = []
        self.async_errors: list[str] = []
        self.async_events: list[dict] = []  # every Event invoke's event, to inspect what travelled
        self.results: dict[str, list[Any]] = {}  # function name -> results of RequestResponse invokes
        #: function name -> callable run with the event before the handler (a test's gate)
        self.before: dict[str, Callable[[dict], None]] = {}

    def install(self, monkeypatch) -> None:
        router = self

        def invoke(backend, function_name, qualifier, body, headers, response_headers):
            fn = backend.get_function(function_name, qualifier)
            return router.invoke(fn, body, headers.get("X-Amz-Invocation-Type") or "RequestResponse",
                                 response_headers)

        monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)

    def invoke(self, fn: Any, body: Any, invocation_type: str, response_headers: dict) -> bytes:
        handler = self.handler_for(fn.handler)
        event = json.loads(body) if body else {}
        context = LambdaContext(fn.function_name, fn.function_arn, int(fn.memory_size or 128))
        if invocation_type == "Event":
            with self.lock:
                self.async_events.append(event)
                self.async_futures.append(self.pool.submit(self._run_async, fn.function_name, handler, event, context))
            return b""
        try:
            gate = self.before.get(fn.function_name)
            if gate is not None:
                gate(event)
            result = handler(event, context)
        except FunctionError as exc:  # raised in the bundle runtime, already in Lambda's form
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(exc.payload).encode()
        except Exception as exc:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc),
                               "stackTrace": traceback.format_tb(exc.__traceback__)}).encode()
        self.results.setdefault(fn.function_name, []).append(result)
        return json.dumps(result).encode()

    def handler_for(self, name: str) -> Callable[[dict, Any], Any]:
        if self.runtime is not None:
            runtime = self.runtime
            return lambda event, context: runtime.invoke(name, event, context)
        if name not in self.handlers:
            self.handlers[name] = load_handler(name)
        return self.handlers[name]

    def _run_async(self, name: str, handler: Callable, event: dict, context: LambdaContext) -> None:
        try:
            handler(event, context)
        except Exception:
            self.async_errors.append(f"{name}: {traceback.format_exc()}")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)


def zip_of(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", text)  # moto stores the code; the router runs ours instead
    return buffer.getvalue()
