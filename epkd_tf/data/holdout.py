"""The held-out validation split (``--validation_split``): which training examples it
takes, and the checks that keep it apart from the training examples.

A *fraction* such as 0.1 takes ``round(0.1 x n)`` of the ``n`` examples of
``--train_split``, chosen by ``--seed`` from a random stream of its own (the same seed, the
same examples; the training examples are the rest, in their stored order):

* when the training split is cached in memory (or is in-memory data), a uniformly random
  subset of single examples (:func:`carve_positions`) -- imported files may be sorted by
  class, so "the last 10 %" would be a biased sample;
* when it is streamed from TFDS files (too large to cache, or images of varying size),
  seeded random *blocks* of consecutive examples (:func:`carve_blocks`: the split is cut
  into 100 nearly equal blocks and whole blocks are drawn, the last one trimmed), read with
  TFDS split arithmetic. Single examples would need a pass over the whole split to filter
  them out every epoch and would break the file-level shuffling that streamed training
  relies on; TFDS shuffles examples when it prepares a catalogue dataset, so blocks of its
  files are random samples too.

A TFDS split *string* (e.g. ``train[90%:]`` with ``--train_split=train[:90%]``) is used as
it is; one that shares examples with the training split is refused (:func:`overlaps`
compares the absolute example ranges TFDS resolves both to, so ``train[90%:]`` against
``train`` is caught, not only identical strings). The loader refuses a ``--test_split``
that shares examples with the training or validation split the same way.
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import functools
import operator
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from epkd_tf.data.pipeline import Examples
from epkd_tf.data.source import DataError

__all__ = ["validation_count", "carve_positions", "carve_blocks", "Subset", "overlaps",
           "shared_split",
           "split_instruction", "BLOCKS"]

# Blocks a streamed training split is cut into for a fractional validation split: 100
# (each 1 %) keeps the TFDS read instructions few while spreading the validation examples
# over the whole split.
BLOCKS = 100
# Random stream of the validation split, apart from shuffling, label noise and sampling.
_STREAM = 0x7A11D

Range = Tuple[int, int]


def validation_count(num_examples: int, fraction: float, train_split: str,
                     flag: str = "--validation_split") -> int:
    """``round(fraction x num_examples)``; DataError unless it leaves at least one
    validation and one training example."""
    k = int(round(fraction * num_examples))
    if k < 1 or num_examples - k < 1:
        raise DataError(f"{flag}={fraction:g} of the {num_examples} examples of "
                        f"train split {train_split!r} leaves {num_examples - k} training and "
                        f"{k} validation examples; each needs at least 1: choose a fraction "
                        f"between {1 / num_examples:.3g} and {1 - 1 / num_examples:.3g} "
                        f"or a larger training split.")
    return k


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAM])


def carve_positions(num_examples: int, count: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(training positions, validation positions), both sorted: ``count`` positions of
    ``range(num_examples)`` drawn uniformly without replacement by ``seed``."""
    validation = np.sort(_rng(seed).choice(num_examples, size=count, replace=False))
    keep = np.ones(num_examples, bool)
    keep[validation] = False
    return np.flatnonzero(keep), validation


def _merged(ranges: Sequence[Range]) -> List[Range]:
    out: List[Range] = []
    for start, stop in sorted(ranges):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], stop)
        elif stop > start:
            out.append((start, stop))
    return out


def carve_blocks(num_examples: int, count: int, seed: int,
                 blocks: Optional[int] = None) -> Tuple[List[Range], List[Range]]:
    """(training ranges, validation ranges) of positions ``[start, stop)``: ``count``
    positions made of seeded random blocks (``num_examples`` cut into ``blocks`` nearly
    equal blocks, drawn in random order until ``count`` is reached, the last one cut
    short; ``blocks`` defaults to :data:`BLOCKS`)."""
    m = min(blocks or BLOCKS, num_examples)
    edges = [(i * num_examples) // m for i in range(m + 1)]
    chosen, total = [], 0
    for b in _rng(seed).permutation(m):
        take = min(edges[b + 1] - edges[b], count - total)
        chosen.append((edges[b], edges[b] + take))
        total += take
        if total == count:
            break
    validation = _merged(chosen)
    training, start = [], 0
    for a, b in validation:
        training.append((start, a))
        start = b
    training.append((start, num_examples))
    return _merged(training), validation


class Subset(Examples):
    """The examples of ``source`` at the sorted ``positions`` of its stored order, read by
    filtering its stream (so meant for sources that are cached in memory afterwards)."""

    def __init__(self, source: Examples, positions: Sequence[int]):
        super().__init__(len(positions), source.image_shape, in_memory=False,
                         model_inputs=source.model_inputs)
        self.source = source
        self._keep = np.zeros(source.num_examples, bool)
        self._keep[np.asarray(positions, np.int64)] = True

    def read(self, decode: bool = True, shuffle_files: bool = False) -> tf.data.Dataset:
        # Positions refer to the stored order, so the source is always read in it.
        keep = tf.constant(self._keep)
        ds = self.source.read(decode=decode).enumerate()
        ds = ds.filter(lambda i, example: keep[i]).map(lambda i, example: example)
        # filter() forgets the count; Keras needs it to end epochs.
        return ds.apply(tf.data.experimental.assert_cardinality(self.num_examples))

    def decode(self, image: tf.Tensor) -> tf.Tensor:
        return self.source.decode(image)


def _absolute(splits, split) -> List[Tuple[str, int, int]]:
    """(split name, start, stop) of each part of a split string, as TFDS resolves it."""
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(splits)
    # TFDS writes None for "from the start" and "to the end".
    return [(p.splitname, p.from_ or 0,
             splits[p.splitname].num_examples if p.to is None else p.to) for p in parts]


def shared_split(splits, a: str, b: str) -> Optional[str]:
    """The name of the first stored split (``train``, ``test``...) of which the TFDS split
    strings ``a`` and ``b`` both select an example, or None when they are disjoint.

    Both are resolved to absolute example ranges with the split sizes of ``splits`` (the
    builder's ``info.splits``, from its ``dataset_info.json``), exactly as TFDS reads them:
    percent and absolute slices, negative bounds, ``+`` unions and ``all``.

    Raises:
        ValueError: a split string TFDS cannot resolve (checked before, by the loader).
    """
    for x in _absolute(splits, a):
        for y in _absolute(splits, b):
            if x[0] == y[0] and max(x[1], y[1]) < min(x[2], y[2]):
                return x[0]
    return None


def overlaps(splits, a: str, b: str) -> bool:
    """Whether TFDS split strings ``a`` and ``b`` share an example (``splits``: the
    builder's ``info.splits``; see :func:`shared_split`)."""
    return shared_split(splits, a, b) is not None


def split_instruction(splits, split: str, ranges: Sequence[Range]):
    """A TFDS read instruction for the positions ``ranges`` (sorted ``[start, stop)``) of
    the split string ``split``, in its order."""
    parts, offset = [], 0
    for name, first, end in _absolute(splits, split):
        length = end - first
        for start, stop in ranges:
            lo, hi = max(start, offset), min(stop, offset + length)
            if lo < hi:
                parts.append(tfds.core.ReadInstruction(
                    name, from_=first + lo - offset, to=first + hi - offset, unit="abs"))
        offset += length
    return functools.reduce(operator.add, parts)
