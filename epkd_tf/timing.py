"""The run's clock: seconds per phase, iteration and pruner (timings.csv)."""
from __future__ import annotations

import contextlib
import time
from typing import List

import pandas as pd


class Clock:
    """Collects (phase, iteration, pruner, seconds) rows for timings.csv.

    Phases are exclusive: a phase entered inside another is counted in its own row and
    left out of the outer one's seconds. Each flush adds an ``other`` row, the time since
    the previous flush that no phase covered (bookkeeping between the stages), so the rows
    add up to the run's whole time."""

    def __init__(self):
        self.rows: List[tuple] = []
        self.started = self._flushed = time.perf_counter()
        self._inner: List[float] = []     # per open phase: seconds spent in nested phases

    @contextlib.contextmanager
    def phase(self, phase: str, iteration: int = 0, pruner: str = ""):
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            inner = self._inner.pop()
            if self._inner:
                self._inner[-1] += seconds
            self.rows.append((phase, iteration, pruner, seconds - inner))

    def flush(self, iteration: int = 0) -> pd.DataFrame:
        """The rows since the last flush, then ``other`` (labelled ``iteration``)."""
        now = time.perf_counter()
        rows, self.rows = self.rows, []
        covered = sum(row[3] for row in rows)
        rows.append(("other", iteration, "", max(0.0, now - self._flushed - covered)))
        self._flushed = now
        return pd.DataFrame(rows, columns=["phase", "iteration", "pruner", "seconds"])

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
