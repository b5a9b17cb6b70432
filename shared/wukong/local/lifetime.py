"""Children and files that end with their owner: on Linux, servers a LocalCluster starts get a
parent-death signal (``prctl(PR_SET_PDEATHSIG)``), so a SIGKILLed owner does not leave Valkey or
the KV proxy running forever; its temporary files go in an :class:`OwnedTempDir`, removed by a
reaper when the owner dies. (Workers watch a pipe from their owner instead: see workers.py.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from types import FrameType

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


class OwnedTempDir:
    """A private temporary directory that is removed when its owner closes it *or dies*.

    A SIGKILLed process runs no cleanup, so a tiny reaper (``sh``) is started with a pipe on its
    stdin whose only writer is the owner: when the owner exits, by any means, the kernel closes
    the pipe, ``cat`` sees end of file and the reaper removes the directory. It runs in its own
    session, so Ctrl-C in a terminal does not take it down with the owner's process group.
    Everything a LocalCluster writes to disk goes below it (the workers' ``TMPDIR`` included).
    """

    #: The reaper waits this long after the owner's death before removing, so that workers (which
    #: watch a pipe of their own) have exited and nothing is written below the directory after it.
    REAP_DELAY = 1.0

    def __init__(self, prefix: str = "wukong-"):
        self.path = tempfile.mkdtemp(prefix=prefix)
        script = f'cat >/dev/null; sleep {self.REAP_DELAY}; rm -rf -- "$0"; sleep 2; rm -rf -- "$0"'
        try:
            self._reaper: subprocess.Popen | None = subprocess.Popen(
                ["/bin/sh", "-c", script, self.path], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError:  # no /bin/sh (not POSIX): the directory is still removed by close()
            self._reaper = None

    def subdir(self, name: str) -> str:
        path = os.path.join(self.path, name)
        os.makedirs(path, exist_ok=True)
        return path

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        reaper, self._reaper = self._reaper, None
        if reaper is not None:  # nothing left for it to remove: end it and its children now
            with contextlib.suppress(ProcessLookupError):
                os.killpg(reaper.pid, signal.SIGKILL)
            reaper.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                reaper.wait(5)


def raise_from_signal(signum: int, frame: FrameType | None, exc: BaseException) -> None:
    """Raise ``exc`` from a signal handler, except inside a finalizer, where Python would print
    and swallow it (a Redis client's ``__del__`` run by the garbage collector, say) and the signal
    would be lost: there the signal is sent again a moment later, once the finalizer has returned."""
    f = frame
    while f is not None:
        if f.f_code.co_name == "__del__":
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        f = f.f_back
    raise exc


class SigtermAsExit:
    """While installed, SIGTERM raises ``SystemExit(143)`` in the main thread instead of ending the
    process on the spot, so ``with`` blocks, ``finally`` and ``close()`` run as they do for Ctrl-C.

    Installed only from the main thread, and only over the default action: a handler the
    application set is its own business. :meth:`uninstall` puts the default back if ours is
    still the one installed.
    """

    def __init__(self) -> None:
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise_from_signal(signum, frame, SystemExit(128 + signum))

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if not self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._installed = False
        if signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
