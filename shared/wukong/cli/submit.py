"""``wukong submit FILE``: send a graph to a job API, print the job id, and optionally wait for
the result. FILE is a Python file defining ``dsk`` and ``keys``, or a pickle of ``(dsk, keys)``.
"""

from __future__ import annotations

import argparse
import logging
import runpy
from pathlib import Path
from typing import Any

from wukong.cli._remote import add_endpoint_args, connect, emit_result, report_failure
from wukong.errors import job_interrupted
from wukong.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

log = logging.getLogger("wukong.cli")


def load_graph_file(path: str) -> tuple[Any, Any]:
    """``(dsk, keys)`` from a .py file (run as a script) or a pickle; ValueError says what is wrong."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{path}: no such file")
    if file.suffix == ".py":
        namespace = runpy.run_path(str(file), run_name="__wukong_submit__")
        if "dsk" not in namespace or "keys" not in namespace:
            raise ValueError(f"{path} must define the variables dsk (the graph) and keys")
        return namespace["dsk"], namespace["keys"]
    from wukong.serialization import loads

    try:
        obj = loads(file.read_bytes())  # the user's own file: trusted like any script they run
    except Exception as exc:
        raise ValueError(f"{path} is neither a .py file nor a readable pickle: {type(exc).__name__}: {exc}") from None
    if not (isinstance(obj, tuple) and len(obj) == 2):
        raise ValueError(f"{path} must hold a pickled tuple (dsk, keys), not {type(obj).__name__}")
    return obj


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        dsk, keys = load_graph_file(args.file)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    client = connect(args)
    if client is None:
        return EXIT_USAGE
    job_config = {} if args.job_timeout is None else {"job_timeout": args.job_timeout}
    handle = client.submit(dsk, keys, **job_config)
    print(handle.job_id, flush=True)
    if not args.wait:
        return EXIT_OK
    try:
        status = handle.wait(progress=not args.no_progress)
    except KeyboardInterrupt:
        handle.cancel()
        raise job_interrupted(f"job {handle.job_id} interrupted (Ctrl-C): cancelled") from None
    if status.state.value != "succeeded":
        report_failure(status)
        return EXIT_FAILED
    emit_result(client.service, handle.job_id, args.output)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit", help="submit a graph to a job API (wukong serve or AWS) and print its job id",
        description="Submit a graph and print the job id on stdout. FILE is a Python file that defines "
                    "`dsk` (a Dask graph) and `keys`, or a pickle of the tuple (dsk, keys). A graph is "
                    "code: the server runs it.",
    )
    p.add_argument("file", metavar="FILE", help="a .py file defining dsk and keys, or a pickle of (dsk, keys)")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its result (exit 1 if it fails)")
    p.add_argument("--no-progress", action="store_true", help="with --wait: no progress bar on stderr")
    p.add_argument("-o", "--output", metavar="OUT", default=None,
                   help="with --wait: write the pickled result to OUT ('-' for stdout) instead of printing its repr")
    p.add_argument("--job-timeout", type=float, default=None, metavar="S", help="fail the job after S seconds")
    add_endpoint_args(p)
    p.set_defaults(func=cmd_submit)
