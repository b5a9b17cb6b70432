"""What the job commands (submit, status, result, jobs, cancel) share: the endpoint options, the
client they build, and how a job's status and result are shown.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("wukong.cli")


def add_endpoint_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("endpoint")
    group.add_argument("--endpoint", metavar="URL", default=None,
                       help="the job API (default: WUKONG_ENDPOINT), e.g. the URL `wukong serve` printed")
    group.add_argument("--token", metavar="T", default=None,
                       help="bearer token (default: WUKONG_TOKEN; prefer the variable: arguments show in `ps`)")
    group.add_argument("--auth", choices=("auto", "token", "sigv4"), default=None,
                       help="token, or AWS SigV4 for API Gateway (default auto: SigV4 for execute-api URLs)")


def connect(args: argparse.Namespace) -> Any:
    """A remote Client from the options and WUKONG_* variables; None (after saying why) without an endpoint."""
    from wukong import Client
    from wukong.config import make_config

    config = make_config(None, endpoint=args.endpoint, token=args.token, auth=args.auth)
    if not config.endpoint:
        log.error("no endpoint: pass --endpoint URL or set WUKONG_ENDPOINT (see `wukong serve`)")
        return None
    return Client(config=config, progress=False)


def show_job(args: argparse.Namespace, action: Callable[[Any], Any]) -> int:
    """Run ``action(handle)`` on job ``args.job_id`` and print the status it returns."""
    from wukong.cli.common import EXIT_OK, EXIT_USAGE

    client = connect(args)
    if client is None:
        return EXIT_USAGE
    print_status(action(client.job(args.job_id)), args.json)
    return EXIT_OK


def print_status(status: Any, as_json: bool) -> None:
    if as_json:
        print(status.model_dump_json(indent=2))
        return
    line = f"{status.job_id}  {status.state.value:<9}  {status.tasks_done}/{status.tasks_total} tasks"
    t = status.timings
    if t.finished_at is not None:
        line += f"  {t.finished_at - t.submitted_at:.2f} s"
    else:
        line += f"  submitted {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t.submitted_at))}"
    print(line)
    if status.error is not None:
        where = f" in task {status.error.key}" if status.error.key else ""
        print(f"  error{where}: {status.error.type}: {status.error.message}")


def report_failure(status: Any) -> None:
    """One line on stderr for a job that did not succeed."""
    err = status.error
    if err is None:
        log.error("job %s is %s", status.job_id, status.state.value)
        return
    where = f" (task {err.key})" if err.key else ""
    log.error("job %s %s%s: %s: %s", status.job_id, status.state.value, where, err.type, err.message)


def emit_result(service: Any, job_id: str, output: str | None) -> None:
    """Write the pickled result to ``output`` ('-' is stdout, raw), or print its repr."""
    blob = service.result_blob(job_id)
    if output == "-":
        sys.stdout.buffer.write(blob)
        sys.stdout.flush()
    elif output:
        with open(output, "wb") as f:
            f.write(blob)
        log.info("wrote the result (%d bytes, a pickle) to %s", len(blob), output)
    else:
        from wukong.serialization import loads

        print(repr(loads(blob)))


def dump_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
