"""In-memory data for the Python API: :func:`from_arrays` and :func:`from_datasets` return
a :class:`epkd_tf.data.Data` like ``load_data`` does, so every pruner, the Distiller, the
teacher-logit cache and the exports work with it.

The arrays are the model's inputs **as given**: images are cast to float32 and nothing
else -- no scaling to [0, 1], no normalisation (uint8 images are accepted and become
0..255 floats; scale them yourself if the model expects otherwise). Training batches are
shuffled (seeded), never augmented. An exported SavedModel's ``serving_default`` takes
uint8 images and only casts them, which is right for uint8 arrays; for float arrays call
its ``serving_preprocessed`` signature (float32 model inputs) instead.

Everything is validated up front; each error is one line naming the argument and what is
allowed. All images together may take at most :data:`MEMORY_LIMIT_BYTES` as float32.
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from epkd_tf.config import ConfigError, DataConfig, validation_fraction
from epkd_tf.settings import default_of
from epkd_tf.data import holdout
from epkd_tf.data.pipeline import Data, Examples
from epkd_tf.data.recipes import MODEL_INPUT_RECIPE
from epkd_tf.data.source import MAX_CLASSES, DataError, DatasetSpec

__all__ = ["from_arrays", "from_datasets", "ArrayExamples", "MEMORY_LIMIT_BYTES"]

# In-memory data (train + validation + test images as float32) may take at most this much:
# it is held as tensors that tf.data and tf.distribute embed in dataset graphs, which
# cannot exceed 2 GB; CIFAR-10 takes 737 MB, MNIST 220 MB. Larger data: import it
# (import_npz, import_folder) and use load_data, which streams what it cannot cache.
MEMORY_LIMIT_BYTES = 1024 ** 3


class ArrayExamples(Examples):
    """Examples held in memory: float32 images (the model inputs) and int32 labels."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        super().__init__(len(x), x.shape[1:], in_memory=True, model_inputs=True)
        # Copied into tensors once: later changes to the caller's arrays do not leak in.
        self._x = tf.constant(x, tf.float32)
        self._y = tf.constant(y, tf.int32)

    def read(self, decode: bool = True, shuffle_files: bool = False) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((self._x, self._y))


# --------------------------------------------------------------------------- validation


def _images(arg: str, x) -> np.ndarray:
    """``x`` as an N x H x W x C numeric array (a channel axis added to N x H x W)."""
    try:
        x = np.asarray(x)
    except Exception as e:  # ragged lists, objects numpy cannot stack
        raise DataError(f"{arg} is not an array ({type(e).__name__}): give images as an "
                        f"N x H x W or N x H x W x C numeric array.") from None
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer)
                                   or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{arg} has dtype {x.dtype}: images must be numeric (integer or "
                        f"float; they are cast to float32).")
    if x.ndim not in (3, 4):
        raise DataError(f"{arg} has shape {x.shape}: images must be N x H x W or "
                        f"N x H x W x C.")
    if len(x) == 0:
        raise DataError(f"{arg} is empty: give at least one image.")
    if 0 in x.shape[1:]:
        raise DataError(f"{arg} has shape {x.shape}: every image dimension must be at least 1.")
    return x if x.ndim == 4 else x[..., np.newaxis]


def _float_images(arg: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise DataError(f"{arg}[{first}] has NaN or infinite values (as float32): images "
                        f"must be finite.")
    return x


def _labels(arg: str, y, count: int, images_arg: str) -> np.ndarray:
    """``y`` as 1-D int64 class indices in [0, MAX_CLASSES)."""
    try:
        y = np.asarray(y)
    except Exception as e:
        raise DataError(f"{arg} is not an array ({type(e).__name__}): give a 1-D array of "
                        f"integer class indices.") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{arg} has shape {y.shape}: labels must be a 1-D array of class "
                        f"indices (not one-hot).")
    if len(y) != count:
        raise DataError(f"{arg} has {len(y)} labels but {images_arg} has {count} images; the "
                        f"counts must be equal.")
    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and np.all(y == np.round(y))):
            raise DataError(f"{arg} has non-integer values: labels must be integer class "
                            f"indices (whole-number floats are accepted).")
    elif y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{arg} has dtype {y.dtype}: labels must be integer class indices.")
    # Compared before any cast: uint64 2**63 would wrap to a negative int64.
    if y.min() < 0:
        raise DataError(f"{arg} has the negative label {y.min():.0f}: labels must be >= 0.")
    if y.max() >= MAX_CLASSES:
        raise DataError(f"{arg} has the label {y.max():.0f}: labels must be below "
                        f"{MAX_CLASSES} (at most {MAX_CLASSES} classes).")
    return y.astype(np.int64)


def _num_classes(num_classes, labels: Dict[str, np.ndarray]) -> int:
    highest = max(int(y.max()) for y in labels.values())
    if num_classes is None:
        if highest < 1:
            raise DataError(f"the labels only hold class 0: give at least 2 classes (or pass "
                            f"num_classes=N).")
        return highest + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or not 2 <= num_classes <= MAX_CLASSES:
        raise DataError(f"num_classes={num_classes!r} is invalid: give an integer from 2 to "
                        f"{MAX_CLASSES} (or None: the largest label + 1).")
    for arg, y in labels.items():
        if int(y.max()) >= num_classes:
            raise DataError(f"{arg} has the label {int(y.max())}, but num_classes="
                            f"{num_classes}: labels must lie in [0, {num_classes - 1}].")
    return int(num_classes)


def _config(name: str, batch_size, seed, validation_split, label_noise,
            shuffle_buffer) -> DataConfig:
    """The DataConfig of in-memory data; its errors re-worded to name the argument."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"name={name!r} is invalid: give a non-empty string naming the data.")
    if validation_split is not None:
        fraction = None if isinstance(validation_split, bool) else \
            validation_fraction(str(validation_split))
        if fraction is None or not 0.0 < fraction < 1.0:
            raise DataError(f"validation_split={validation_split!r} is invalid: in-memory data "
                            f"takes a fraction in (0, 1) of the training examples, such as 0.1 "
                            f"(or None).")
        validation_split = repr(float(fraction))
    arguments = {"batch_size": batch_size, "seed": seed, "label_noise": label_noise,
                 "shuffle_buffer": shuffle_buffer}
    # NumPy scalars are what array code hands around; the settings take Python numbers.
    arguments = {k: v.item() if isinstance(v, np.generic) else v for k, v in arguments.items()}
    try:
        return DataConfig(dataset=name, train_split="x_train", test_split="x_test",
                          validation_split=validation_split, **arguments)
    except ConfigError as err:
        raise DataError(f"{err.flag}={err.value!r} is invalid: {err.reason.rstrip('.')}.") \
            from None


def _build(x_train, y_train, x_test, y_test, names: Dict[str, str], *, batch_size, seed,
           validation_split, num_classes, name, label_noise, shuffle_buffer) -> Data:
    """from_arrays with ``names``: how the errors call x_train, y_train, x_test, y_test."""
    cfg = _config(name, batch_size, seed, validation_split, label_noise, shuffle_buffer)
    images = {"x_train": _images(names["x_train"], x_train),
              "x_test": _images(names["x_test"], x_test)}
    if images["x_train"].shape[1:] != images["x_test"].shape[1:]:
        raise DataError(f"{names['x_train']} images are {images['x_train'].shape[1:]} but "
                        f"{names['x_test']} images are {images['x_test'].shape[1:]}; they must "
                        f"have the same shape (H x W x C).")
    size = sum(x.size for x in images.values()) * 4
    if size > MEMORY_LIMIT_BYTES:
        raise DataError(f"{names['x_train']} and {names['x_test']} take {size / 2**30:.2f} GiB "
                        f"as float32, above the in-memory limit of "
                        f"{MEMORY_LIMIT_BYTES / 2**30:g} GiB: import the data as a TFDS dataset "
                        f"(import_npz / import_folder) and use load_data.")
    labels = {names["y_train"]: _labels(names["y_train"], y_train, len(images["x_train"]),
                                        names["x_train"]),
              names["y_test"]: _labels(names["y_test"], y_test, len(images["x_test"]),
                                       names["x_test"])}
    classes = _num_classes(num_classes, labels)
    x_tr = _float_images(names["x_train"], images["x_train"])
    x_te = _float_images(names["x_test"], images["x_test"])
    y_tr, y_te = labels[names["y_train"]], labels[names["y_test"]]

    roles = {"test": ArrayExamples(x_te, y_te)}
    split_names = {"train": cfg.train_split, "test": cfg.test_split}
    fraction = validation_fraction(cfg.validation_split)
    if fraction is None:
        roles["train"] = ArrayExamples(x_tr, y_tr)
    else:
        count = holdout.validation_count(len(x_tr), fraction, names["x_train"],
                                         flag="validation_split")
        kept, held = holdout.carve_positions(len(x_tr), count, cfg.seed)
        roles["train"] = ArrayExamples(x_tr[kept], y_tr[kept])
        roles["validation"] = ArrayExamples(x_tr[held], y_tr[held])
        split_names["validation"] = cfg.validation_split
    spec = DatasetSpec(name=cfg.dataset, input_shape=tuple(int(d) for d in x_tr.shape[1:]),
                       num_classes=classes, num_train=roles["train"].num_examples,
                       num_test=roles["test"].num_examples,
                       num_validation=roles["validation"].num_examples
                       if "validation" in roles else 0)
    return Data(cfg, spec, MODEL_INPUT_RECIPE, roles, split_names)


def from_arrays(x_train, y_train, x_test, y_test, *,
                batch_size: int = default_of(DataConfig, "batch_size"),
                seed: int = default_of(DataConfig, "seed"),
                validation_split: Optional[float] = None, num_classes: Optional[int] = None,
                name: str = "arrays",
                label_noise: float = default_of(DataConfig, "label_noise"),
                shuffle_buffer: int = default_of(DataConfig, "shuffle_buffer")) -> Data:
    """A :class:`Data` over arrays in memory (the model's inputs as given): what
    :func:`epkd_tf.compress` and :func:`epkd_tf.prune` make of ``(x, y)`` arrays.

    Args:
      x_train: training images N x H x W (a channel axis is added) or N x H x W x C of
        any integer or float dtype, finite; cast to float32 without scaling.
      y_train: one integer class index per image (N or N x 1; floats that are whole
        numbers are accepted), ``0 <= label < num_classes``.
      x_test: test images, of the same H x W x C as ``x_train``.
      y_test: test labels, as ``y_train``.
      batch_size: batch size of every pipeline (``--batch_size``).
      seed: seed of shuffling, the held-out examples and label noise (``--seed``).
      validation_split: a fraction in (0, 1) of the training examples held out (seeded
        by ``seed``, see :mod:`epkd_tf.data.holdout`) for :meth:`Data.validation`; None:
        none.
      num_classes: 2 to ``MAX_CLASSES`` (default: the largest label + 1).
      name: the dataset's name in records.
      label_noise: fraction of training labels replaced by another class
        (``--label_noise``).
      shuffle_buffer: examples in the shuffle buffer (``--shuffle_buffer``).

    Returns:
      A :class:`Data`: ``spec`` (shapes, class count, sizes) and the ``train()``,
      ``test()``, ``validation()`` pipelines of ``(x float32, y int32)`` batches.

    Raises:
      DataError: an argument is unusable; the message names it (not an array, a wrong
        shape or dtype, non-finite values, labels out of range, an invalid
        ``batch_size`` or ``validation_split``...).

    Example::

        import numpy as np
        import epkd_tf

        rng = np.random.default_rng(0)
        x, y = rng.uniform(size=(100, 8, 8)), rng.integers(0, 3, 100)
        data = epkd_tf.from_arrays(x[:80], y[:80], x[80:], y[80:], batch_size=16,
                                   validation_split=0.25)
        print(data.spec)         # input_shape=(8, 8, 1), num_classes=3, num_train=60, ...
        images, labels = next(iter(data.train()))
        assert images.shape == (16, 8, 8, 1) and data.spec.num_validation == 20
    """
    names = {k: k for k in ("x_train", "y_train", "x_test", "y_test")}
    return _build(x_train, y_train, x_test, y_test, names, batch_size=batch_size, seed=seed,
                  validation_split=validation_split, num_classes=num_classes, name=name,
                  label_noise=label_noise, shuffle_buffer=shuffle_buffer)


def _materialise(arg: str, ds, budget: int) -> Tuple[np.ndarray, np.ndarray]:
    """All ``(image, label)`` of a dataset of examples or batches as two arrays."""
    if not isinstance(ds, tf.data.Dataset):
        raise DataError(f"{arg} is a {type(ds).__name__}: give a tf.data.Dataset of (image, "
                        f"label) examples or batches (or use from_arrays).")
    if int(ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise DataError(f"{arg} is infinite (a repeat()?): give a dataset that ends.")
    spec = ds.element_spec
    if isinstance(spec, dict) and {"image", "label"} <= set(spec):
        ds = ds.map(lambda ex: (ex["image"], ex["label"]))
    elif not (isinstance(spec, tuple) and len(spec) == 2):
        raise DataError(f"{arg} yields {spec}: give a dataset of (image, label) pairs or of "
                        f"dicts with 'image' and 'label'.")
    image_spec, label_spec = ds.element_spec
    if not all(isinstance(s, tf.TensorSpec) for s in (image_spec, label_spec)) \
            or label_spec.shape.rank not in (0, 1, None):
        raise DataError(f"{arg} yields {ds.element_spec}: images must be tensors and labels "
                        f"scalars (examples) or vectors (batches).")
    xs, ys, used = [], [], 0
    for x, y in ds.as_numpy_iterator():
        batched = np.ndim(y) == 1
        xs.append(x if batched else x[np.newaxis])
        ys.append(y if batched else np.reshape(y, (1,)))
        used += xs[-1].size * 4
        if used > budget:
            raise DataError(f"{arg} holds more than the in-memory limit of "
                            f"{MEMORY_LIMIT_BYTES / 2**30:g} GiB of float32 images (train and "
                            f"test together): import the data as a TFDS dataset (import_npz / "
                            f"import_folder) and use load_data.")
    if not xs:
        raise DataError(f"{arg} is empty: give at least one example.")
    shapes = {x.shape[1:] for x in xs}
    if len(shapes) > 1:
        listed = ", ".join(map(str, sorted(shapes)))
        raise DataError(f"{arg} has images of different shapes ({listed}): resize them to one "
                        f"shape first, e.g. ds.map(lambda x, y: (tf.image.resize(x, [32, 32]), "
                        f"y)).")
    return np.concatenate(xs), np.concatenate(ys)


def from_datasets(train, test, *, batch_size: int = default_of(DataConfig, "batch_size"),
                  seed: int = default_of(DataConfig, "seed"),
                  validation_split: Optional[float] = None,
                  num_classes: Optional[int] = None, name: str = "datasets",
                  label_noise: float = default_of(DataConfig, "label_noise"),
                  shuffle_buffer: int = default_of(DataConfig, "shuffle_buffer")) -> Data:
    """A :class:`Data` over two finite ``tf.data.Dataset`` s, read once into memory and
    then used as :func:`from_arrays` uses arrays (same arguments, same checks; images as
    given, cast to float32).

    Args:
      train: a finite dataset of ``(image, label)`` examples or batches, or of dicts with
        ``image`` and ``label`` (as TFDS yields them).
      test: the test dataset, likewise.
      batch_size, seed, validation_split, num_classes, name, label_noise, shuffle_buffer:
        as for :func:`from_arrays`.

    Returns:
      A :class:`Data` (see :func:`from_arrays`).

    Raises:
      DataError: a dataset is not a finite ``tf.data.Dataset`` of image-label pairs, is
        empty, mixes image shapes, holds more than ``MEMORY_LIMIT_BYTES`` of float32
        images (train and test together), or its images, labels or other arguments
        fail :func:`from_arrays`' checks.

    Example::

        import numpy as np
        import tensorflow as tf
        import epkd_tf

        rng = np.random.default_rng(0)
        images = rng.uniform(size=(100, 8, 8, 1)).astype("float32")
        labels = rng.integers(0, 2, 100)
        train = tf.data.Dataset.from_tensor_slices((images[:80], labels[:80])).batch(10)
        test = tf.data.Dataset.from_tensor_slices((images[80:], labels[80:]))
        data = epkd_tf.from_datasets(train, test, batch_size=32)
        assert (data.spec.num_train, data.spec.num_test) == (80, 20)
    """
    x_train, y_train = _materialise("train", train, MEMORY_LIMIT_BYTES)
    x_test, y_test = _materialise("test", test, MEMORY_LIMIT_BYTES - x_train.size * 4)
    names = {"x_train": "train (images)", "y_train": "train (labels)",
             "x_test": "test (images)", "y_test": "test (labels)"}
    return _build(x_train, y_train, x_test, y_test, names, batch_size=batch_size, seed=seed,
                  validation_split=validation_split, num_classes=num_classes, name=name,
                  label_noise=label_noise, shuffle_buffer=shuffle_buffer)
