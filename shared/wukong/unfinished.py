"""What a job that stopped short never did: the pure half of job-timeout and stall messages.

Storage reads which leaf invocations claimed their start and which requested outputs are stored;
this names the tasks behind the gaps, in a message bounded to the first few keys plus a count.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

#: How many keys a message names before it only counts the rest.
SHOWN = 5


@dataclass(frozen=True)
class Unfinished:
    """Keys of the leaf invocations that never started and of requested outputs never stored."""

    unstarted_leaves: tuple[Hashable, ...]
    missing_outputs: tuple[Hashable, ...]

    def describe(self, shown: int = SHOWN) -> str:
        """One bounded sentence; empty when nothing is missing."""
        parts = []
        if self.unstarted_leaves:
            # a leaf queued behind busy executors has not started either, so "lost" is only a suspicion
            parts.append(f"{_count(self.unstarted_leaves, 'leaf invocation')} never started (lost, or "
                         f"still queued): {bounded_keys(self.unstarted_leaves, shown)}")
        if self.missing_outputs:
            parts.append(f"{_count(self.missing_outputs, 'requested output')} never stored: "
                         f"{bounded_keys(self.missing_outputs, shown)}")
        return "; ".join(parts)


class KeyOrId(dict):
    """Task id -> Dask key for the ids looked up; any other id is shown as ``<task id N>``."""

    def __missing__(self, tid: int) -> str:
        return f"<task id {tid}>"


def find_unfinished(keys: Sequence[Hashable], leaves: Sequence[int], started: Sequence[bool],
                    outputs: Sequence[int], stored: Sequence[bool]) -> Unfinished:
    """``keys`` maps task id to Dask key; ``started``/``stored`` line up with ``leaves``/``outputs``."""
    if len(started) != len(leaves) or len(stored) != len(outputs):
        raise ValueError("every leaf and output needs exactly one mark")
    return Unfinished(
        unstarted_leaves=tuple(keys[t] for t, ok in zip(leaves, started) if not ok),
        missing_outputs=tuple(keys[t] for t, ok in zip(outputs, stored) if not ok),
    )


def bounded_keys(keys: Sequence[Hashable], shown: int = SHOWN) -> str:
    """The first ``shown`` keys' reprs, then how many more there are."""
    text = ", ".join(repr(k) for k in keys[:shown])
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _count(items: Sequence, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"
