"""Importing an ``.npz`` file of images and labels as a TFDS dataset that loads by name::

    python -m epkd_tf.data --import_npz=PATH --name=NAME --data_dir=DIR [--overwrite]
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import os
from typing import Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

from epkd_tf.data.source import MAX_CLASSES, DataError
from epkd_tf.data.writer import refuse_existing, target_dir, write_dataset
from epkd_tf.files import not_regular

__all__ = ["import_npz", "validate_npz"]

_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def validate_npz(npz_path: str) -> Dict[str, np.ndarray]:
    """The arrays of an importable .npz (images N x H x W x C uint8, labels 1-D int64);
    DataError (one line naming ``--import_npz`` and the array) for anything else."""
    def bad(message: str) -> DataError:
        return DataError(f"--import_npz={npz_path!r}: {message}")

    problem = not_regular(npz_path)     # opening a FIFO or a device would block
    if problem:
        raise DataError(f"--import_npz={npz_path!r} {problem}: give an .npz file with "
                        f"x_train, y_train, x_test, y_test.")
    try:
        with np.load(npz_path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zipfile / pickle / format errors
        raise DataError(f"--import_npz={npz_path!r} is not a readable .npz file "
                        f"({type(e).__name__}).") from None
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise DataError(f"--import_npz={npz_path!r} lacks the arrays {', '.join(missing)}: it must "
                        f"hold x_train, y_train, x_test, y_test (has {', '.join(sorted(arrays))}).")
    shapes = {}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8:
            raise bad(f"x_{part} has dtype {x.dtype}, but images must be uint8.")
        if x.ndim not in (3, 4) or (x.ndim == 4 and not 1 <= x.shape[-1] <= 4):
            raise bad(f"x_{part} has shape {x.shape}, but images must be N x H x W or "
                      f"N x H x W x C with C in 1..4.")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise bad(f"y_{part} has shape {y.shape} and dtype {y.dtype}, but labels must be "
                      f"a 1-D integer array.")
        if len(x) != len(y):
            raise bad(f"x_{part} has {len(x)} images but y_{part} has {len(y)} labels; the "
                      f"counts must be equal.")
        if len(x) == 0:
            raise bad(f"x_{part} is empty; each split needs at least one example.")
        if 0 in x.shape[1:]:
            raise bad(f"x_{part} has shape {x.shape}: images need at least 1 x 1 pixels.")
        # Compared before any cast: uint64 2**63 would wrap to a negative int64.
        if y.min() < 0:
            raise bad(f"y_{part} has the negative label {int(y.min())}; labels must be >= 0.")
        if int(y.max()) >= MAX_CLASSES:
            raise bad(f"y_{part} has the label {int(y.max())}; labels must be below "
                      f"{MAX_CLASSES} (at most {MAX_CLASSES} classes, numbered from 0).")
        if x.ndim == 3:
            x = x[..., np.newaxis]
        arrays[f"x_{part}"], arrays[f"y_{part}"] = x, y.astype(np.int64)
        shapes[part] = x.shape[1:]
    if shapes["train"] != shapes["test"]:
        raise bad(f"train images are {shapes['train']} but test images are {shapes['test']}; "
                  f"they must have the same shape.")
    return arrays


def _examples(x: np.ndarray, y: np.ndarray) -> Iterator[Tuple[int, dict]]:
    for i in range(len(x)):
        yield i, {"image": x[i], "label": int(y[i])}


def import_npz(npz_path: str, name: str, data_dir: str, overwrite: bool = False) -> str:
    """Writes an .npz (x_train, y_train, x_test, y_test; images N×H×W or N×H×W×C uint8; integer labels) as a TFDS dataset under data_dir so tfds.load(name, data_dir=data_dir) finds it; returns the dataset directory.

    The dataset has features ``image`` (``Image(shape=(H, W, C))``) and ``label``
    (``ClassLabel(num_classes=max label + 1)``, at most ``MAX_CLASSES``), splits
    ``train``/``test`` in file order and supervised keys ``(image, label)``. ``mnist`` is
    written as version 3.0.1 (the TFDS catalogue version, so plain ``tfds.load("mnist")``
    finds it), other names as 1.0.0. Everything is validated before anything is written;
    the dataset is built in a temporary directory inside ``data_dir`` and moved into place
    when complete. An existing prepared dataset is only replaced if ``overwrite``.
    Raises :class:`DataError` (one line naming the flag) for bad input.
    """
    data_dir, target = target_dir(name, data_dir)
    arrays = validate_npz(npz_path)
    refuse_existing(name, target, overwrite)
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=tuple(int(d) for d in x_train.shape[1:]),
                                     dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=num_classes),
    })
    return write_dataset(
        name, data_dir, target, features,
        {"train": _examples(x_train, y_train), "test": _examples(x_test, y_test)},
        description=f"Imported by epkd_tf.data.import_npz from {os.path.basename(npz_path)}.")
