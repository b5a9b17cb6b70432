"""``python -m wukong.proxy``: run the KV proxy until SIGTERM or SIGINT.

Settings come from the same ``WUKONG_*`` variables as everything else (proxy_ec2/bootstrap.sh
writes them), or, with ``--config-stdin``, from a JSON object on stdin (how LocalCluster passes
the Redis password without putting it in argv or the environment).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from wukong.config import WukongConfig, make_config
from wukong.invocation import Invoker
from wukong.proxy.server import IDLE_TIMEOUT, ProxyServer

log = logging.getLogger("wukong.proxy")
DEFAULT_PORT = 8989


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m wukong.proxy", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=env("WUKONG_PROXY_HOST", "0.0.0.0"), help="listen address (WUKONG_PROXY_HOST)")
    p.add_argument("--port", type=int, default=None, help="listen port (WUKONG_PROXY_PORT, default 8989)")
    p.add_argument("--queue-key", default=env("WUKONG_PROXY_QUEUE_KEY"),
                   help="local backend: the worker pool's Redis list on the first endpoint (WUKONG_PROXY_QUEUE_KEY)")
    p.add_argument("--function", default=None,
                   help="AWS backend: the executor Lambda to invoke (WUKONG_EXECUTOR_FUNCTION)")
    p.add_argument("--invokers", type=int, default=None, help="parallel invoker threads (WUKONG_NUM_LAMBDA_INVOKERS)")
    p.add_argument("--idle-timeout", type=float, default=float(env("WUKONG_PROXY_IDLE_TIMEOUT", IDLE_TIMEOUT)),
                   help=f"close a connection after this many seconds without a byte from its peer "
                        f"(WUKONG_PROXY_IDLE_TIMEOUT, default {IDLE_TIMEOUT:g})")
    p.add_argument("--config-stdin", action="store_true",
                   help="read a JSON object of WukongConfig fields (e.g. redis_password) from stdin")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[ProxyServer, WukongConfig, object]:
    """The server, its config, and what owns the invoker's connections (closed at exit)."""
    overrides = json.loads(sys.stdin.read() or "{}") if args.config_stdin else {}
    config = make_config(WukongConfig(), **overrides)
    if args.queue_key:
        from wukong.local.workers import RedisQueueInvoker
        from wukong.storage import RedisStores, spec_from_config

        spec = spec_from_config(config)
        if spec is None:
            raise SystemExit("wukong.proxy: the local backend needs WUKONG_REDIS_ENDPOINTS (the queue's server first)")
        owner: object = RedisStores(spec)
        password = spec.password
        invoker: Invoker = RedisQueueInvoker(owner.mds, args.queue_key)
    else:
        from wukong.aws.lambda_invoker import LambdaInvoker
        from wukong.aws.services import Services

        owner = Services(config)
        password = owner.redis_password()
        invoker = LambdaInvoker(args.function or config.executor_function, lambda: owner.client("lambda"),
                                max_workers=config.num_lambda_invokers)
    if not password:  # the MAC key is derived from it: without one, anybody could hand work to us
        raise SystemExit("wukong.proxy: no Redis password (WUKONG_REDIS_PASSWORD or WUKONG_REDIS_PASSWORD_SECRET); "
                         "the proxy refuses to run unauthenticated")
    n_invokers = args.invokers or config.num_lambda_invokers
    try:
        server = ProxyServer(password, invoker, n_invokers=n_invokers, tls=config.redis_tls,
                             idle_timeout=args.idle_timeout)
    except ValueError as exc:
        raise SystemExit(f"wukong.proxy: {exc}") from None
    return server, config, owner


async def serve(server: ProxyServer, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = await server.start(host, port)
    log.info("KV proxy listening on %s (idle connections closed after %g s)", address, server.idle_timeout)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    server, config, owner = build(args)
    port = args.port or config.proxy_port or DEFAULT_PORT
    try:
        asyncio.run(serve(server, args.host, port))
    finally:
        owner.close()


if __name__ == "__main__":
    main()
