"""Loading a TFDS dataset: ``load_data(DataConfig)``.

Resolves the dataset by name in ``--data_dir`` (a TFDS catalogue dataset, or one written
there by the npz / image-folder imports), downloads and prepares a catalogue dataset that
is missing unless ``--nodownload`` (``downloads.py``), validates the name, directory,
features and splits up front (one-line :class:`DataError`), carves the validation split
(``holdout.py``) and returns a :class:`epkd_tf.data.Data` reading the splits.
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import difflib
import os
import re
from typing import List, Optional, Tuple

import tensorflow as tf
import tensorflow_datasets as tfds

from epkd_tf import compat
from epkd_tf.config import UNLABELLED_TEST_SPLITS, DataConfig, validation_fraction
from epkd_tf.data import holdout
from epkd_tf.data.dirs import NoLeftovers, check_data_dir
from epkd_tf.data.downloads import download_and_prepare, how_to_prepare
from epkd_tf.data.metadata import check_prepared
from epkd_tf.data.pipeline import Data, Examples, cacheable
from epkd_tf.data.recipes import DATASET_ALIASES, RECIPES, get_recipe
from epkd_tf.data.source import DataError, DatasetSpec
from epkd_tf.errors import ApiError

__all__ = ["load_data", "TfdsExamples", "IMPORT_HINT", "default_data_dir"]

# The command that prepares a dataset from an .npz file (quoted in error messages).
IMPORT_HINT = "python -m epkd_tf.data --import_npz=PATH --name={name} --data_dir={data_dir}"


def default_data_dir() -> str:
    """TFDS's default data directory (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)."""
    return compat.tfds_default_data_dir()


class TfdsExamples(Examples):
    """The examples of one TFDS split (a split string or read instruction) of ``builder``;
    ``seed`` orders the files of a shuffled read."""

    def __init__(self, builder: tfds.core.DatasetBuilder, split, num_examples: int,
                 supervised: bool, seed: int):
        self._feature = builder.info.features["image"]
        shape = tuple(self._feature.shape)
        super().__init__(num_examples, shape + (1,) if len(shape) == 2 else shape)
        self._builder, self.split = builder, split
        self._supervised, self._seed = supervised, seed

    def read(self, decode: bool = True, shuffle_files: bool = False) -> tf.data.Dataset:
        # Imported datasets are written with disable_shuffling (their order is the file's),
        # and TFDS then refuses shuffled reads unless told that the order may change:
        # streamed training wants exactly that.
        read_config = tfds.ReadConfig(shuffle_seed=self._seed,
                                      enable_ordering_guard=not shuffle_files)
        decoders = None if decode else {"image": tfds.decode.SkipDecoding()}
        ds = self._builder.as_dataset(split=self.split, shuffle_files=shuffle_files,
                                      as_supervised=self._supervised, read_config=read_config,
                                      decoders=decoders)
        if not self._supervised:
            ds = ds.map(lambda ex: (ex["image"], ex["label"]),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds

    def decode(self, image: tf.Tensor) -> tf.Tensor:
        return self._feature.decode_example(image)


# --------------------------------------------------------------------------- resolving


def _prepared_versions(data_dir: str, name: str) -> List[str]:
    """Version directories of ``data_dir/name`` that hold a prepared dataset, oldest first."""
    root = os.path.join(data_dir, name)
    if not tf.io.gfile.isdir(root):
        return []
    versions = [v.rstrip("/") for v in tf.io.gfile.listdir(root)]
    versions = [v for v in versions
                if tf.io.gfile.exists(os.path.join(root, v, "dataset_info.json"))]

    def key(v: str):
        try:
            return tuple(int(p) for p in v.split("."))
        except ValueError:
            return (-1,)

    return sorted(versions, key=key)


def _local_names(data_dir: str) -> List[str]:
    """Dataset names prepared directly under ``data_dir``."""
    if not tf.io.gfile.isdir(data_dir):
        return []
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(data_dir)
                  if not n.startswith(".") and _prepared_versions(data_dir, n.rstrip("/")))


def close_dataset_names(name: str, data_dir: str) -> List[str]:
    """Up to three known dataset names close to ``name`` (difflib), for the error about
    an unknown one: TFDS's catalogue (its builders installed here, no network), the
    datasets with a recipe and their aliases, and the datasets prepared in ``data_dir``
    (when it exists), whether or not ``--data_dir`` was given.

    Args:
        name: the unknown ``--dataset``.
        data_dir: the TFDS data directory looked in.

    Returns:
        The names, closest first; empty when none is close.
    """
    known = set(tfds.list_builders(with_community_datasets=False)) | set(RECIPES.names())
    known |= set(DATASET_ALIASES) | set(_local_names(data_dir))
    return difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)


def _resolve_builder(name: str, data_dir: str, download: bool) -> tfds.core.DatasetBuilder:
    """The builder of dataset ``name`` prepared in ``data_dir`` -- downloaded and
    prepared first if it is a catalogue dataset that is missing and ``download`` -- or
    DataError."""
    hint = IMPORT_HINT.format(name=name, data_dir=data_dir)
    # Before TFDS reads the directory: its features.json would make TFDS import any module.
    check_prepared(data_dir, name)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        builder = None
    except (ValueError, TypeError, AssertionError) as e:  # e.g. unknown version or config
        text = " ".join(str(e).split()) or type(e).__name__
        if text.startswith("Failed to construct") and '": ' in text:
            text = text.rsplit('": ', 1)[-1]  # drop TFDS's builder_kwargs preamble
        raise DataError(f"--dataset={name!r} is unusable: {text}") from None
    if builder is None:
        close = close_dataset_names(name, data_dir)
        if not os.path.isdir(data_dir):
            guess = f"did you mean {', '.join(close)}? " if close else ""
            raise DataError(f"--data_dir={data_dir!r} does not exist and --dataset={name!r} "
                            f"is not a TFDS catalogue dataset that could be downloaded into "
                            f"it: {guess}give the directory it was prepared in (or import "
                            f"it with `{hint}`).")
        suggestion = (f"did you mean {', '.join(close)}?" if close
                      else "give a TFDS catalogue name such as mnist or cifar10")
        raise DataError(f"--dataset={name!r} is neither a TFDS catalogue dataset nor prepared "
                        f"in {data_dir}: {suggestion} (or import it with `{hint}`).")
    if builder.is_prepared():
        return builder
    # A catalogue name imported by import_npz under another version than the catalogue's.
    if ":" not in name and "/" not in name:
        versions = _prepared_versions(data_dir, name)
        if versions:
            return tfds.builder_from_directory(os.path.join(data_dir, name, versions[-1]))
    if not download:
        raise DataError(f"--dataset={name!r} is not prepared in --data_dir={data_dir} (looked "
                        f"for {os.path.join(str(builder.data_path), 'dataset_info.json')}) and "
                        f"downloads are off (--nodownload): "
                        f"{how_to_prepare(name, data_dir)}.")
    download_and_prepare(builder, name, data_dir)
    return builder


def _split_size(builder: tfds.core.DatasetBuilder, split: str, flag: str) -> int:
    splits = builder.info.splits
    allowed = ", ".join(sorted(splits.keys()))
    try:
        n = splits[split].num_examples
    except (ValueError, KeyError, AssertionError, TypeError, NotImplementedError) as e:
        msg = " ".join(str(e).split())
        if "Unknown split" in msg:
            reason = "no such split"
        elif "incompatible" in msg:
            reason = msg.rstrip(".")
        else:
            reason = "malformed split (see https://www.tensorflow.org/datasets/splits)"
        raise DataError(f"--{flag}={split!r} is unusable for {builder.info.name}: {reason}; "
                        f"splits that exist: {allowed} (e.g. train, train[:10%], "
                        f"test[:1000]).") from None
    if n <= 0:
        raise DataError(f"--{flag}={split!r} selects 0 examples of {builder.info.name}: choose a "
                        f"non-empty slice of one of the splits {allowed}.")
    return int(n)


def _check_labelled(canonical: str, split: Optional[str], flag: str) -> None:
    if split is not None and canonical in UNLABELLED_TEST_SPLITS and re.match(r"^\s*test\b",
                                                                               split):
        raise DataError(f"--{flag}={split!r} is unusable for {canonical}: its test split has no "
                        f"labels (all -1); use --{flag}={UNLABELLED_TEST_SPLITS[canonical]}.")


def _check_disjoint(builder, first: Tuple[str, str], second: Tuple[str, str]) -> None:
    """Two roles' split strings (``(flag, split)`` each) select no example twice; a
    DataError naming both flags and the shared split otherwise (a test split that
    includes training examples reports an optimistic accuracy without a word)."""
    shared = holdout.shared_split(builder.info.splits, first[1], second[1])
    if shared is not None:
        raise DataError(f"--{first[0]}={first[1]!r} and --{second[0]}={second[1]!r} both "
                        f"select examples of the {shared!r} split of {builder.info.name}: "
                        f"choose disjoint slices (e.g. --train_split={shared}[:80%] "
                        f"--test_split={shared}[80%:]).")


# The file formats builder.as_dataset reads with tf.data (TFDS's ArrayRecord adapter, for
# one, raises NotImplementedError there: it reads through as_data_source only).
READABLE_FILE_FORMATS = ("tfrecord",)


def _check_file_format(builder, name: str) -> None:
    """The prepared files are in a format the pipelines can read; DataError naming the
    dataset_info.json and its fileFormat otherwise (before, the first read of a split
    raised NotImplementedError after the run had started)."""
    file_format = getattr(builder.info, "file_format", None)
    value = getattr(file_format, "value", file_format)
    if value is not None and str(value) not in READABLE_FILE_FORMATS:
        info_file = os.path.join(str(builder.data_dir), "dataset_info.json")
        raise DataError(f"--dataset={name!r}: {info_file} gives fileFormat {str(value)!r}, "
                        f"which epkd_tf cannot read (it reads "
                        f"{', '.join(READABLE_FILE_FORMATS)} files with tf.data): prepare "
                        f"it again with file_format='tfrecord'.")


def _check_recipe(recipe, features, input_shape: tuple, name: str, canonical: str,
                  seed: int) -> None:
    """The dataset's recipe turns one stored image into a model input of ``input_shape``
    (evaluation and training transforms). A file imported under a catalogue name gets that
    dataset's recipe, which may expect the catalogue's images (CIFAR's normalises three
    channels and crops back to 32 x 32): a 28 x 28 x 1 import under ``cifar10`` made
    (28, 28, 3) inputs and failed inside the run. DataError naming both shapes."""
    stored = tuple(features["image"].shape)
    if len(stored) == 2:
        stored = stored + (1,)
    if any(d is None for d in stored):
        return          # images of varying size: the recipe resizes them (--image_size)
    image = tf.zeros(stored, tf.uint8)
    label = tf.constant(0, tf.int64)
    made = []
    try:
        made.append(tuple(recipe.preprocess(image, label)[0].shape))
        if recipe.augment is not None:
            made.append(tuple(recipe.augment(image, label,
                                             tf.constant([seed, 0], tf.int64))[0].shape))
        problem = next((f"makes model inputs of shape {shape}" for shape in made
                        if shape != tuple(input_shape)), None)
    except (tf.errors.OpError, ValueError, TypeError) as err:
        problem = f"fails on them ({' '.join(str(err).split())[:120]})"
    if problem:
        raise DataError(f"--dataset={name!r} holds images of shape {stored}, but the "
                        f"preprocessing of {canonical} (its recipe {recipe.name!r}, made for "
                        f"the TFDS catalogue's images) {problem}, not {tuple(input_shape)}: "
                        f"import the file under a name that is not a catalogue dataset's "
                        f"(e.g. --name=my_{canonical}) or with the catalogue's image shape.")


def _image_shape(features, name: str, cfg: DataConfig, default_size: Optional[int]) -> tuple:
    """(H, W, C) of the model input; DataError where it is not fixed."""
    shape = tuple(features["image"].shape)
    if len(shape) == 2:
        shape = shape + (1,)
    size = cfg.image_size if cfg.image_size is not None else default_size
    if size is not None:
        shape = (size, size) + shape[2:]
    if any(d is None for d in shape):
        raise DataError(f"--dataset={name!r} has images of variable size {shape}: an image "
                        f"size must be set with --image_size=N (images are resized to N x N).")
    return tuple(int(d) for d in shape)


def _roles(builder, cfg: DataConfig, supervised: bool) -> Tuple[dict, dict]:
    """The Examples of each role and the split name each role reports."""
    def examples(split, n):
        return TfdsExamples(builder, split, n, supervised, cfg.seed)

    canonical = builder.info.name
    num_train = _split_size(builder, cfg.train_split, "train_split")
    test_split = cfg.evaluation_split
    num_test = _split_size(builder, test_split, "test_split")
    _check_labelled(canonical, test_split, "test_split")
    _check_disjoint(builder, ("train_split", cfg.train_split), ("test_split", test_split))
    train = examples(cfg.train_split, num_train)
    roles = {"train": train, "test": examples(test_split, num_test)}
    names = {"train": cfg.train_split, "test": test_split}
    split = cfg.validation_split
    if split is None:
        return roles, names
    names["validation"] = split
    fraction = validation_fraction(split)
    if fraction is None:  # a TFDS split string
        num_validation = _split_size(builder, split, "validation_split")
        _check_labelled(canonical, split, "validation_split")
        if holdout.overlaps(builder.info.splits, split, cfg.train_split):
            raise DataError(f"--validation_split={split!r} shares examples with "
                            f"--train_split={cfg.train_split!r} of {canonical}: choose "
                            f"disjoint slices (e.g. --train_split=train[:90%] "
                            f"--validation_split=train[90%:]) or a fraction such as 0.1.")
        _check_disjoint(builder, ("validation_split", split), ("test_split", test_split))
        roles["validation"] = examples(split, num_validation)
        return roles, names
    count = holdout.validation_count(num_train, fraction, cfg.train_split)
    if cacheable(train.image_shape, num_train):
        kept, held = holdout.carve_positions(num_train, count, cfg.seed)
        roles["train"], roles["validation"] = holdout.Subset(train, kept), \
            holdout.Subset(train, held)
    else:  # streamed: seeded blocks read with TFDS split arithmetic (see holdout.py)
        kept, held = holdout.carve_blocks(num_train, count, cfg.seed)
        splits = builder.info.splits
        roles["train"] = examples(holdout.split_instruction(splits, cfg.train_split, kept),
                                  num_train - count)
        roles["validation"] = examples(holdout.split_instruction(splits, cfg.train_split, held),
                                       count)
    return roles, names


def load_data(cfg: DataConfig) -> Data:
    """Loads ``cfg.dataset`` with tensorflow_datasets from ``cfg.data_dir`` (default: TFDS's,
    ``~/tensorflow_datasets``) and validates everything up front.

    The name goes through ``DATASET_ALIASES``; it may be a TFDS catalogue name or any
    dataset written into ``data_dir`` by :func:`epkd_tf.data.import_npz` /
    :func:`epkd_tf.data.import_folder`. A catalogue dataset that is not prepared there is
    downloaded and prepared as ``tfds.load`` does (``builder.download_and_prepare()``;
    a missing ``data_dir`` is created) when ``cfg.download``, else refused; either way a
    failure says how to prepare it elsewhere. Then the splits are read with
    ``builder.as_dataset``. ``cfg.validation_split`` holds out validation examples (see
    :mod:`epkd_tf.data.holdout`); the training pipelines never see them. Validation never
    leaves new directories in ``data_dir``.

    Args:
      cfg: a :class:`epkd_tf.DataConfig` (dataset, data_dir, splits, batch size, seed,
        image size, download...).

    Returns:
      A :class:`Data`: ``spec`` (shapes, class count, sizes) and the ``train()``,
      ``test()``, ``validation()`` pipelines of ``(x float32, y int32)`` batches,
      preprocessed by the dataset's recipe (:func:`epkd_tf.register_dataset`).

    Raises:
      DataError: an unknown, unprepared or undownloadable dataset, an unusable
        ``data_dir`` (a file, a pseudo-file system such as /proc), a malformed, unknown or
        empty split, splits that share examples (the test split with the training or the
        validation split, a validation split string with the training split), or a
        non-image-classification dataset (one line).
      ApiError: ``cfg`` is not a DataConfig.

    Example::

        import numpy as np
        import epkd_tf
        from epkd_tf.data import import_npz

        rng = np.random.default_rng(0)              # an .npz file written as a TFDS dataset
        x = rng.integers(0, 256, (60, 8, 8, 1), dtype=np.uint8)
        y = rng.integers(0, 3, 60)
        np.savez("digits.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
        import_npz("digits.npz", "my_digits", "tfds_data")
        config = epkd_tf.DataConfig(dataset="my_digits", data_dir="tfds_data", batch_size=8,
                                    validation_split="0.25", download=False)
        data = epkd_tf.load_data(config)
        print(data.spec)    # num_classes=3, num_train=30, num_test=20, num_validation=10
        images, labels = next(iter(data.train()))   # float32 in [0, 1], int32
    """
    if not isinstance(cfg, DataConfig):
        raise ApiError(f"load_data expects a DataConfig, got {type(cfg).__name__}.")
    data_dir = check_data_dir(default_data_dir() if cfg.data_dir is None else cfg.data_dir)
    name = DATASET_ALIASES.get(cfg.dataset.strip(), cfg.dataset.strip())
    if not os.path.isdir(data_dir) and not cfg.download:
        raise DataError(f"--data_dir={data_dir!r} does not exist and downloads are off "
                        f"(--nodownload): give an existing directory holding prepared TFDS "
                        f"datasets; to prepare {name} there, {how_to_prepare(name, data_dir)}.")

    with NoLeftovers(data_dir, name):
        builder = _resolve_builder(name, data_dir, cfg.download)
        info = builder.info
        canonical = info.name
        features = info.features
        keys = list(features.keys()) if hasattr(features, "keys") else []
        if "image" not in keys or "label" not in keys:
            raise DataError(f"--dataset={name!r} is not an image-classification dataset: it has "
                            f"features {keys}, but 'image' and 'label' are required.")
        _check_file_format(builder, name)
        recipe = get_recipe(canonical, cfg.image_size)
        input_shape = _image_shape(features, name, cfg, recipe.default_image_size)
        _check_recipe(recipe, features, input_shape, name, canonical, cfg.seed)
        num_classes = getattr(features["label"], "num_classes", None)
        if not num_classes:
            raise DataError(f"--dataset={name!r} has a label feature without a class count: a "
                            f"ClassLabel 'label' feature is required.")
        supervised = tuple(info.supervised_keys or ()) == ("image", "label")
        roles, names = _roles(builder, cfg, supervised)

    spec = DatasetSpec(name=canonical, input_shape=input_shape, num_classes=int(num_classes),
                       num_train=roles["train"].num_examples,
                       num_test=roles["test"].num_examples,
                       num_validation=roles["validation"].num_examples
                       if "validation" in roles else 0)
    return Data(cfg, spec, recipe, roles, names)
