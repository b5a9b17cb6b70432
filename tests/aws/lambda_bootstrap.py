"""A stand-in for Lambda's Python runtime, run by the AWS tests as `python3.12 -I -S -B` on deployed code.

Only the given task root and path entries are on sys.path, so the handlers find nothing of the
development venv. Handlers are imported the way Lambda does ("functions/x/handler.handler" ->
module functions.x.handler), and invocations arrive as JSON lines on stdin; each runs on its own
thread and its answer (result, or Lambda's errorType/errorMessage/stackTrace) goes back as a JSON
line on the original stdout. Everything the code prints goes to stderr. Two more requests serve
the import checks: a list of modules to import, and a pickled graph to load and compute here with
Dask's synchronous scheduler. Standard library only, until the deployed code is on the path.
"""

import argparse
import base64
import importlib
import json
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor


class Context:
    """The attributes of Lambda's context object that the handlers and Powertools read."""

    def __init__(self, fields: dict):
        self.function_name = fields["function_name"]
        self.invoked_function_arn = fields["invoked_function_arn"]
        self.memory_limit_in_mb = fields["memory_limit_in_mb"]
        self.aws_request_id = fields["aws_request_id"]
        self.function_version = "$LATEST"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "bundle-runtime"
        self._deadline = time.monotonic() + fields["timeout_seconds"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Runtime:
    def __init__(self, channel):
        self.channel = channel
        self.write_lock = threading.Lock()
        self.import_lock = threading.Lock()
        self.handlers = {}

    def handler(self, name: str):
        with self.import_lock:
            if name not in self.handlers:
                module, _, attr = name.rpartition(".")
                self.handlers[name] = getattr(importlib.import_module(module.replace("/", ".")), attr)
            return self.handlers[name]

    def answer(self, request_id: int, **fields) -> None:
        line = json.dumps({"id": request_id, **fields})
        with self.write_lock:
            self.channel.write(line + "\n")
            self.channel.flush()

    def invoke(self, request: dict) -> None:
        try:
            result = self.handler(request["handler"])(request["event"], Context(request["context"]))
        except Exception as exc:  # a function error, reported as Lambda reports it
            self.answer(request["id"], error={"errorType": type(exc).__name__, "errorMessage": str(exc),
                                              "stackTrace": traceback.format_tb(exc.__traceback__)})
            return
        try:
            self.answer(request["id"], result=result)
        except (TypeError, ValueError) as exc:  # Lambda's answer to a result that is not JSON
            self.answer(request["id"], error={"errorType": "Runtime.MarshalError", "errorMessage": str(exc),
                                              "stackTrace": []})

    def check_imports(self, request: dict) -> None:
        """Import each module; answer which failed (and why) and where the others came from."""
        missing, found = {}, {}
        for name in request["imports"]:
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                missing[name] = f"{type(exc).__name__}: {exc}"
            else:
                found[name] = getattr(module, "__file__", None)
        self.answer(request["id"], result={"missing": missing, "found": found,
                                           "python": list(sys.version_info[:3])})


    def compute(self, request: dict) -> None:
        """Load a graph pickled as the submit helper pickles it, (tasks, keys), which imports what
        its tasks refer to, as the planner's and the executors' loads do; then compute it with the
        deployed Dask (lazy imports inside the task functions happen too), and answer the values
        pickled the deployed way."""
        try:
            from dask.local import get_sync
            from wukong.serialization import dumps, loads

            dsk, keys = loads(base64.b64decode(request["graph"]))
            values = get_sync(dsk, keys)
        except Exception as exc:
            self.answer(request["id"], error={"errorType": type(exc).__name__, "errorMessage": str(exc),
                                              "stackTrace": traceback.format_tb(exc.__traceback__)})
            return
        self.answer(request["id"], result=base64.b64encode(dumps(values)).decode("ascii"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", action="append", required=True, help="sys.path entries, in order")
    args = parser.parse_args()
    # -I -S left only the standard library; the deployed code comes first, as on Lambda
    sys.path[:0] = args.path
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # prints and log lines (Powertools writes to stdout) must not mix into answers
    runtime = Runtime(channel)
    with ThreadPoolExecutor(max_workers=64, thread_name_prefix="invocation") as pool:
        for line in sys.stdin:
            request = json.loads(line)
            serve = (runtime.check_imports if "imports" in request else
                     runtime.compute if "graph" in request else runtime.invoke)
            pool.submit(serve, request)


if __name__ == "__main__":
    main()
