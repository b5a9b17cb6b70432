"""``wukong status ID``: a job's state, progress, timings and error, from a job API."""

from __future__ import annotations

import argparse

from wukong.cli._remote import add_endpoint_args, show_job


def cmd_status(args: argparse.Namespace) -> int:
    return show_job(args, lambda job: job.status())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a job's state, progress and error",
                       description="Show a job's state (planning, running, succeeded, failed, cancelled), "
                                   "tasks done out of total, timings and error.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print the full status document as JSON")
    add_endpoint_args(p)
    p.set_defaults(func=cmd_status)
