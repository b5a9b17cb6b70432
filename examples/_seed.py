"""What the seed examples share: scaling a seed size down for quick runs, and each script's command line.

Not a seed workload itself; ``bench/seed_examples.py`` and ``tests/test_examples.py`` import the examples
with this folder on ``sys.path``, as ``python examples/NAME.py`` does.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any


def scaled(seed_size: int, scale: float, minimum: int = 1) -> int:
    """``seed_size * scale`` rounded, but at least ``minimum``: scale 1.0 is the seed's own size."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return max(minimum, round(seed_size * scale))


def scaled_grid(seed_size: int, seed_chunk: int, scale: float, min_chunk: int = 1) -> tuple[int, int]:
    """``(size, chunk)`` for a chunked dimension at ``scale``: the chunk scales, the number of blocks stays.

    So the task graph of a quick run is the seed's, block for block; only the data shrinks.
    """
    if seed_size % seed_chunk:
        raise ValueError(f"{seed_size} is not a whole number of {seed_chunk}-chunks")
    chunk = scaled(seed_chunk, scale, min_chunk)
    return chunk * (seed_size // seed_chunk), chunk


def script_main(run: Callable[..., tuple[Any, str]], description: str) -> None:
    """``python examples/NAME.py [--scale S] [--workers N]``: the seed's setup, one run, its check.

    The seed's ``LocalCluster(host=..., proxy_address=..., redis_endpoints=...)`` names the hosts of its
    AWS deployment; locally, ``LocalCluster()`` starts its own Redis and executor processes instead.
    """
    from wukong import Client, LocalCluster

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the seed's size along each dimension (default 1.0: the seed's size)")
    parser.add_argument("--workers", type=int, default=None, help="local executor processes")
    args = parser.parse_args()
    settings = {} if args.workers is None else {"n_workers": args.workers}
    with LocalCluster(**settings) as local_cluster:
        client = Client(local_cluster)
        t0 = time.perf_counter()
        result, check = run(client, scale=args.scale)
        seconds = time.perf_counter() - t0
        print(f"result: {type(result).__name__} {getattr(result, 'shape', result)!s:.60}")
        print(f"check:  {check}")
        print(f"time:   {seconds:.2f} s including the check")
        print(client.last_report.summary())
