"""The frontier benchmark's own logic (``benchmarks/frontier.py``): the IDX reader it
imports Fashion-MNIST with, and the drop ladder it reads off one run with the package's
stop rules."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.unit

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def frontier():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("frontier_benchmark",
                                                      BENCHMARKS / "frontier.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _idx(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file, written independently of the reader."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_idx_files_read_back_exactly(frontier, tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(7,), (5, 4, 3)]:
        array = rng.integers(0, 256, shape)
        path = tmp_path / "a.gz"
        path.write_bytes(_idx(array))
        np.testing.assert_array_equal(frontier.read_idx(str(path)), array)
    path.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc"))
    with pytest.raises(ValueError, match="unsigned-byte IDX"):
        frontier.read_idx(str(path))


def test_the_ladder_is_what_each_max_accuracy_drop_would_have_chosen(frontier, tmp_path):
    """Validation accuracy 90.0% for the teacher; students lose 0.1, 0.3, 0.6 and 1.5
    points, each cheaper than the last. A run with a drop of 0.25 stops after student 2
    and keeps 1; 0.5 stops after 3 and keeps 2; 1.0 after 4 and keeps 3; 2.0 never stops
    and keeps the cheapest, 4."""
    pd.DataFrame({"iteration": [0], "validation_accuracy": [0.900], "test_accuracy": [0.9],
                  "cost": [100.0], "goal_met": [False]}).to_csv(tmp_path / "teacher.csv",
                                                                index=False)
    pd.DataFrame({"iteration": [1, 2, 3, 4],
                  "validation_accuracy": [0.899, 0.897, 0.894, 0.885],
                  "test_accuracy": [0.9, 0.9, 0.9, 0.9], "cost": [80.0, 64.0, 51.0, 41.0],
                  "goal_met": [False] * 4}).to_csv(tmp_path / "students.csv", index=False)
    rungs = frontier.ladder(str(tmp_path), [0.05, 0.25, 0.5, 1.0, 2.0], "latency")
    assert rungs == [(0.05, 0), (0.25, 1), (0.5, 2), (1.0, 3), (2.0, 4)]
