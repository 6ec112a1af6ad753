"""The :class:`Data` class: batched tf.data pipelines, caching, sampling and label noise
over a dataset's examples, wherever they are stored.

A dataset has up to three *roles* -- ``train``, ``validation`` (optional, held out) and
``test`` -- each an :class:`Examples` object that reads its stored examples in a fixed
order: TFDS splits (``epkd_tf/data/tfds.py``), arrays in memory (``memory.py``) or a
seeded subset of either (``holdout.py``). :class:`Data` builds every pipeline the
pipeline code uses on top of them, so it behaves the same for all.
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import abc
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from epkd_tf.data.recipes import DatasetRecipe, Preprocess
from epkd_tf.data.source import DataError, DatasetSpec, DataSource

__all__ = ["Data", "Examples", "CACHE_LIMIT_BYTES", "PREPROCESSED_CACHE_LIMIT_BYTES",
           "ROLES", "cacheable"]

# A split is cached in memory (as decoded uint8 images, before any augmentation) when its
# images have a fixed shape and num_examples x H x W x C bytes is at most this much; other
# splits (imagenet2012: variable sizes, ~1.3M images) are streamed from the TFDS files
# every epoch. MNIST (47 MB) and CIFAR (154 MB) are cached.
CACHE_LIMIT_BYTES = 2 * 1024 ** 3
# A cached split whose recipe preprocesses whole batches is also kept preprocessed, as the
# float32 examples the model takes, when they take at most this much (MNIST: 188 MB): its
# un-augmented pipelines then only shuffle and batch, which brought teacher training to the
# throughput of a bare ``fit`` on in-memory arrays (docs/benchmarks/speed.md).
PREPROCESSED_CACHE_LIMIT_BYTES = 1024 ** 3

ROLES = ("train", "validation", "test")


class Examples(abc.ABC):
    """The stored examples of one role, in a fixed order.

    ``image_shape``: (H, W, C) as stored, None where images vary in size. ``in_memory``:
    the examples already are in memory (they are never cached a second time).
    ``model_inputs``: the stored images already are the model's float32 inputs (in-memory
    data), so no preprocessed copy is made either.
    """

    def __init__(self, num_examples: int, image_shape: Tuple[Optional[int], ...], *,
                 in_memory: bool = False, model_inputs: bool = False):
        self.num_examples = int(num_examples)
        self.image_shape = tuple(image_shape)
        self.in_memory = in_memory
        self.model_inputs = model_inputs

    @abc.abstractmethod
    def read(self, decode: bool = True, shuffle_files: bool = False) -> tf.data.Dataset:
        """``(image, label)`` in the stored order; ``shuffle_files``: a seeded order of the
        storage files instead (streamed training; ignored where there are no files);
        ``decode=False``: images left encoded (cheap to shuffle and skip, see
        :meth:`decode`)."""

    def decode(self, image: tf.Tensor) -> tf.Tensor:
        """An image read with ``decode=False``, decoded."""
        return image


def cacheable(image_shape: Sequence[Optional[int]], num_examples: int) -> bool:
    """The caching rule: fixed image shape and at most CACHE_LIMIT_BYTES of uint8."""
    if any(d is None for d in image_shape):
        return False
    return num_examples * int(np.prod(image_shape)) <= CACHE_LIMIT_BYTES


class Data(DataSource):
    """A validated dataset: batched tf.data pipelines and numpy views of its examples.

    Made by :func:`epkd_tf.data.load_data` (TFDS), :func:`epkd_tf.data.from_arrays` and
    :func:`epkd_tf.data.from_datasets` (memory); see :class:`DataSource` for the interface.
    ``cached`` maps each split name (``--train_split``, ``--validation_split``,
    ``--test_split``) to whether its examples are held in memory.
    """

    def __init__(self, cfg, spec: DatasetSpec, recipe: DatasetRecipe,
                 examples: Mapping[str, Examples], split_names: Mapping[str, str]):
        unknown = set(examples) - set(ROLES)
        if unknown or not {"train", "test"} <= set(examples):
            raise ValueError(f"Data needs train and test examples (and optionally validation), "
                             f"got {sorted(examples)}.")
        self.spec = spec
        self.cfg = cfg
        self.recipe = recipe
        self._examples: Dict[str, Examples] = dict(examples)
        self._cached = {role: ex.in_memory or cacheable(ex.image_shape, ex.num_examples)
                        for role, ex in self._examples.items()}
        self.cached = {split_names[role]: self._cached[role] for role in self._examples}
        if cfg.label_noise and not self._cached["train"]:
            raise DataError(f"--label_noise={cfg.label_noise} needs a training split that is "
                            f"cached in memory (fixed image size, at most "
                            f"{CACHE_LIMIT_BYTES / 1e9:g} GB of uint8); choose a smaller "
                            f"--train_split.")
        self._flipped, self._label_offsets = self._label_noise()
        self._bases = {role: self._base(role) for role in self._examples}
        # (The decoded, stored-form test examples; tests compare exports against them.)
        self._train_base, self._test_base = self._bases["train"], self._bases["test"]
        # Keyed by role, not split name: two roles may name one split (without label
        # noise on the test side).
        self._ready = {role: self._preprocessed_cache(role) for role in self._examples}
        self._numpy: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        return f"Data({self.spec!r})"

    # -- interface properties ---------------------------------------------------------
    @property
    def has_validation(self) -> bool:
        """Whether a validation split was set (``--validation_split``)."""
        return "validation" in self._examples

    @property
    def flipped_indices(self) -> np.ndarray:
        """Training-order positions whose label ``--label_noise`` replaced (sorted)."""
        return self._flipped

    @property
    def raw_image_shape(self) -> Tuple[Optional[int], ...]:
        """(H, W, C) of the images as stored (what a client sends to an exported model);
        a dimension is None where the dataset's images vary in size (e.g. imagenet2012)."""
        return tuple(None if d is None else int(d) for d in self._examples["test"].image_shape)

    @property
    def preprocesses_batches(self) -> bool:
        """Whether un-augmented pipelines batch first and preprocess whole batches: the
        recipe is :attr:`DatasetRecipe.batchable` and every image has the same shape."""
        return self.recipe.batchable and all(d is not None for d in self.raw_image_shape)

    @property
    def can_pair_teacher_logits(self) -> bool:
        """Whether :meth:`train` can carry precomputed teacher logits: the training
        examples are cached in memory and not augmented (an augmented image needs the
        teacher run on it)."""
        return self._cached["train"] and self.recipe.augment is None

    # -- building blocks --------------------------------------------------------------
    def _label_noise(self) -> Tuple[np.ndarray, np.ndarray]:
        """The training examples whose label ``--label_noise`` replaces (sorted positions in
        training order) and per-example label offsets in ``1..classes-1`` (0 elsewhere).

        Exactly ``round(label_noise * num_train)`` labels change, each to one of the other
        classes with equal probability (``(label + offset) % classes``), the same ones for
        the same ``--seed``; drawn from a stream of their own, so the noise does not shift
        any other seeded choice. Validation and test labels are never changed.
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

    def _base(self, role: str, cache: bool = True) -> tf.data.Dataset:
        """Decoded examples of ``role`` in stored order, cached in memory if small (and
        ``cache``); the training examples carry ``--label_noise``'s replaced labels."""
        examples = self._examples[role]
        ds = examples.read()
        if role == "train" and len(self._flipped):
            offsets = tf.constant(self._label_offsets)
            classes = tf.constant(self.spec.num_classes, tf.int64)
            ds = ds.enumerate().map(
                lambda i, example: (example[0], tf.cast(
                    (tf.cast(example[1], tf.int64) + offsets[i]) % classes, example[1].dtype)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self._cached[role] and cache and not examples.in_memory:
            ds = ds.cache()
        return ds

    def _preprocessed_cache(self, role: str) -> Optional[tf.data.Dataset]:
        """The ``role``'s examples preprocessed (a batch at a time) and cached in memory as
        float32 model inputs, when they are cached, the recipe is batchable and they take
        at most PREPROCESSED_CACHE_LIMIT_BYTES; None otherwise. Filled on the first pass,
        like the uint8 cache (which it replaces for evaluation preprocessing). In-memory
        model inputs are used as they are."""
        examples = self._examples[role]
        if examples.model_inputs:
            return self._bases[role]
        n = examples.num_examples
        floats = n * int(np.prod(self.spec.input_shape)) * 4
        if not (self._cached[role] and self.preprocesses_batches
                and floats <= PREPROCESSED_CACHE_LIMIT_BYTES):
            return None
        ds = self._base(role, cache=False).batch(self.cfg.batch_size)
        ds = ds.map(self.recipe.preprocess, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
        # unbatch() forgets how many examples there are; Keras needs it to end epochs.
        return ds.unbatch().apply(tf.data.experimental.assert_cardinality(n)).cache()

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

    def _finish(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        return self._finish_batched(ds.batch(self.cfg.batch_size))

    def _evaluation(self, role: str) -> tf.data.Dataset:
        ready = self._ready[role]
        return (self._finish(ready) if ready is not None
                else self._preprocessed_batches(self._bases[role]))

    # -- pipelines --------------------------------------------------------------------
    def train(self, shuffle: bool = True, seed: Optional[int] = None,
              teacher_logits: Optional[np.ndarray] = None) -> tf.data.Dataset:
        """Batched training examples ``(x float32, y int32)``, shuffled with the config seed
        (reshuffled each epoch) and augmented by the recipe if it has augmentation;
        ``seed`` replaces the config seed of shuffling and augmentation (not of
        ``--label_noise`` or the validation split, which stay fixed).

        Augmentation draws from stateless seeds of ``tf.data.Dataset.random(seed)``,
        re-randomised each epoch: the same ``--seed`` gives the same batches run to run,
        and every epoch sees new crops and flips.

        ``teacher_logits`` (examples x classes, in the training order of
        :meth:`train_eval`) makes the batches ``(x, (y, teacher_logits))``, the
        cached-logits input of :class:`epkd_tf.distill.Distiller`: each example travels
        with its own row through the shuffle. Only when :attr:`can_pair_teacher_logits`."""
        seed = self.cfg.seed if seed is None else seed
        if teacher_logits is not None:
            return self._train_with_logits(np.asarray(teacher_logits, np.float32), shuffle,
                                           seed)
        if self.recipe.augment is None and self._ready["train"] is not None:
            return self._finish(self._shuffled(self._ready["train"], shuffle, seed))
        examples = self._examples["train"]
        if self._cached["train"] or not shuffle:
            ds = self._shuffled(self._train_base, shuffle, seed)
        else:  # streamed: shuffle file order and encoded images, decode afterwards
            ds = self._shuffled(examples.read(decode=False, shuffle_files=True), True, seed)
            ds = ds.map(lambda image, label: (examples.decode(image), label),
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
                             f"example in training order.")
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

    def train_eval(self) -> tf.data.Dataset:
        """Batched training examples in training order, no shuffling or augmentation."""
        return self._evaluation("train")

    def validation(self) -> tf.data.Dataset:
        """Batched validation examples in a fixed order, evaluation preprocessing (like
        :meth:`test`); DataError without a validation split."""
        if not self.has_validation:
            raise DataError("there is no validation split: set --validation_split "
                            "(DataConfig.validation_split, validation_split=) to a TFDS split "
                            "or a fraction of the training split such as 0.1.")
        return self._evaluation("validation")

    def test(self) -> tf.data.Dataset:
        """Batched test examples in a fixed order."""
        return self._evaluation("test")

    def evaluation_subset(self, role: str, n: int,
                          seed: Optional[int] = None) -> tf.data.Dataset:
        """Batched examples of ``role`` (``validation`` or ``test``) with evaluation
        preprocessing, restricted to a fixed seeded subset of ``n`` of them (in stored
        order; the same ``seed``, default the config seed, always picks the same ones);
        the whole split, as :meth:`validation` / :meth:`test` give it, when ``n`` is 0 or
        at least the split's size. Streamed: nothing but a mask of the split's positions
        is held, and a streamed split's unchosen examples are skipped undecoded.

        Raises:
            DataError: ``role`` is ``validation`` and there is no validation split.
            ValueError: ``role`` is neither, or ``n`` is negative.
        """
        if role not in ("validation", "test") or n < 0:
            raise ValueError(f"evaluation_subset takes role validation or test and n >= 0, "
                             f"got {role!r}, {n!r}.")
        if role == "validation" and not self.has_validation:
            return self.validation()        # raises the one-line DataError
        examples = self._examples[role]
        count = examples.num_examples
        if n == 0 or n >= count:
            return self._evaluation(role)
        seed = self.cfg.seed if seed is None else seed
        chosen = np.random.default_rng(seed).choice(count, size=int(n), replace=False)
        return self._chosen_batches(role, chosen)

    def _chosen_batches(self, role: str, positions: np.ndarray) -> tf.data.Dataset:
        """Batched, evaluation-preprocessed examples of ``role`` at ``positions``, in
        stored order: one pass that keeps them (from the preprocessed or decoded cache,
        or the stored files undecoded where the split streams), never the whole split in
        an array."""
        examples = self._examples[role]
        mask = np.zeros(examples.num_examples, dtype=bool)
        mask[positions] = True
        keep = tf.constant(mask)
        last = int(np.max(positions)) + 1

        def chosen(ds: tf.data.Dataset) -> tf.data.Dataset:
            return (ds.enumerate().filter(lambda i, example: tf.gather(keep, i))
                    .map(lambda i, example: example))

        # A cached split is read whole (a pass cut short would leave its cache unfilled);
        # a streamed one stops after the last chosen example.
        ready = self._ready[role]
        if ready is not None:
            return self._finish(chosen(ready))
        if self._cached[role]:
            return self._preprocessed_batches(chosen(self._bases[role]))
        ds = chosen(examples.read(decode=False).take(last)).map(
            lambda image, label: (examples.decode(image), label),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return self._preprocessed_batches(ds)

    # -- numpy views ------------------------------------------------------------------
    @staticmethod
    def _to_numpy(ds: tf.data.Dataset) -> Tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for x, y in ds.as_numpy_iterator():
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int32)

    def _numpy_of(self, role: str, make) -> Tuple[np.ndarray, np.ndarray]:
        if role not in self._numpy:
            self._numpy[role] = self._to_numpy(make())
        return self._numpy[role]

    def numpy_train(self) -> Tuple[np.ndarray, np.ndarray]:
        """All training examples as numpy ``(x float32 preprocessed, y int32)``, training
        order."""
        return self._numpy_of("train", self.train_eval)

    def numpy_test(self) -> Tuple[np.ndarray, np.ndarray]:
        """All test examples as numpy ``(x float32 preprocessed, y int32)``, test order."""
        return self._numpy_of("test", self.test)

    def raw_test_images(self, indices) -> Tuple[np.ndarray, np.ndarray]:
        """Test images as stored (uint8 for TFDS datasets, before preprocessing; the arrays
        as given for in-memory data) and their labels, at the positions ``indices`` of the
        test order (for showing examples)."""
        wanted = sorted(set(int(i) for i in indices))
        found = {}
        if wanted:
            ds = self._test_base.take(wanted[-1] + 1).enumerate()
            for i, (image, label) in ds.as_numpy_iterator():
                if int(i) in wanted:
                    found[int(i)] = (image, label)
        xs = [found[int(i)][0] for i in indices]
        ys = [found[int(i)][1] for i in indices]
        if xs:
            return np.stack(xs), np.array(ys, dtype=np.int64)
        dtype = self._test_base.element_spec[0].dtype.as_numpy_dtype
        shape = tuple(0 if d is None else d for d in self.raw_image_shape)
        return np.zeros((0,) + shape, dtype), np.zeros(0, np.int64)

    def sample(self, n: int, seed: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """A seeded random subset of ``n`` distinct training examples as numpy
        ``(x float32 preprocessed, y int32)``; the same seed (default: the config seed)
        always gives the same subset in the same order. Evaluation preprocessing (no
        augmentation); never a validation example. The training examples are read once
        (streamed ones decoding only the chosen ones); only the ``n`` chosen are held."""
        if (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                or not 1 <= n <= self.spec.num_train):
            raise DataError(f"sample size n={n!r} is invalid: give an integer between 1 and "
                            f"{self.spec.num_train} (the examples in train split "
                            f"{self.cfg.train_split!r}).")
        seed = self.cfg.seed if seed is None else seed
        idx = np.random.default_rng(seed).choice(self.spec.num_train, size=int(n),
                                                 replace=False)
        # One pass keeps the chosen examples (in stored order); the whole split is never
        # held as an array (8 GB of float32 for a cached 2 GB split).
        x, y = self._to_numpy(self._chosen_batches("train", idx))
        order = np.searchsorted(np.sort(idx), idx)
        return x[order], y[order]
