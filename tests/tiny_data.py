"""The tiny learnable image task the end-to-end tests run on (``tiny_digits``)."""
import numpy as np


def quadrant_digits(rng: np.random.Generator, n: int):
    """``n`` 12×12 uint8 images of 4 classes, each class a bright quadrant plus noise, and
    their int64 labels."""
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 60, (n, 12, 12)).astype(np.uint8)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * 6:(r + 1) * 6, c * 6:(c + 1) * 6] += 150
    return x, y.astype(np.int64)
