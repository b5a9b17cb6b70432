"""``wukong jobs``: the recent jobs of a job API, most recent first."""

from __future__ import annotations

import argparse

from wukong.cli._remote import add_endpoint_args, connect, dump_json, print_status
from wukong.cli.common import EXIT_OK, EXIT_USAGE, positive_int


def cmd_jobs(args: argparse.Namespace) -> int:
    client = connect(args)
    if client is None:
        return EXIT_USAGE
    statuses = client.jobs(args.limit)
    if args.json:
        dump_json({"jobs": [s.model_dump(mode="json") for s in statuses]})
        return EXIT_OK
    for status in statuses:
        print_status(status, as_json=False)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="list recent jobs", description="List the job API's recent jobs, most recent first.")
    p.add_argument("--limit", type=positive_int, default=50, metavar="N", help="at most N jobs (default 50)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    add_endpoint_args(p)
    p.set_defaults(func=cmd_jobs)
