"""Entry point of one local worker process: ``python -m wukong.local.worker_process``.

The parent writes the pickled (storage spec, queue key, parent pid, worker id) to stdin; see workers.py.
"""

import logging
import sys

from wukong.local.workers import worker_main
from wukong.serialization import loads

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker_main(*loads(sys.stdin.buffer.read()))
