"""Restarts the embedded Redis servers of a LocalCluster when they die, so a long-lived owner such as
``wukong serve`` serves again instead of answering 503 for good. A restarted server is empty: the
listeners hear of each restart (to fail the jobs that lost their data) and of a failed one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from wukong.local.redis_server import RedisServerProcess
from wukong.local.workers import describe_exit

log = logging.getLogger(__name__)

#: How often the servers' processes are looked at (a waitpid each: nothing to the server). Well
#: inside the ~0.7 s a client's retries last (wukong.redis_connection.connect), so most clients
#: reconnect to the new server without an error.
REDIS_CHECK_INTERVAL = 0.25

Listener = Callable[[str], None]


class RedisSupervisor:
    """Watches ``servers`` on a thread of its own and restarts any that exits unasked (killed,
    crashed), on the same port with the same password, so every client reconnects unchanged.

    That thread starts the new servers, so on Linux they get the parent-death signal too
    (wukong.local.lifetime), which fires when the *thread* ends: :meth:`halt` stops the restarts,
    and the thread ends only at :meth:`finish`, once the owner has stopped the servers.
    """

    def __init__(self, servers: Sequence[RedisServerProcess], interval: float = REDIS_CHECK_INTERVAL):
        self.servers = servers
        self.interval = interval
        self._listeners: list[tuple[Listener, Listener]] = []
        self._lock = threading.Lock()  # a restart and halt() never overlap
        self._halted = False
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="wukong-redis-supervisor", daemon=True)
        self._thread.start()

    def subscribe(self, restarted: Listener, lost: Listener) -> Callable[[], None]:
        """Call ``restarted(message)`` after each restart, ``lost(message)`` if one fails; returns
        the function that unsubscribes."""
        entry = (restarted, lost)
        with self._lock:
            self._listeners.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._listeners:
                    self._listeners.remove(entry)

        return unsubscribe

    def halt(self) -> None:
        """Restart nothing from now on (waits for a restart under way to finish)."""
        with self._lock:
            self._halted = True

    def finish(self, timeout: float = 10.0) -> None:
        """End the thread: call after the servers it may have started are stopped."""
        self.halt()
        self._finished.set()
        self._thread.join(timeout)

    def _watch(self) -> None:
        while not self._finished.wait(self.interval):
            for server in list(self.servers):
                try:
                    self._check(server)
                except Exception:  # never let the thread end: its servers would get their death signal
                    log.exception("the Redis supervisor failed looking at %s", server.endpoint)

    def _check(self, server: RedisServerProcess) -> None:
        with self._lock:
            if self._halted or not server.died:
                return
            where = "%s:%s" % server.endpoint
            cause = describe_exit(server.returncode)
            try:
                said = server.restart(thread_outlives_child=True)
            except Exception as exc:
                message = (f"the embedded Redis on {where} stopped ({cause}) and could not be restarted: "
                           f"{type(exc).__name__}: {exc}")
                failed = True
                self._halted = True  # nothing more to do: the owner decides (wukong serve exits)
            else:
                message = f"the embedded Redis on {where} stopped ({cause}{'; it said: ' + said if said else ''})"
                failed = False
            listeners = list(self._listeners)
        if failed:
            log.error("%s", message)
        else:
            log.warning("%s; restarted it, empty, on the same port: the jobs running on it lost their data",
                        message)
        for restarted, lost in listeners:
            try:
                (lost if failed else restarted)(message)
            except Exception:  # one listener's failure must not keep the news from the others
                log.exception("a Redis supervisor listener failed")
