"""Helpers of the epkd_tf.data tests (importable: tests/data/conftest.py puts this folder on
sys.path)."""
import os

import numpy as np


def indexed_arrays(n_train, n_test, classes=5, size=6, channels=None, seed=0):
    """npz arrays whose image i has pixel [0, 0] = i (train) or 200 + i (test) and noise
    elsewhere; training labels sorted by class."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if channels is None else (size, size, channels)
    x_train = rng.integers(0, 256, (n_train,) + shape, dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test,) + shape, dtype=np.uint8)
    x_train[:, 0, 0] = np.arange(n_train)[:, None] if channels else np.arange(n_train)
    x_test[:, 0, 0] = (200 + np.arange(n_test))[:, None] if channels else 200 + np.arange(n_test)
    y_train = np.sort(np.arange(n_train) % classes).astype(np.int64)
    y_test = (np.arange(n_test) % classes).astype(np.int64)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def ids(x):
    """The example indices of preprocessed ([0, 1]) images made by indexed_arrays."""
    return np.rint(np.asarray(x)[:, 0, 0, 0] * 255).astype(int)


def all_batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def snapshot(root):
    """Every path below root (relative); empty set if it does not exist."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, n), root))
    return found
