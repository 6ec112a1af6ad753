"""Shared fixtures: small TFDS datasets written offline once per test session."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

REPO = Path(__file__).resolve().parents[1]
MNIST_NPZ = REPO.parent / "shared" / "data" / "mnist.npz"
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A TFDS data_dir holding the real MNIST (from ../shared/data/mnist.npz) as `mnist`."""
    if not MNIST_NPZ.exists():
        pytest.skip(f"real MNIST not found at {MNIST_NPZ} (see ../shared/data/README.md)")
    from epkd_tf.data import import_npz
    data_dir = tmp_path_factory.mktemp("tfds_mnist")
    import_npz(str(MNIST_NPZ), "mnist", str(data_dir))
    return str(data_dir)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A TFDS data_dir with `tiny_digits`: 256 train / 128 test 12×12 images, 4 classes,
    learnable (each class is a bright quadrant plus noise)."""
    from epkd_tf.data import import_npz
    from tiny_data import quadrant_digits
    rng = np.random.default_rng(0)
    x_train, y_train = quadrant_digits(rng, 256)
    x_test, y_test = quadrant_digits(rng, 128)
    root = tmp_path_factory.mktemp("tfds_tiny")
    npz = root / "tiny.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data_dir = root / "data"
    data_dir.mkdir()
    import_npz(str(npz), "tiny_digits", str(data_dir))
    return str(data_dir)


@pytest.fixture(scope="session")
def tiny_cli_run(tiny_dir, tmp_path_factory):
    """An uninterrupted ``python -m epkd_tf.main`` subprocess run on tiny_digits:
    (run directory, its CompletedProcess)."""
    from cli_helpers import TINY_RUN_ARGS, run_subprocess
    out = str(tmp_path_factory.mktemp("tiny_cli") / "run")
    result = run_subprocess("epkd_tf.main", [f"--data_dir={tiny_dir}", f"--output_dir={out}",
                                             *TINY_RUN_ARGS])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result
