"""``wukong serve``: the job API (docs/http-api.md) on an embedded LocalCluster. Prints the URL and,
when it made one up, the token on stdout; Ctrl-C (or SIGTERM) cancels running jobs and shuts down.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal

from wukong.cli.common import EXIT_FAILED, EXIT_OK, positive_float, positive_int
from wukong.service.limits import (
    BODY_TIMEOUT,
    FD_SHARE,
    HEADER_TIMEOUT,
    KEEP_ALIVE_TIMEOUT,
    MAX_CONNECTIONS,
    MIN_CONNECTIONS,
    HttpLimits,
)

log = logging.getLogger("wukong.cli")
DEFAULT_PORT = 8750


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from wukong.service.server import LocalApiServer
    except ImportError as exc:
        log.error("wukong serve needs the server extra: pip install 'wukong[server]' (%s)", exc)
        return 1
    from wukong import LocalCluster
    from wukong.config import make_config

    config = make_config(None, token=args.token, n_workers=args.workers)
    token = config.token.get_secret_value() if config.token else None
    if not _is_loopback(args.host):
        log.warning("listening on %s: the token travels in clear text; put a TLS proxy in front", args.host)
    signal.signal(signal.SIGTERM, _interrupt)  # stop as cleanly on SIGTERM as on Ctrl-C
    log.info("starting a LocalCluster (Redis + local executor processes)")
    with LocalCluster(config=config) as cluster:
        limits = HttpLimits(header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                            keep_alive_timeout=args.keep_alive, max_connections=args.max_connections)
        server = LocalApiServer(cluster, token=token, host=args.host, port=args.port, config=config, limits=limits)
        print(f"WUKONG_ENDPOINT={server.url}", flush=True)
        if token is None:  # generated: the only place it is ever shown
            print(f"WUKONG_TOKEN={server.token}", flush=True)
        log.info("serving the Wukong job API on %s (Ctrl-C to stop)", server.url)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
    if server.fatal is not None:
        log.error("stopped: %s", server.fatal)
        return EXIT_FAILED
    log.info("stopped")
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve the HTTP job API on an embedded LocalCluster",
        description="Start a LocalCluster and serve the job API (POST /jobs, GET /jobs/{id}, ...; OpenAPI at "
                    "/openapi.json). Prints WUKONG_ENDPOINT=... and, when no token was given, a generated "
                    "WUKONG_TOKEN=... on stdout. Anyone with the token can run code here.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--token", default=None, metavar="T",
                   help="bearer token clients must send (default: WUKONG_TOKEN, else a generated one)")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="local executor processes (default: WUKONG_N_WORKERS or max(2, CPUs))")
    p.add_argument("--header-timeout", type=positive_float, default=HEADER_TIMEOUT, metavar="S",
                   help=f"a client must send its request headers within S seconds (default {HEADER_TIMEOUT:g})")
    p.add_argument("--body-timeout", type=positive_float, default=BODY_TIMEOUT, metavar="S",
                   help=f"close a connection whose request body stalls for S seconds (default {BODY_TIMEOUT:g})")
    p.add_argument("--keep-alive", type=positive_float, default=KEEP_ALIVE_TIMEOUT, metavar="S",
                   help=f"close idle keep-alive connections after S seconds (default {KEEP_ALIVE_TIMEOUT:g})")
    p.add_argument("--max-connections", type=positive_int, default=None, metavar="N",
                   help=f"connections open at once; more wait in the listen queue (default: {FD_SHARE * 100:g}%% "
                        f"of the file descriptor limit, ulimit -n, within {MIN_CONNECTIONS} to {MAX_CONNECTIONS})")
    p.set_defaults(func=cmd_serve)
