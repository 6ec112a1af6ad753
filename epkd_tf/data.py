"""Dataset loading for EPKD: TFDS datasets, per-dataset preprocessing recipes, npz import.

``load_data(DataConfig)`` resolves a TFDS dataset that is already prepared in
``cfg.data_dir`` (the network is never used), validates the name, directory and splits up
front and returns a :class:`Data` object whose pipelines yield ``(x float32, y int32)``
batches.  ``import_npz`` writes an ``.npz`` file of images and labels as a TFDS dataset so
that it can be loaded by name; it is also available from the command line::

    python -m epkd_tf.data --import_npz=PATH --name=NAME --data_dir=DIR [--overwrite]

Recipes (per-dataset preprocessing, see :class:`DatasetRecipe`) are registered by name:
``cifar10``/``cifar100`` (CIFAR mean/std normalisation; training: zero-pad 4 + random crop +
flip), ``imagenet2012`` (shorter side to round(1.14 x --image_size), random / central crop,
flip, ImageNet mean/std; --image_size defaults to 224), MNIST-likes and everything else
([0, 1] scaling, bilinear resize to --image_size if given). Adding one::

    @register_dataset("my_ds", augment=my_augment)     # fixed-size preprocessing
    def _my_ds(image, label): ...  # per-example (uint8 HxWxC, int) -> (float32, int32)

    @register_recipe("my_other_ds")                     # depends on --image_size
    def _factory(image_size): return DatasetRecipe(...)
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import dataclasses
import difflib
import os
import re
import shutil
import sys
import tempfile
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.dataset_builders import adhoc_builder

from epkd_tf.config import DataConfig

__all__ = [
    "DataError",
    "DatasetSpec",
    "DatasetRecipe",
    "Data",
    "DATASET_ALIASES",
    "register_dataset",
    "register_recipe",
    "CACHE_LIMIT_BYTES",
    "PREPROCESSED_CACHE_LIMIT_BYTES",
    "get_recipe",
    "load_data",
    "import_npz",
    "main",
]

# The command that prepares a dataset from an .npz file (quoted in error messages).
_IMPORT_HINT = "python -m epkd_tf.data --import_npz=PATH --name={name} --data_dir={data_dir}"
# Version written by import_npz: "mnist" must match the TFDS catalogue version so that the
# registered MNIST builder finds it; other names are loaded from their directory.
_CATALOGUE_VERSIONS = {"mnist": "3.0.1"}
_DEFAULT_IMPORT_VERSION = "1.0.0"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Datasets whose "test" split is unlabelled (label -1) -> the split to evaluate on instead.
_UNLABELLED_TEST_SPLITS = {"imagenet2012": "validation"}


class DataError(ValueError):
    """A dataset name, directory or split is unusable; message is one line naming it and what is allowed."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about the loaded dataset."""

    name: str                 # canonical TFDS name actually loaded
    input_shape: tuple        # (H, W, C) of the images fed to the model
    num_classes: int
    num_train: int            # examples in the chosen train split
    num_test: int


# --------------------------------------------------------------------------- recipes

Preprocess = Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]
Augment = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]


@dataclasses.dataclass(frozen=True)
class DatasetRecipe:
    """Per-dataset preprocessing, built for one image size.

    Both functions receive one *decoded* example ``(image uint8 HxWxC, label)`` -- the
    in-memory cache (if any) holds these raw uint8 images -- and return
    ``(image float32, label int32)`` at the model's input size.

    * ``preprocess`` is the evaluation transform (``train_eval``, ``test``, ``sample``); it
      must be deterministic.
    * ``augment`` (optional) is the training transform (``train`` only); it takes a third
      argument, a stateless seed (int64 tensor of shape [2]) that differs per example and
      epoch, and must draw all its randomness from it (``tf.image.stateless_random_*``)
      so that training is reproducible. Without it ``train`` uses ``preprocess``.
    * ``default_image_size``: the side used when ``--image_size`` is not given (needed by
      datasets whose images vary in size, e.g. 224 for imagenet2012).
    * ``batchable``: ``preprocess`` gives the same result on a batch ``(N, H, W, C)`` of
      equally sized images as on each image alone (element-wise arithmetic, batched
      resizes). The pipelines then batch first and preprocess whole batches: one op per
      batch instead of one per example, which made the input pipeline, not the model, the
      bottleneck of small models.
    """

    name: str
    preprocess: Preprocess
    augment: Optional[Augment] = None
    default_image_size: Optional[int] = None
    batchable: bool = False


def scale_to_unit(image: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Default preprocessing: float32 image scaled from [0, 255] to [0, 1], int32 label.
    Element-wise, so it also serves a batch of HxWxC images."""
    image = tf.cast(image, tf.float32) / 255.0
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    return image, tf.cast(label, tf.int32)


def resize_square(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear (antialiased when shrinking) resize of an HxWxC image (or a batch of them)
    to size x size; float32 output in the input's value range. The aspect ratio is not
    kept."""
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    return tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear",
                           antialias=True)


def with_resize(fn: Preprocess, size: Optional[int]) -> Preprocess:
    """``fn`` applied to the image resized to ``size`` x ``size`` (``fn`` itself if None)."""
    if size is None:
        return fn

    def resized(image, label):
        return fn(resize_square(image, size), label)

    resized.__name__ = f"{getattr(fn, '__name__', 'preprocess')}_resized_{size}"
    return resized


DEFAULT_RECIPE = DatasetRecipe(name="default", preprocess=scale_to_unit, batchable=True)

# TFDS name -> factory(image_size or None) -> DatasetRecipe.
RecipeFactory = Callable[[Optional[int]], DatasetRecipe]
_RECIPES: Dict[str, RecipeFactory] = {}

# User-facing names that differ from the TFDS name.
DATASET_ALIASES: Dict[str, str] = {"imagenet": "imagenet2012"}


def register_recipe(*names: str):
    """Decorator registering ``factory(image_size: Optional[int]) -> DatasetRecipe`` for
    TFDS ``names``; ``image_size`` is ``--image_size`` (None when not given)."""
    if not names:
        raise ValueError("register_recipe needs at least one TFDS dataset name.")

    def decorator(factory: RecipeFactory) -> RecipeFactory:
        for name in names:
            _RECIPES[name] = factory
        return factory

    return decorator


def register_dataset(*names: str, augment: Optional[Augment] = None,
                     batchable: bool = False):
    """Decorator registering a per-example preprocessing function for TFDS ``names``.

    The decorated function maps ``(image uint8, label)`` to ``(float32 image, int32
    label)``; ``augment`` is an optional train-only transform ``(image uint8, label, seed)``
    (see :class:`DatasetRecipe`). With ``--image_size`` both see the image already resized.
    ``batchable``: the function works unchanged on a batch (see :class:`DatasetRecipe`).
    """
    if not names:
        raise ValueError("register_dataset needs at least one TFDS dataset name.")

    def decorator(fn: Preprocess) -> Preprocess:
        for name in names:
            plain = DatasetRecipe(name=name, preprocess=fn, augment=augment,
                                  batchable=batchable)

            def factory(image_size, plain=plain, fn=fn, name=name):
                if image_size is None:
                    return plain
                aug = None
                if augment is not None:
                    def aug(image, label, seed):
                        return augment(resize_square(image, image_size), label, seed)
                return DatasetRecipe(name=name, preprocess=with_resize(fn, image_size),
                                     augment=aug, batchable=batchable)

            _RECIPES[name] = factory
        return fn

    return decorator


def get_recipe(name: str, image_size: Optional[int] = None) -> DatasetRecipe:
    """The recipe registered for TFDS ``name`` (or the default [0, 1] scaling recipe), built
    for ``image_size`` (None: the dataset's own size)."""
    factory = _RECIPES.get(DATASET_ALIASES.get(name, name))
    if factory is None:
        if image_size is None:
            return DEFAULT_RECIPE
        return DatasetRecipe(name="default", preprocess=with_resize(scale_to_unit, image_size),
                             batchable=True)
    return factory(image_size)


@register_dataset("mnist", "fashion_mnist", "kmnist", batchable=True)
def _grayscale_unit(image: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """MNIST-like datasets: 28x28x1 uint8 scaled to [0, 1]."""
    return scale_to_unit(image, label)


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
    """``(image / 255 - mean) / std`` per channel, float32."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _split_seed(seed: tf.Tensor, n: int) -> List[tf.Tensor]:
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=n)
    return [seeds[i] for i in range(n)]


# CIFAR-10 training-set statistics (also used for CIFAR-100, as is customary).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_PAD = 4


def cifar_pad_crop_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """He et al. 2016 augmentation on a uint8 HxWxC image: zero-pad 4 px per side, random
    HxW crop, random horizontal flip; stateless, all randomness from ``seed``."""
    crop_seed, flip_seed = _split_seed(seed, 2)
    padded = tf.pad(image, [[CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)


@register_recipe("cifar10", "cifar100")
def _cifar_recipe(image_size: Optional[int]) -> DatasetRecipe:
    """CIFAR: per-channel normalisation with the CIFAR-10 training mean/std; training adds
    zero padding by 4 px + random crop back to 32x32 + random horizontal flip.
    ``--image_size`` (if given) resizes after augmentation, before normalisation."""

    def resize(image):
        return image if image_size is None else resize_square(image, image_size)

    def preprocess(image, label):
        return normalize(resize(image), CIFAR_MEAN, CIFAR_STD), tf.cast(label, tf.int32)

    def augment(image, label, seed):
        image = cifar_pad_crop_flip(image, seed)
        return normalize(resize(image), CIFAR_MEAN, CIFAR_STD), tf.cast(label, tf.int32)

    return DatasetRecipe(name="cifar", preprocess=preprocess, augment=augment, batchable=True)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_DEFAULT_SIZE = 224
IMAGENET_RESIZE_RATIO = 1.14  # shorter side resized to round(1.14 * image_size): 256 for 224


def resize_shorter_side(image: tf.Tensor, side: int) -> tf.Tensor:
    """Bilinear (antialiased) resize keeping the aspect ratio so that the shorter side is
    ``side`` pixels; float32 in the input's value range."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    scale = tf.cast(side, tf.float64) / tf.minimum(h, w)
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), side)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), side)
    return tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]),
                           method="bilinear", antialias=True)


def central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """The central size x size window of an HxWxC image (offsets rounded down)."""
    shape = tf.shape(image)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return image[top:top + size, left:left + size, :]


@register_recipe("imagenet2012")
def _imagenet_recipe(image_size: Optional[int]) -> DatasetRecipe:
    """ImageNet: shorter side resized to round(1.14 x image_size) (256 for 224), then a
    random image_size crop + random horizontal flip for training or the central crop for
    evaluation; pixels scaled to [0, 1] and normalised with the ImageNet mean/std."""
    size = IMAGENET_DEFAULT_SIZE if image_size is None else int(image_size)
    side = int(round(size * IMAGENET_RESIZE_RATIO))

    def finish(image, label):
        image = tf.ensure_shape(image, (size, size, 3))
        return normalize(image, IMAGENET_MEAN, IMAGENET_STD), tf.cast(label, tf.int32)

    def preprocess(image, label):
        return finish(central_crop(resize_shorter_side(image, side), size), label)

    def augment(image, label, seed):
        crop_seed, flip_seed = _split_seed(seed, 2)
        image = resize_shorter_side(image, side)
        image = tf.image.stateless_random_crop(image, (size, size, 3), seed=crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return finish(image, label)

    return DatasetRecipe(name="imagenet2012", preprocess=preprocess, augment=augment,
                         default_image_size=IMAGENET_DEFAULT_SIZE)


# --------------------------------------------------------------------------- Data

# A split is cached in memory (as decoded uint8 images, before any augmentation) when its
# images have a fixed shape and num_examples x H x W x C bytes is at most this much; other
# splits (imagenet2012: variable sizes, ~1.3M images) are streamed from the TFDS files
# every epoch. MNIST (47 MB) and CIFAR (154 MB) are cached.
CACHE_LIMIT_BYTES = 2 * 1024 ** 3
# A cached split whose recipe preprocesses whole batches is also kept preprocessed, as the
# float32 examples the model takes, when they take at most this much (MNIST: 188 MB): its
# un-augmented pipelines then only shuffle and batch, which brought teacher training to the
# throughput of a bare ``fit`` on in-memory arrays (BENCHMARKS.md, Speed).
PREPROCESSED_CACHE_LIMIT_BYTES = 1024 ** 3


class Data:
    """A validated dataset: batched tf.data pipelines and numpy views of one TFDS dataset."""

    def __init__(self, builder: tfds.core.DatasetBuilder, cfg: DataConfig, spec: DatasetSpec,
                 recipe: DatasetRecipe, supervised: bool):
        self.spec = spec
        self.cfg = cfg
        self.recipe = recipe
        self._builder = builder
        self._supervised = supervised
        self._image_feature = builder.info.features["image"]
        self.cached = {split: self._cacheable(split, n) for split, n in
                       ((cfg.train_split, spec.num_train), (cfg.test_split, spec.num_test))}
        if cfg.label_noise and not self.cached[cfg.train_split]:
            raise DataError(f"--label_noise={cfg.label_noise} needs a training split that is "
                            f"cached in memory (fixed image size, at most "
                            f"{CACHE_LIMIT_BYTES / 1e9:g} GB of uint8); choose a smaller "
                            f"--train_split.")
        self.flipped_indices, self._label_offsets = self._label_noise()
        self._train_base = self._base(cfg.train_split, noisy=True)
        self._test_base = self._base(cfg.test_split)
        # Keyed by role, not split name: the two may name one split (without label noise
        # on the test side).
        self._ready = {role: self._preprocessed_cache(role) for role in ("train", "test")}
        self._numpy_train: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self._numpy_test: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def __repr__(self) -> str:
        return f"Data({self.spec!r})"

    def _cacheable(self, split: str, num_examples: int) -> bool:
        """The caching rule: fixed image shape and at most CACHE_LIMIT_BYTES of uint8."""
        shape = tuple(self._image_feature.shape)
        if any(d is None for d in shape):
            return False
        return num_examples * int(np.prod(shape)) <= CACHE_LIMIT_BYTES

    def _read(self, split: str, shuffle_files: bool = False,
              decode: bool = True) -> tf.data.Dataset:
        """``(image, label)`` of ``split`` in file order (or with seeded file shuffling);
        ``decode=False`` leaves images encoded (cheap to shuffle / skip; see _decode)."""
        read_config = tfds.ReadConfig(shuffle_seed=self.cfg.seed)
        decoders = None if decode else {"image": tfds.decode.SkipDecoding()}
        ds = self._builder.as_dataset(split=split, shuffle_files=shuffle_files,
                                      as_supervised=self._supervised, read_config=read_config,
                                      decoders=decoders)
        if not self._supervised:
            ds = ds.map(lambda ex: (ex["image"], ex["label"]),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds

    def _decode(self, image: tf.Tensor) -> tf.Tensor:
        return self._image_feature.decode_example(image)

    def _label_noise(self) -> Tuple[np.ndarray, np.ndarray]:
        """The training examples whose label ``--label_noise`` replaces (sorted positions in
        file order) and per-example label offsets in ``1..classes-1`` (0 elsewhere).

        Exactly ``round(label_noise * num_train)`` labels change, each to one of the other
        classes with equal probability (``(label + offset) % classes``), the same ones for
        the same ``--seed``; drawn from a stream of their own, so the noise does not shift
        any other seeded choice.
        """
        n, classes = self.spec.num_train, self.spec.num_classes
        offsets = np.zeros(n, dtype=np.int64)
        flips = int(round(self.cfg.label_noise * n))
        if flips == 0 or classes < 2:
            return np.zeros(0, dtype=np.int64), offsets
        rng = np.random.default_rng([self.cfg.seed, 0x1A8E1])
        chosen = np.sort(rng.choice(n, size=flips, replace=False))
        offsets[chosen] = rng.integers(1, classes, size=flips)
        return chosen, offsets

    def _base(self, split: str, noisy: bool = False, cache: bool = True) -> tf.data.Dataset:
        """Decoded uint8 examples of ``split`` in file order, cached in memory if small
        (and ``cache``); the training split carries ``--label_noise``'s replaced labels."""
        ds = self._read(split)
        if noisy and len(self.flipped_indices):
            offsets = tf.constant(self._label_offsets)
            classes = tf.constant(self.spec.num_classes, tf.int64)
            ds = ds.enumerate().map(
                lambda i, example: (example[0], tf.cast(
                    (tf.cast(example[1], tf.int64) + offsets[i]) % classes, example[1].dtype)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.cache() if self.cached[split] and cache else ds

    def _preprocessed_cache(self, role: str) -> Optional[tf.data.Dataset]:
        """The ``role`` ("train" or "test") split's examples preprocessed (a batch at a
        time) and cached in memory as float32 model inputs, when the split is cached, the
        recipe is batchable and they take at most PREPROCESSED_CACHE_LIMIT_BYTES; None
        otherwise. Filled on the first pass, like the uint8 cache (which it replaces for
        evaluation preprocessing)."""
        train = role == "train"
        split = self.cfg.train_split if train else self.cfg.test_split
        n = self.spec.num_train if train else self.spec.num_test
        floats = n * int(np.prod(self.spec.input_shape)) * 4
        if not (self.cached[split] and self.preprocesses_batches
                and floats <= PREPROCESSED_CACHE_LIMIT_BYTES):
            return None
        ds = self._base(split, noisy=train, cache=False).batch(self.cfg.batch_size)
        ds = ds.map(self.recipe.preprocess, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
        # unbatch() forgets how many examples there are; Keras needs it to end epochs.
        return ds.unbatch().apply(tf.data.experimental.assert_cardinality(n)).cache()

    @property
    def preprocesses_batches(self) -> bool:
        """Whether un-augmented pipelines batch first and preprocess whole batches: the
        recipe is :attr:`DatasetRecipe.batchable` and every image has the same shape."""
        shape = tuple(self._image_feature.shape)
        return self.recipe.batchable and all(d is not None for d in shape)

    def _shuffled(self, ds: tf.data.Dataset, shuffle: bool, seed: int) -> tf.data.Dataset:
        """``ds`` shuffled with ``seed``, reshuffled each epoch (``ds`` if not ``shuffle``)."""
        if not shuffle:
            return ds
        return ds.shuffle(self.cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def _preprocessed_batches(self, ds: tf.data.Dataset,
                              preprocess: Optional[Preprocess] = None) -> tf.data.Dataset:
        """Decoded examples -> mapped by ``preprocess`` (a two-argument function, by default
        the recipe's), batched and prefetched; a batch at a time when the recipe allows."""
        preprocess = preprocess or self.recipe.preprocess
        size = self.cfg.batch_size
        if self.preprocesses_batches:
            ds = ds.batch(size).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True)
        else:
            ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True).batch(size)
        return self._finish_batched(ds)

    @staticmethod
    def _finish_batched(ds: tf.data.Dataset) -> tf.data.Dataset:
        # Multi-worker training shards by example: a TFDS split may have fewer files
        # than there are workers, which file-based sharding cannot split.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    @property
    def can_pair_teacher_logits(self) -> bool:
        """Whether :meth:`train` can carry precomputed teacher logits: the split is cached
        in memory and not augmented (an augmented image needs the teacher run on it)."""
        return self.cached[self.cfg.train_split] and self.recipe.augment is None

    def train(self, shuffle: bool = True, seed: Optional[int] = None,
              teacher_logits: Optional[np.ndarray] = None) -> tf.data.Dataset:
        """Batched training split ``(x float32, y int32)``, shuffled with the config seed
        (reshuffled each epoch) and augmented by the recipe if it has augmentation;
        ``seed`` replaces the config seed of shuffling and augmentation (not of
        ``--label_noise``, which stays fixed).

        Augmentation draws from stateless seeds of ``tf.data.Dataset.random(seed)``,
        re-randomised each epoch: the same ``--seed`` gives the same batches run to run,
        and every epoch sees new crops and flips.

        ``teacher_logits`` (examples x classes, in the file order of :meth:`train_eval`)
        makes the batches ``(x, (y, teacher_logits))``, the cached-logits input of
        :class:`epkd_tf.distill.Distiller`: each example travels with its own row through
        the shuffle. Only when :attr:`can_pair_teacher_logits`."""
        split = self.cfg.train_split
        seed = self.cfg.seed if seed is None else seed
        if teacher_logits is not None:
            return self._train_with_logits(np.asarray(teacher_logits, np.float32), shuffle,
                                           seed)
        if self.recipe.augment is None and self._ready["train"] is not None:
            return self._finish(self._shuffled(self._ready["train"], shuffle, seed))
        if self.cached[split] or not shuffle:
            ds = self._shuffled(self._train_base, shuffle, seed)
        else:  # streamed: shuffle file order and encoded images, decode afterwards
            ds = self._shuffled(self._read(split, shuffle_files=True, decode=False), True, seed)
            ds = ds.map(lambda image, label: (self._decode(image), label),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.recipe.augment is None:
            return self._preprocessed_batches(ds)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda example, seed: self.recipe.augment(example[0], example[1], seed),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return self._finish_batched(ds.batch(self.cfg.batch_size))

    def _train_with_logits(self, logits: np.ndarray, shuffle: bool,
                           seed: int) -> tf.data.Dataset:
        if not self.can_pair_teacher_logits:
            raise ValueError("teacher logits can only be paired with a cached, un-augmented "
                             "training split; run the teacher on each batch instead.")
        if logits.ndim != 2 or len(logits) != self.spec.num_train:
            raise ValueError(f"teacher_logits has shape {logits.shape}: expected "
                             f"({self.spec.num_train}, classes), one row per training "
                             f"example in file order.")
        # Each example is zipped with its row before the shuffle, so they travel together
        # (measured faster than carrying positions and gathering the rows per batch).
        ready = self._ready["train"]
        rows = tf.data.Dataset.from_tensor_slices(logits)
        ds = tf.data.Dataset.zip((ready if ready is not None else self._train_base, rows))
        if ready is not None:      # already model inputs: only regroup as (x, (y, logits))
            ds = ds.map(lambda xy, t: (xy[0], (xy[1], t)))
            return self._finish(self._shuffled(ds, shuffle, seed))
        preprocess = self.recipe.preprocess

        def with_logits(example, t):
            x, y = preprocess(example[0], example[1])
            return x, (y, t)

        return self._preprocessed_batches(self._shuffled(ds, shuffle, seed), with_logits)

    def _evaluation(self, role: str, base: tf.data.Dataset) -> tf.data.Dataset:
        ready = self._ready[role]
        return self._finish(ready) if ready is not None else self._preprocessed_batches(base)

    def _finish(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        return self._finish_batched(ds.batch(self.cfg.batch_size))

    def train_eval(self) -> tf.data.Dataset:
        """Batched training split in deterministic order, no shuffling or augmentation."""
        return self._evaluation("train", self._train_base)

    def test(self) -> tf.data.Dataset:
        """Batched test split in deterministic order."""
        return self._evaluation("test", self._test_base)

    @staticmethod
    def _to_numpy(ds: tf.data.Dataset) -> Tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for x, y in tfds.as_numpy(ds):
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int32)

    def numpy_train(self) -> Tuple[np.ndarray, np.ndarray]:
        """Whole training split as numpy ``(x float32 normalised, y int32)`` in file order."""
        if self._numpy_train is None:
            self._numpy_train = self._to_numpy(self.train_eval())
        return self._numpy_train

    def numpy_test(self) -> Tuple[np.ndarray, np.ndarray]:
        """Whole test split as numpy ``(x float32 normalised, y int32)`` in file order."""
        if self._numpy_test is None:
            self._numpy_test = self._to_numpy(self.test())
        return self._numpy_test

    def raw_test_images(self, indices) -> Tuple[np.ndarray, np.ndarray]:
        """Test images as stored (uint8, before preprocessing) and their labels, at the
        positions ``indices`` of the test split's file order (for showing examples)."""
        wanted = sorted(set(int(i) for i in indices))
        found = {}
        if wanted:
            ds = self._test_base.take(wanted[-1] + 1).enumerate()
            for i, (image, label) in tfds.as_numpy(ds):
                if int(i) in wanted:
                    found[int(i)] = (image, label)
        xs = [found[int(i)][0] for i in indices]
        ys = [found[int(i)][1] for i in indices]
        shape = tuple(self._image_feature.shape)
        return (np.stack(xs) if xs else np.zeros((0,) + shape, np.uint8),
                np.array(ys, dtype=np.int64))

    def sample(self, n: int, seed: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """A seeded random subset of ``n`` distinct training examples as numpy
        ``(x float32 normalised, y int32)``; the same seed (default: the config seed)
        always gives the same subset in the same order. Evaluation preprocessing (no
        augmentation). A streamed (uncached) split is read once, decoding only the chosen
        examples, instead of being materialised."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= self.spec.num_train:
            raise DataError(f"sample size n={n!r} is invalid: give an integer between 1 and "
                            f"{self.spec.num_train} (the examples in train split "
                            f"{self.cfg.train_split!r}).")
        seed = self.cfg.seed if seed is None else seed
        idx = np.random.default_rng(seed).choice(self.spec.num_train, size=int(n),
                                                 replace=False)
        if self.cached[self.cfg.train_split]:
            x, y = self.numpy_train()
            return x[idx], y[idx]
        wanted = tf.constant(np.sort(idx), tf.int64)
        ds = self._read(self.cfg.train_split, decode=False).enumerate()
        ds = ds.filter(lambda i, example: tf.reduce_any(tf.equal(i, wanted))).take(int(n))
        ds = ds.map(lambda i, example: (i, self.recipe.preprocess(self._decode(example[0]),
                                                                   example[1])),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        found, xs, ys = [], [], []
        for i, (x, y) in tfds.as_numpy(ds.batch(self.cfg.batch_size)):
            found.append(i)
            xs.append(x)
            ys.append(y)
        found = np.concatenate(found)
        position = {int(i): k for k, i in enumerate(found)}
        order = np.array([position[int(i)] for i in idx])
        return (np.concatenate(xs)[order].astype(np.float32),
                np.concatenate(ys)[order].astype(np.int32))


# --------------------------------------------------------------------------- loading


def _exists(path: str) -> bool:
    return tf.io.gfile.exists(path)


def _prepared_versions(data_dir: str, name: str) -> List[str]:
    """Version directories of ``data_dir/name`` that hold a prepared dataset, oldest first."""
    root = os.path.join(data_dir, name)
    if not tf.io.gfile.isdir(root):
        return []
    versions = [v.rstrip("/") for v in tf.io.gfile.listdir(root)]
    versions = [v for v in versions
                if _exists(os.path.join(root, v, "dataset_info.json"))]

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


class _NoLeftovers:
    """Context manager removing empty directories created under ``data_dir/name`` (and
    ``data_dir/name`` itself) while it is active, so validation leaves nothing behind."""

    def __init__(self, data_dir: str, name: str):
        self.data_dir = data_dir
        self.root = os.path.join(data_dir, name.split(":")[0].split("/")[0])

    def _snapshot(self) -> set:
        found = set()
        if os.path.isdir(self.root):
            found.add(self.root)
            for dirpath, dirnames, filenames in os.walk(self.root):
                found.update(os.path.join(dirpath, d) for d in dirnames)
                found.update(os.path.join(dirpath, f) for f in filenames)
        return found

    def __enter__(self):
        self.before = self._snapshot()
        return self

    def __exit__(self, *exc):
        new_dirs = sorted((p for p in self._snapshot() - self.before if os.path.isdir(p)),
                          key=len, reverse=True)
        for path in new_dirs:  # deepest first; only empty directories are removed
            try:
                os.rmdir(path)
            except OSError:
                pass
        return False


def _resolve_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The builder of a prepared dataset ``name`` in ``data_dir``, or DataError."""
    hint = _IMPORT_HINT.format(name=name, data_dir=data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        builder = None
    except (ValueError, TypeError, AssertionError) as e:  # e.g. unknown version or config
        text = " ".join(str(e).split()) or type(e).__name__
        if text.startswith("Failed to construct") and '": ' in text:
            text = text.rsplit('": ', 1)[-1]  # drop TFDS's builder_kwargs preamble
        raise DataError(f"--dataset={name!r} is unusable: {text}") from None
    if builder is None:
        candidates = sorted(set(tfds.list_builders()) | set(_local_names(data_dir)))
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
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
    raise DataError(f"--dataset={name!r} is not prepared in --data_dir={data_dir} (looked for "
                    f"{os.path.join(str(builder.data_path), 'dataset_info.json')}) and downloads "
                    f"are disabled: import it with `{hint}`.")


def _split_size(builder: tfds.core.DatasetBuilder, split: str, flag: str) -> int:
    splits = builder.info.splits
    allowed = ", ".join(sorted(splits.keys()))
    try:
        n = splits[split].num_examples
    except (ValueError, KeyError, AssertionError, TypeError) as e:
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


def load_data(cfg: DataConfig) -> Data:
    """Loads cfg.dataset through tensorflow_datasets (tfds.load with data_dir=cfg.data_dir, download=False never tries the network) and validates everything up front.

    Concretely it resolves the builder with ``tfds.builder(name, data_dir=...)`` (falling
    back to ``tfds.builder_from_directory`` for a catalogue name imported under another
    version), checks ``builder.is_prepared()`` and reads the splits with
    ``builder.as_dataset`` -- what ``tfds.load(..., download=False)`` does, without ever
    calling ``download_and_prepare``.
    The dataset name goes through ``DATASET_ALIASES``; it may be a TFDS catalogue name
    prepared in ``data_dir`` or any dataset written there by :func:`import_npz`.  Raises
    :class:`DataError` (one line) for an unknown or unprepared dataset, a missing
    ``data_dir``, a malformed, unknown or empty split, or a non-image-classification
    dataset.  Validation never leaves new directories in ``data_dir``.
    """
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"load_data expects a DataConfig, got {type(cfg).__name__}.")
    data_dir = cfg.data_dir
    if data_dir is None:
        data_dir = str(tfds.core.constants.DATA_DIR)
    data_dir = os.path.expanduser(str(data_dir))
    if not tf.io.gfile.isdir(data_dir):
        raise DataError(f"--data_dir={data_dir!r} does not exist: give an existing directory "
                        f"holding prepared TFDS datasets.")
    name = DATASET_ALIASES.get(cfg.dataset.strip(), cfg.dataset.strip())

    with _NoLeftovers(data_dir, name):
        builder = _resolve_builder(name, data_dir)
        info = builder.info
        canonical = info.name
        features = info.features
        keys = list(features.keys()) if hasattr(features, "keys") else []
        if "image" not in keys or "label" not in keys:
            raise DataError(f"--dataset={name!r} is not an image-classification dataset: it has "
                            f"features {keys}, but 'image' and 'label' are required.")
        image_shape = tuple(features["image"].shape)
        if len(image_shape) == 2:
            image_shape = image_shape + (1,)
        recipe = get_recipe(canonical, cfg.image_size)
        size = cfg.image_size if cfg.image_size is not None else recipe.default_image_size
        if size is not None:
            image_shape = (size, size) + image_shape[2:]
        if any(d is None for d in image_shape):
            raise DataError(f"--dataset={name!r} has images of variable size {image_shape}: an "
                            f"image size must be set with --image_size=N (images are resized "
                            f"to N x N).")
        num_classes = getattr(features["label"], "num_classes", None)
        if not num_classes:
            raise DataError(f"--dataset={name!r} has a label feature without a class count: a "
                            f"ClassLabel 'label' feature is required.")
        supervised = tuple(info.supervised_keys or ()) == ("image", "label")
        num_train = _split_size(builder, cfg.train_split, "train_split")
        num_test = _split_size(builder, cfg.test_split, "test_split")
        if canonical in _UNLABELLED_TEST_SPLITS and re.match(r"^\s*test\b", cfg.test_split):
            raise DataError(f"--test_split={cfg.test_split!r} is unusable for {canonical}: its "
                            f"test split has no labels (all -1); use --test_split="
                            f"{_UNLABELLED_TEST_SPLITS[canonical]}.")

    spec = DatasetSpec(name=canonical, input_shape=tuple(int(d) for d in image_shape),
                       num_classes=int(num_classes), num_train=num_train, num_test=num_test)
    return Data(builder, cfg, spec, recipe, supervised)


# --------------------------------------------------------------------------- import_npz


class _NpzBuilder(adhoc_builder.AdhocBuilder, skip_registration=True):
    """AdhocBuilder that also records supervised keys, so ``as_supervised=True`` loads."""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._description,
            features=self._feature_spec,
            supervised_keys=("image", "label"),
            disable_shuffling=self._disable_shuffling,
        )


def _validate_npz(npz_path: str) -> Dict[str, np.ndarray]:
    if not os.path.isfile(npz_path):
        raise DataError(f"--import_npz={npz_path!r} does not exist: give an .npz file with "
                        f"x_train, y_train, x_test, y_test.")
    try:
        with np.load(npz_path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zipfile / pickle / format errors
        raise DataError(f"--import_npz={npz_path!r} is not a readable .npz file "
                        f"({type(e).__name__}).") from None
    required = ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"--import_npz={npz_path!r} lacks the arrays {', '.join(missing)}: it must "
                        f"hold x_train, y_train, x_test, y_test (has {', '.join(sorted(arrays))}).")
    shapes = {}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8:
            raise DataError(f"--import_npz={npz_path!r}: x_{part} has dtype {x.dtype}, but "
                            f"images must be uint8.")
        if x.ndim not in (3, 4) or (x.ndim == 4 and not 1 <= x.shape[-1] <= 4):
            raise DataError(f"--import_npz={npz_path!r}: x_{part} has shape {x.shape}, but images "
                            f"must be N x H x W or N x H x W x C with C in 1..4.")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"--import_npz={npz_path!r}: y_{part} has shape {y.shape} and dtype "
                            f"{y.dtype}, but labels must be a 1-D integer array.")
        if len(x) != len(y):
            raise DataError(f"--import_npz={npz_path!r}: x_{part} has {len(x)} images but y_{part} "
                            f"has {len(y)} labels; the counts must be equal.")
        if len(x) == 0:
            raise DataError(f"--import_npz={npz_path!r}: x_{part} is empty; each split needs at "
                            f"least one example.")
        if y.min() < 0:
            raise DataError(f"--import_npz={npz_path!r}: y_{part} has the negative label "
                            f"{int(y.min())}; labels must be >= 0.")
        if x.ndim == 3:
            x = x[..., np.newaxis]
        arrays[f"x_{part}"], arrays[f"y_{part}"] = x, y.astype(np.int64)
        shapes[part] = x.shape[1:]
    if shapes["train"] != shapes["test"]:
        raise DataError(f"--import_npz={npz_path!r}: train images are {shapes['train']} but test "
                        f"images are {shapes['test']}; they must have the same shape.")
    return arrays


def _examples(x: np.ndarray, y: np.ndarray) -> Iterator[Tuple[int, dict]]:
    for i in range(len(x)):
        yield i, {"image": x[i], "label": int(y[i])}


def import_npz(npz_path: str, name: str, data_dir: str, overwrite: bool = False) -> str:
    """Writes an .npz (x_train, y_train, x_test, y_test; images N×H×W or N×H×W×C uint8; integer labels) as a TFDS dataset under data_dir so tfds.load(name, data_dir=data_dir) finds it; returns the dataset directory.

    The dataset has features ``image`` (``Image(shape=(H, W, C))``) and ``label``
    (``ClassLabel(num_classes=max label + 1)``), splits ``train``/``test`` in file order and
    supervised keys ``(image, label)``.  ``mnist`` is written as version 3.0.1 (the TFDS
    catalogue version, so plain ``tfds.load("mnist")`` finds it), other names as 1.0.0.
    The dataset is built in a temporary directory inside ``data_dir`` and moved into place
    when complete.  An existing prepared dataset is only replaced if ``overwrite``.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DataError(f"--name={name!r} is not a valid dataset name: use lower-case letters, "
                        f"digits and underscores, starting with a letter (e.g. my_digits).")
    if not data_dir:
        raise DataError("--data_dir is empty: give the directory to write the dataset into.")
    data_dir = os.path.abspath(os.path.expanduser(str(data_dir)))
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"--data_dir={data_dir!r} is a file: give a directory.")
    arrays = _validate_npz(npz_path)

    version = _CATALOGUE_VERSIONS.get(name, _DEFAULT_IMPORT_VERSION)
    target = os.path.join(data_dir, name, version)
    if os.path.exists(os.path.join(target, "dataset_info.json")) and not overwrite:
        raise DataError(f"--name={name!r} is already prepared at {target}: pass --overwrite "
                        f"(overwrite=True) to replace it or choose another name.")

    x_train, y_train = arrays["x_train"], arrays["y_train"]
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=tuple(int(d) for d in x_train.shape[1:]),
                                     dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=num_classes),
    })

    os.makedirs(data_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".import_{name}_", dir=data_dir)
    created_parent = False
    try:
        builder = _NpzBuilder(
            name=name, version=version, features=features,
            split_datasets={"train": _examples(x_train, y_train),
                            "test": _examples(x_test, y_test)},
            data_dir=tmp,
            description=f"Imported by epkd_tf.data.import_npz from {os.path.basename(npz_path)}.",
            disable_shuffling=True,
        )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
        built = os.path.join(tmp, name, version)
        if not os.path.exists(os.path.join(built, "dataset_info.json")):
            raise RuntimeError(f"TFDS did not write {built}/dataset_info.json.")
        parent = os.path.join(data_dir, name)
        if not os.path.isdir(parent):
            os.makedirs(parent)
            created_parent = True
        if os.path.exists(target):  # overwrite (or a stray, unprepared directory)
            os.rename(target, os.path.join(tmp, "replaced"))
        os.rename(built, target)
        created_parent = False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_parent:
            shutil.rmtree(os.path.join(data_dir, name), ignore_errors=True)
    return target


# --------------------------------------------------------------------------- CLI


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("import_npz", None, "Path of an .npz file (x_train, y_train, x_test, "
                        "y_test) to import as a TFDS dataset.")
    flags.DEFINE_string("name", None, "TFDS name to give the imported dataset (e.g. mnist).")
    flags.DEFINE_string("data_dir", None, "TFDS data directory to write the dataset into.")
    flags.DEFINE_boolean("overwrite", False, "Replace an already prepared dataset.")


def main(argv) -> int:
    """Command-line entry: imports --import_npz as --name into --data_dir; exit 2 on DataError."""
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])}; use "
              f"--import_npz=PATH --name=NAME --data_dir=DIR.", file=sys.stderr)
        return 2
    try:
        for flag in ("import_npz", "name", "data_dir"):
            if not getattr(FLAGS, flag):
                raise DataError(f"--{flag} is required: use {_IMPORT_HINT.format(name='NAME', data_dir='DIR')}"
                                f" [--overwrite].")
        path = import_npz(FLAGS.import_npz, FLAGS.name, FLAGS.data_dir, overwrite=FLAGS.overwrite)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
