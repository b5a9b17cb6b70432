"""Children that end with their owner: on Linux, servers a LocalCluster starts get a parent-death
signal (``prctl(PR_SET_PDEATHSIG)``), so a SIGKILLed owner does not leave Valkey or the KV proxy
running forever. Elsewhere, and off the main thread, nothing changes (see :func:`die_with_owner`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_owner(sig: int = signal.SIGTERM, thread_outlives_child: bool = False) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child receive ``sig`` when its owner dies, or None where that
    cannot be trusted.

    Linux sends the signal when the *thread* that forked the child ends, not the process, so it is
    used only from the main thread: a cluster made on a short-lived thread must not lose its Redis
    when that thread returns. ``thread_outlives_child``: the caller's thread is known to outlive the
    child (the Redis supervisor's, which ends only after the servers it started are stopped).
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread() and not thread_outlives_child:
        return None
    owner = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec: no locks, no allocation-heavy work
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != owner:  # the owner died before the signal was armed
            os.kill(os.getpid(), sig)

    return arm
