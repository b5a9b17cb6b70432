"""``wukong result ID``: fetch a finished job's result; print its repr or write the pickle to a file."""

from __future__ import annotations

import argparse
import logging

from wukong.cli._remote import add_endpoint_args, connect, emit_result, report_failure
from wukong.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

log = logging.getLogger("wukong.cli")


def cmd_result(args: argparse.Namespace) -> int:
    client = connect(args)
    if client is None:
        return EXIT_USAGE
    handle = client.job(args.job_id)
    status = handle.wait(progress=not args.no_progress) if args.wait else handle.status()
    if status.state.value != "succeeded":
        report_failure(status)
        if not status.state.finished:
            log.error("pass --wait to wait for it")
        return EXIT_FAILED
    emit_result(client.service, args.job_id, args.output)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("result", help="fetch a job's result (repr on stdout, or the pickle to a file)",
                       description="Fetch a succeeded job's result. Exit 1 if the job failed, was cancelled "
                                   "or is still running (use --wait).")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("-o", "--output", metavar="OUT", default=None,
                   help="write the pickled result to OUT ('-' for stdout) instead of printing its repr")
    p.add_argument("--wait", action="store_true", help="wait for the job to end first")
    p.add_argument("--no-progress", action="store_true", help="with --wait: no progress bar on stderr")
    add_endpoint_args(p)
    p.set_defaults(func=cmd_result)
