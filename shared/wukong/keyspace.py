"""Names of one job's Redis keys: every key is ``wk:<job id>:...``, with task ids (never Dask keys)
naming per-task keys, so cleanup can compute every key a job may have written from its plan.
"""

from __future__ import annotations


class KeySpace:
    """Names of one job's keys. Values use task ids, never Dask keys."""

    def __init__(self, job_id: str):
        self.prefix = f"wk:{job_id}:"

    def path(self, pid: int) -> str:
        return f"{self.prefix}p:{pid}"

    def value(self, tid: int) -> str:
        return f"{self.prefix}v:{tid}"

    def counter(self, tid: int) -> str:
        return f"{self.prefix}c:{tid}"

    def claimer(self, tid: int) -> str:
        """Which invocation claimed fan-in task ``tid`` (so a retry of it may claim it again)."""
        return f"{self.prefix}o:{tid}"

    def started(self, tid: int) -> str:
        """The highest attempt of the invocation starting at ``tid`` that began running."""
        return f"{self.prefix}s:{tid}"

    def result(self, tid: int) -> str:
        return f"{self.prefix}r:{tid}"

    def chunk(self, base: str, i: int) -> str:
        """Chunk ``i`` of a chunked blob; ``base`` names the blob and the write (see chunks.py)."""
        return f"{self.prefix}k:{base}:{i}"

    def waiter(self, tid: int) -> str:
        """The one executor allowed to delay its I/O waiting on fan-in ``tid``'s counter."""
        return f"{self.prefix}w:{tid}"

    @property
    def chunk_counts(self) -> str:
        """Hash of chunk-set base -> number of chunks, so cleanup finds chunk keys without SCAN."""
        return f"{self.prefix}chunks"

    @property
    def scratch_dirs(self) -> str:
        """Set of local directories the job's tasks made (partd), removed when the job ends."""
        return f"{self.prefix}scratch-dirs"

    @property
    def warnings(self) -> str:
        """List of the warnings tasks raised (serialized TaskWarning), for the client to re-raise."""
        return f"{self.prefix}warnings"

    @property
    def outputs_done(self) -> str:
        return f"{self.prefix}outputs-done"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def ended(self) -> str:
        return f"{self.prefix}ended"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"

    @property
    def record(self) -> str:
        return f"{self.prefix}record"
