"""The run's clock: seconds and peak memory per phase, iteration and pruner (timings.csv).

Peak memory is measured per phase by :class:`MemoryPeaks`: the process's resident set
(``peak_rss_mb``) and, on a GPU, TensorFlow's device memory (``peak_device_mb``).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import List, Optional, Tuple

import pandas as pd

#: The columns of a flushed frame (the ``timings`` table's schema).
COLUMNS = ["phase", "iteration", "pruner", "seconds", "peak_rss_mb", "peak_device_mb"]

_MB = 1024.0 ** 2
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _vm_hwm_bytes() -> Optional[float]:
    """The process's resident high-water mark (Linux ``VmHWM``), in bytes; None where
    /proc/self/status has none."""
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return None


def _reset_vm_hwm() -> bool:
    """Resets the resident high-water mark to the current resident set (Linux: "5" into
    /proc/self/clear_refs); whether that was possible."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rusage_peak_bytes() -> float:
    """The process's peak resident set since it started (``getrusage``): what is left
    where the high-water mark cannot be reset (an upper bound of any phase's peak)."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return float(peak) if sys.platform == "darwin" else float(peak) * 1024.0


class MemoryPeaks:
    """Reads and resets the peak memory of the process: ``resident()`` (bytes of resident
    set) and ``device()`` (bytes of GPU:0 memory TensorFlow allocated; None without a GPU
    or before TensorFlow is imported).

    ``resettable`` says how the resident peak is measured: True on Linux, where writing
    "5" to /proc/self/clear_refs resets ``VmHWM`` at each phase's start, so a phase's peak
    is its own; False elsewhere (or where that file cannot be written), where the peak is
    the process's since it started (``getrusage``), an upper bound.
    """

    def __init__(self):
        self.resettable = _vm_hwm_bytes() is not None and _reset_vm_hwm()
        self._gpu: Optional[bool] = None

    def reset(self) -> None:
        """Starts a new measurement window (resident set and device memory)."""
        if self.resettable:
            _reset_vm_hwm()
        if self._has_gpu():
            import tensorflow as tf
            try:
                tf.config.experimental.reset_memory_stats("GPU:0")
            except (ValueError, RuntimeError):
                self._gpu = False

    def resident(self) -> float:
        """The resident peak of the window, in bytes."""
        if self.resettable:
            peak = _vm_hwm_bytes()
            if peak is not None:
                return peak
        return _rusage_peak_bytes()

    def device(self) -> Optional[float]:
        """GPU:0's peak of the window, in bytes (None without a GPU)."""
        if not self._has_gpu():
            return None
        import tensorflow as tf
        try:
            return float(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        except (ValueError, RuntimeError):
            self._gpu = False
            return None

    def _has_gpu(self) -> bool:
        # TensorFlow is only asked once it is imported (timing must not import it: flags
        # are validated before it loads) and once it has listed its devices.
        if self._gpu is None:
            if "tensorflow" not in sys.modules:
                return False
            import tensorflow as tf
            self._gpu = bool(tf.config.list_physical_devices("GPU"))
        return self._gpu


class _Open:
    """A phase being timed: its start, seconds of nested phases, peaks seen so far."""

    def __init__(self, start: float):
        self.start, self.inner = start, 0.0
        self.rss, self.device = 0.0, None

    def take(self, rss: float, device: Optional[float]) -> None:
        self.rss = max(self.rss, rss)
        if device is not None:
            self.device = device if self.device is None else max(self.device, device)


class Clock:
    """Collects (phase, iteration, pruner, seconds, peak_rss_mb, peak_device_mb) rows for
    timings.csv.

    Phases are exclusive in seconds: a phase entered inside another is counted in its own
    row and left out of the outer one's seconds. Each flush adds an ``other`` row, the time
    since the previous flush that no phase covered (bookkeeping between the stages), so
    the rows add up to the run's whole time. Peaks are inclusive: a phase's peak covers
    the phases nested in it (the memory they hold is the outer phase's too); ``other``
    rows have none.

    Args:
        memory: how peaks are read (default: this process's, :class:`MemoryPeaks`).
    """

    def __init__(self, memory: Optional[MemoryPeaks] = None):
        self.rows: List[tuple] = []
        self.started = self._flushed = time.perf_counter()
        self._open: List[_Open] = []
        self.memory = memory if memory is not None else MemoryPeaks()

    @contextlib.contextmanager
    def phase(self, phase: str, iteration: int = 0, pruner: str = ""):
        """Times and measures the block as one row of ``phase``."""
        if self._open:
            # The enclosing phase keeps the peak it reached before the window is reset.
            self._open[-1].take(self.memory.resident(), self.memory.device())
        self.memory.reset()
        entry = _Open(time.perf_counter())
        self._open.append(entry)
        try:
            yield
        finally:
            seconds = time.perf_counter() - entry.start
            self._open.pop()
            entry.take(self.memory.resident(), self.memory.device())
            if self._open:
                self._open[-1].inner += seconds
                self._open[-1].take(entry.rss, entry.device)
            self.rows.append((phase, iteration, pruner, seconds - entry.inner,
                              *_megabytes(entry.rss, entry.device)))

    def flush(self, iteration: int = 0) -> pd.DataFrame:
        """The rows since the last flush, then ``other`` (labelled ``iteration``)."""
        now = time.perf_counter()
        rows, self.rows = self.rows, []
        covered = sum(row[3] for row in rows)
        rows.append(("other", iteration, "", max(0.0, now - self._flushed - covered),
                     math.nan, math.nan))
        self._flushed = now
        return pd.DataFrame(rows, columns=COLUMNS)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _megabytes(rss: float, device: Optional[float]) -> Tuple[float, float]:
    return (round(rss / _MB, 1),
            math.nan if device is None else round(device / _MB, 1))

