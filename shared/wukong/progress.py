"""A progress bar on stderr (tasks done out of total), driven by a job's progress callback."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBar:
    """Callable as ``bar(done, total)``; ``close()`` when the job ends."""

    def __init__(self, description: str = "wukong"):
        self.description = description
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.description, unit="task", file=sys.stderr,
                             dynamic_ncols=True, leave=True)
        self._bar.update(max(0, min(done, total) - self._bar.n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
