"""Fixtures of the epkd_tf.data tests: small npz-imported datasets whose examples carry
their own index in their first pixel, so that tests can tell which examples a pipeline
yields."""
import sys
from pathlib import Path

import pytest

import epkd_tf  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_helpers import indexed_arrays, write_npz  # noqa: E402


@pytest.fixture(scope="module")
def indexed_dir(tmp_path_factory):
    """TFDS data_dir with ``indexed``: 60 train / 20 test 6x6 grey images, 5 classes, the
    training labels sorted by class (like many .npz files) and pixel [0, 0] = the index."""
    from epkd_tf.data import import_npz
    root = tmp_path_factory.mktemp("indexed")
    arrays = indexed_arrays(60, 20, classes=5)
    npz = write_npz(root / "indexed.npz", **arrays)
    data_dir = root / "tfds"
    import_npz(npz, "indexed", str(data_dir))
    return {"data_dir": str(data_dir), "arrays": arrays}
