"""The run's clock measures each phase's peak memory (timings.csv peak_rss_mb,
peak_device_mb)."""
import math

import numpy as np
import pytest

from epkd_tf.timing import COLUMNS, Clock, MemoryPeaks

MB = 1024 ** 2


@pytest.mark.unit
def test_a_phase_that_allocates_an_array_shows_it_in_its_peak():
    """A 256 MB array made (and touched) inside a phase raises that phase's resident peak
    by about its size over a phase that allocates nothing; where the high-water mark can
    be reset (Linux), a later phase without the array is back near the baseline."""
    clock = Clock()
    with clock.phase("baseline"):
        pass
    with clock.phase("allocate"):
        block = np.ones(256 * MB // 8)          # every page written: resident
        del block
    with clock.phase("after"):
        pass
    rows = clock.flush().set_index("phase")
    baseline, allocate = rows.peak_rss_mb["baseline"], rows.peak_rss_mb["allocate"]
    assert baseline > 0
    assert allocate - baseline > 0.8 * 256      # noise: other threads, allocator slack
    if clock.memory.resettable:
        assert rows.peak_rss_mb["after"] < allocate - 0.8 * 256
    assert math.isnan(rows.peak_device_mb["baseline"]) or rows.peak_device_mb["baseline"] >= 0
    assert math.isnan(rows.peak_rss_mb["other"])
    assert list(clock.flush().columns) == COLUMNS


class ScriptedMemory(MemoryPeaks):
    """Peaks read from a script: the resident peak since the last reset is ``level``."""

    def __init__(self):
        self.resettable, self._gpu = True, True
        self.level, self.peak = 0.0, 0.0

    def set(self, level):
        self.level, self.peak = level, max(self.peak, level)

    def reset(self):
        self.peak = self.level

    def resident(self):
        return self.peak * MB

    def device(self):
        return 2 * self.peak * MB


@pytest.mark.unit
def test_an_outer_phase_s_peak_includes_its_nested_phases_and_what_came_before():
    memory = ScriptedMemory()
    clock = Clock(memory)
    with clock.phase("export", 1, "student"):
        memory.set(300)                 # the outer phase's own peak, before the inner one
        memory.set(100)
        with clock.phase("deployment_evaluation", 1, "student"):
            memory.set(200)
            memory.set(150)
        memory.set(120)
    with clock.phase("logging", 1):
        memory.set(110)
    rows = clock.flush(1).set_index("phase")
    assert rows.peak_rss_mb.to_dict() == pytest.approx(
        {"deployment_evaluation": 200, "export": 300, "logging": 120, "other": math.nan},
        nan_ok=True)
    assert rows.peak_device_mb["export"] == 600
