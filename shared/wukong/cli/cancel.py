"""``wukong cancel ID``: cancel a job; its executors stop at their next check."""

from __future__ import annotations

import argparse

from wukong.cli._remote import add_endpoint_args, show_job


def cmd_cancel(args: argparse.Namespace) -> int:
    return show_job(args, lambda job: job.cancel())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cancel", help="cancel a job",
                       description="Cancel a job. Its executors stop at their next check; a job that has "
                                   "already finished is left as it is. Prints the job's status.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    add_endpoint_args(p)
    p.set_defaults(func=cmd_cancel)
