"""Exceptions Wukong raises itself.

A task's own exception is re-raised with its original type, with a PEP 678 note naming the
task; these classes cover everything else.
"""

from __future__ import annotations


class WukongError(Exception):
    """Base class of Wukong's own errors."""


class InvalidGraphError(WukongError, TypeError):
    """The object passed as a graph is not a Dask graph."""


class MissingKeyError(WukongError, KeyError):
    """A requested key, or a task's dependency, is not in the graph. ``args[0]`` is the key, as with
    Dask's own schedulers; ``str()`` is a sentence saying what to fix."""

    def __init__(self, key: object, message: str):
        super().__init__(key)
        self.message = message

    def __str__(self) -> str:  # KeyError would print only the key's repr
        return self.message

    def __reduce__(self):
        return type(self), (self.args[0], self.message)


class UnsupportedGraphError(WukongError, ValueError):
    """The graph needs something its executors cannot have: the caller's memory, or on AWS a
    local disk shared between executors."""


class GraphCycleError(WukongError, ValueError):
    """The graph has a cycle."""


class JobFailedError(WukongError):
    """A job failed for a reason other than a task's own exception."""


class JobTimeoutError(WukongError, TimeoutError):
    """A job did not finish within its timeout."""


class RemoteTaskError(WukongError):
    """A task raised an exception that could not be sent back as itself (it does not pickle).

    The message holds the original type, message and traceback.
    """


class RedisUnavailableError(WukongError, ConnectionError):
    """No Redis server could be reached or started."""


class ExecutorCrashedError(JobFailedError):
    """An executor died while running a task (killed, out of memory) on every attempt."""


class SerializationError(WukongError, TypeError):
    """A task's output (or input) could not be serialized to move it between executors."""


class OutputTooLargeError(WukongError, ValueError):
    """A task's serialized output is over the configured ``max_output_size``."""


class FunctionTimeoutError(ExecutorCrashedError, TimeoutError):
    """An executor ran past the function timeout (Lambda's limit; enforced locally too) on every attempt."""


class MemoryLimitError(ExecutorCrashedError, MemoryError):
    """An executor used more memory than ``lambda_memory_mb`` on every attempt (Lambda kills such a
    function; locally ``enforce_memory_limit`` does the same)."""


class ValueNotStoredError(WukongError):
    """A live Redis server refused to store a value (out of memory, or longer than it takes).

    ``what`` names the value (a task's output, a result, a schedule), ``nbytes`` its serialized
    size; ``reason`` says which server refused and its limit.
    """

    def __init__(self, what: str, nbytes: int, reason: str):
        super().__init__(f"{what} ({nbytes:,} bytes serialized) was not stored: {reason}")
        self.what, self.nbytes, self.reason = what, nbytes, reason

    def __reduce__(self):
        return type(self), (self.what, self.nbytes, self.reason)


def job_interrupted(message: str) -> KeyboardInterrupt:
    """The KeyboardInterrupt to raise when Ctrl-C stopped a job (cancelled, its tasks stopped).

    A plain KeyboardInterrupt, not a subclass: code that handles Ctrl-C handles it, and Python
    exits with 130 only for that exact type. Left uncaught in a script it prints ``message`` in
    one line instead of a traceback (see :func:`report_interrupts_in_one_line`).
    """
    exc = KeyboardInterrupt(message)
    exc.wukong_job_interrupted = True  # type: ignore[attr-defined]
    report_interrupts_in_one_line()
    return exc


def report_interrupts_in_one_line() -> None:
    """Make an uncaught job interrupt print one line on stderr instead of a traceback; any other
    exception still goes to the hook that was there before."""
    import sys

    previous = sys.excepthook
    if getattr(previous, "wukong_interrupts", False):
        return

    def hook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        if getattr(exc, "wukong_job_interrupted", False):
            print(f"wukong: {exc}", file=sys.stderr, flush=True)
        else:
            previous(exc_type, exc, tb)

    hook.wukong_interrupts = True  # type: ignore[attr-defined]
    sys.excepthook = hook
