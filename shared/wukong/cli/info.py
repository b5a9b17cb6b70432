"""``wukong info``: the configuration as this environment sets it, and the Redis binary a
LocalCluster would start. Secrets are never printed.
"""

from __future__ import annotations

import argparse
import json
import sys

from wukong.cli.common import EXIT_OK

_SECRET_FIELDS = {"redis_password"}


def cmd_info(args: argparse.Namespace) -> int:
    from wukong import WukongConfig, __version__
    from wukong.config import redact_url
    from wukong.errors import RedisUnavailableError
    from wukong.local.redis_server import find_redis_binary

    config = WukongConfig()  # defaults, as changed by WUKONG_* / REDIS_URL in this environment
    values = {}
    for name, info in WukongConfig.model_fields.items():
        value = getattr(config, name)
        if name in _SECRET_FIELDS and value is not None:
            value = "<set>"
        if name == "redis_url" and value:
            value = redact_url(value)
        values[name] = {"value": value, "description": info.description or ""}
    if config.uses_external_redis:
        redis_line = "none started: an existing server is configured (redis_endpoints / REDIS_URL)"
    else:
        try:
            redis_line = find_redis_binary()
        except RedisUnavailableError as exc:
            redis_line = f"NOT FOUND: {exc}"
    if args.json:
        print(json.dumps({"version": __version__, "redis_binary": redis_line, "config": values},
                         indent=2, default=str))
        return EXIT_OK
    print(f"wukong {__version__}")
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    print(f"embedded redis: {redis_line}")
    print("configuration (explicit arguments > WUKONG_* environment > defaults):")
    width = max(len(n) for n in values)
    for name, entry in values.items():
        line = f"  {name:<{width}} = {entry['value']!r}"
        if entry["description"]:
            line += f"    # {entry['description']}"
        print(line)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("info", help="show the configuration defaults and the Redis binary that would be used",
                          description="Show Wukong's configuration as this environment sets it, and which "
                                      "Redis server binary a LocalCluster would start.")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=cmd_info)
