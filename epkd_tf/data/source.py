"""What the rest of epkd_tf may use of a dataset: :class:`DatasetSpec` and the
:class:`DataSource` interface, and :class:`DataError`, the one error data code raises.

Every loader returns a :class:`DataSource` (a :class:`epkd_tf.data.Data`, whether it reads a
TFDS dataset or arrays held in memory), so pruners, the Distiller, the teacher-logit cache
and the exports work with any of them; tests may implement it with a few arrays.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
from epkd_tf.errors import DataError  # noqa: F401

__all__ = ["DataError", "DatasetSpec", "DataSource", "MAX_CLASSES"]

# The most classes a dataset may have: far above any classification benchmark (ImageNet-21k
# has 21,841), low enough that a label column read as something else (ids, a float
# feature, uint64 garbage) is refused instead of making a model with a billion outputs.
MAX_CLASSES = 100_000


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about the loaded dataset."""

    name: str                 # canonical dataset name (the TFDS name actually loaded)
    input_shape: tuple        # (H, W, C) of the images fed to the model
    num_classes: int
    num_train: int            # training examples (without the validation examples)
    num_test: int
    num_validation: int = 0   # held-out validation examples; 0 without a validation split


class DataSource(abc.ABC):
    """The dataset interface the pipeline uses (see :class:`epkd_tf.data.Data`).

    Batched pipelines yield ``(x float32, y int32)`` with ``x`` of shape
    ``(batch,) + spec.input_shape``, batches of ``cfg.batch_size``. "Training order" is the
    fixed order of the training examples that :meth:`train_eval`, :meth:`numpy_train`,
    teacher logits and :attr:`flipped_indices` refer to.
    """

    #: sizes, input shape and class count
    spec: DatasetSpec
    #: the :class:`epkd_tf.config.DataConfig` it was loaded with (``cfg.batch_size``,
    #: ``cfg.seed``...)
    cfg: object
    #: the :class:`epkd_tf.data.DatasetRecipe` whose ``preprocess`` maps a stored image to
    #: the model input (exports put it into the SavedModel's raw-image signature)
    recipe: object

    @abc.abstractmethod
    def train(self, shuffle: bool = True, seed: Optional[int] = None,
              teacher_logits: Optional[np.ndarray] = None):
        """Training batches, shuffled (seeded, reshuffled each epoch) and augmented by the
        recipe; with ``teacher_logits`` (one row per training example, training order)
        batches ``(x, (y, logits))`` -- only when :attr:`can_pair_teacher_logits`."""

    @abc.abstractmethod
    def train_eval(self):
        """Training batches in training order, evaluation preprocessing."""

    @abc.abstractmethod
    def validation(self):
        """Validation batches in a fixed order, evaluation preprocessing; DataError
        without a validation split (see :attr:`has_validation`)."""

    @abc.abstractmethod
    def test(self):
        """Test batches in a fixed order, evaluation preprocessing."""

    @abc.abstractmethod
    def sample(self, n: int, seed: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``n`` distinct training examples chosen by ``seed`` (default ``cfg.seed``) as
        numpy ``(x float32, y int32)``, evaluation preprocessing."""

    @abc.abstractmethod
    def numpy_train(self) -> Tuple[np.ndarray, np.ndarray]:
        """The whole training set as numpy ``(x float32, y int32)``, training order."""

    @abc.abstractmethod
    def numpy_test(self) -> Tuple[np.ndarray, np.ndarray]:
        """The whole test set as numpy ``(x float32, y int32)``, test order."""

    @abc.abstractmethod
    def raw_test_images(self, indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Test images as stored (before preprocessing) and their labels, at ``indices``."""

    @property
    @abc.abstractmethod
    def has_validation(self) -> bool:
        """Whether a validation split was set (``spec.num_validation > 0``)."""

    @property
    @abc.abstractmethod
    def can_pair_teacher_logits(self) -> bool:
        """Whether :meth:`train` can carry precomputed teacher logits."""

    @property
    @abc.abstractmethod
    def flipped_indices(self) -> np.ndarray:
        """Training-order positions whose label ``--label_noise`` replaced (sorted)."""

    @property
    @abc.abstractmethod
    def raw_image_shape(self) -> Tuple[Optional[int], ...]:
        """(H, W, C) of the images as stored (what a client of an exported model sends);
        None where the dataset's images vary in size."""
