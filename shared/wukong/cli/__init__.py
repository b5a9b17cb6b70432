"""The ``wukong`` command line. Each subcommand lives in its own module with a ``register(sub)``
function; :data:`COMMANDS` lists them in ``--help`` order.

Results and reports go to stdout; progress bars and log messages go to stderr, so
``wukong demo --json > report.json`` captures only the reports. Exit codes: 0 success, 1 a job
failed or a result did not match numpy, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from wukong.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from wukong.cli.demo import relative_error_up_to_row_signs, tree_reduction_graph
from wukong.local.lifetime import raise_from_signal

__all__ = ["main", "build_parser", "relative_error_up_to_row_signs", "tree_reduction_graph"]

log = logging.getLogger("wukong.cli")

#: Subcommand modules under wukong.cli, imported lazily so ``wukong --help`` stays fast.
COMMANDS: tuple[str, ...] = (
    "demo",
    "info",
    "serve",
    "submit",
    "status",
    "result",
    "jobs",
    "cancel",
    "simulate",
)


def build_parser() -> argparse.ArgumentParser:
    from wukong import __version__

    parser = argparse.ArgumentParser(
        prog="wukong",
        description="Wukong runs Dask task graphs with decentralized, locality-aware scheduling: "
                    "locally on embedded Redis and worker processes, or on AWS Lambda.",
        epilog="Exit codes: 0 success, 1 a job or check failed, 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"wukong {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"wukong.cli.{name}").register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("wukong: %(levelname)s %(message)s" if verbose else "wukong: %(message)s"))
    root = logging.getLogger("wukong")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT handler: KeyboardInterrupt (also when the signal lands in a finalizer)."""
    raise_from_signal(signum, frame, KeyboardInterrupt())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.verbose, args.quiet)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from wukong.errors import WukongError

    try:
        return args.func(args)
    except KeyboardInterrupt as exc:  # one line: which job was cancelled, if one was running
        log.error("%s", exc if getattr(exc, "wukong_job_interrupted", False) else "interrupted")
        return EXIT_INTERRUPTED
    except ValidationError as exc:  # e.g. a WUKONG_* environment variable with a bad value
        log.error("invalid configuration: %s", exc)
        return EXIT_USAGE
    except WukongError as exc:  # e.g. Redis unreachable: one clear line, not a traceback
        log.error("%s: %s", type(exc).__name__, exc)
        return EXIT_FAILED
    except BrokenPipeError:
        # stdout was closed early (`wukong info | head`): silence the flush at exit, too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


