"""The test side of lambda_bootstrap.py: starts the isolated runtime on deployed code (the unpacked
zip bundle, or the image's contents) and sends it invocations, one JSON line each, matching the
answers to the calls by id, so many invocations (the router's threads) run at once."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from deploy_bundle import FunctionCode
from wukong.graph import to_task_mapping
from wukong.serialization import dumps, loads

BOOTSTRAP = Path(__file__).resolve().with_name("lambda_bootstrap.py")


class FunctionError(Exception):
    """A handler raised in the runtime; ``payload`` is Lambda's errorType/errorMessage/stackTrace."""

    def __init__(self, payload: dict):
        super().__init__(f"{payload['errorType']}: {payload['errorMessage']}")
        self.payload = payload


class BundleRuntime:
    def __init__(self, code: FunctionCode, env: dict[str, str]):
        # the environment is only what a function gets on Lambda (no PYTHONPATH: -I ignores it anyway)
        self.code = code
        self.process = subprocess.Popen(
            [str(code.python), "-I", "-S", "-B", str(BOOTSTRAP), *(a for p in code.path for a in ("--path", str(p)))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=code.task_root,
            env={**env, "LAMBDA_TASK_ROOT": str(code.task_root)})
        self.ids = itertools.count(1)
        self.pending: dict[int, Future] = {}
        self.lock = threading.Lock()
        self.invocations: dict[str, int] = {}  # handler -> invocations answered
        self.reader = threading.Thread(target=self._read_answers, name="bundle-runtime-reader", daemon=True)
        self.reader.start()

    def _send(self, request: dict) -> Future:
        future: Future = Future()
        with self.lock:
            request["id"] = next(self.ids)
            self.pending[request["id"]] = future
            try:
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                del self.pending[request["id"]]
                raise RuntimeError(f"the bundle runtime exited ({self.process.poll()})") from exc
        return future

    def _read_answers(self) -> None:
        for line in self.process.stdout:
            answer = json.loads(line)
            with self.lock:
                future = self.pending.pop(answer["id"])
            future.set_result(answer)
        with self.lock:  # the runtime died: nobody waits forever
            for future in self.pending.values():
                future.set_exception(RuntimeError(f"the bundle runtime exited ({self.process.wait()})"))
            self.pending.clear()

    def invoke(self, handler: str, event: Any, context: Any, timeout: float = 900) -> Any:
        """Run ``handler`` on ``event`` in the runtime; its result, or FunctionError."""
        fields = {"function_name": context.function_name, "invoked_function_arn": context.invoked_function_arn,
                  "memory_limit_in_mb": context.memory_limit_in_mb,
                  "aws_request_id": getattr(context, "aws_request_id", None) or uuid.uuid4().hex,
                  "timeout_seconds": context.get_remaining_time_in_millis() / 1000}
        answer = self._send({"handler": handler, "event": event, "context": fields}).result(timeout)
        with self.lock:
            self.invocations[handler] = self.invocations.get(handler, 0) + 1
        if "error" in answer:
            raise FunctionError(answer["error"])
        return answer["result"]

    def check_imports(self, modules: list[str], timeout: float = 300) -> dict:
        """{"missing": {module: error}, "found": {module: file}, "python": [3, 12, x]}."""
        return self._send({"imports": list(modules)}).result(timeout)["result"]

    def compute(self, dsk: Any, keys: Any, timeout: float = 300) -> Any:
        """Compute ``keys`` of ``dsk`` in the runtime (Dask's synchronous scheduler on the deployed
        code); the values, or FunctionError when loading or running the graph failed there."""
        blob = base64.b64encode(dumps((to_task_mapping(dsk), keys))).decode("ascii")
        answer = self._send({"graph": blob}).result(timeout)
        if "error" in answer:
            raise FunctionError(answer["error"])
        return loads(base64.b64decode(answer["result"]))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # the runtime finishes what runs, then exits
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=10)
