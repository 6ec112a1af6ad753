"""What a run draws once from its data and reuses in every iteration, so that every
iteration (and a resumed run) sees the same examples: the int8 calibration inputs, the
batches BatchNorm statistics are re-estimated on, the ranking examples and the teacher's
logits on the training split."""
from __future__ import annotations

import contextlib
from typing import Callable, List, Optional

import numpy as np

from epkd_tf.deploy import exports
from epkd_tf.distill import batchnorm


class RunSamples:
    """The run's seeded samples, each drawn on first use.

    Args:
        cfg: the run's :class:`epkd_tf.config.RunConfig` (seed, batch size, counts).
        data: the run's data.
        clock: the run's clock (computing the teacher's logits is a phase of its own).
        teacher: returns the run's teacher (None before it exists).
        sample: ``sample(n)`` draws ``n`` seeded training examples as ``(x, y)`` arrays,
            the same ones a pruning criterion drawing ``n`` sees.
        resumed: whether the run resumed after its first iteration (then the teacher's
            logits are computed again, and that time is not a phase of the run).
    """

    def __init__(self, cfg, data, clock, teacher: Callable, sample: Callable,
                 resumed: Callable[[], bool] = lambda: False):
        self.cfg, self.data, self.clock = cfg, data, clock
        self.teacher, self.sample, self.resumed = teacher, sample, resumed
        self._calibration = None
        self._bn_batches = None
        self._teacher_logits = None

    def calibration(self) -> np.ndarray:
        """The int8 calibration inputs (seeded training examples)."""
        if self._calibration is None:
            self._calibration = exports.calibration_examples(self.data, self.cfg.data.seed)
        return self._calibration

    def bn_batches(self, teacher=None) -> List:
        """--bn_recalibration_batches batches of seeded training examples ([] when the
        teacher, ``teacher`` or the run's, has no BatchNormalization layer: nothing pruned
        from it has one either)."""
        if self._bn_batches is None:
            teacher = teacher if teacher is not None else self.teacher()
            has_bn = teacher is not None and batchnorm.batchnorm_layers(teacher)
            self._bn_batches = (batchnorm.sample_batches(
                self.data, self.cfg.bn_recalibration_batches, seed=self.cfg.data.seed)
                if has_bn else [])
        return self._bn_batches

    def recalibrate(self, model, iteration: int = 0, pruner: str = "") -> None:
        """Re-estimates ``model``'s BatchNormalization statistics on :meth:`bn_batches`
        (the ``bn_recalibration`` phase of ``iteration`` and ``pruner``)."""
        if not batchnorm.batchnorm_layers(model):
            # Nothing to re-estimate: no row (so a resumed run has the rows of an
            # uninterrupted one whichever iteration first draws the batches).
            return
        with self.clock.phase("bn_recalibration", iteration, pruner):
            batches = self.bn_batches()
            if batches:
                batchnorm.recalibrate(model, batches, len(batches))

    def ranking_examples(self):
        """The training examples whose accuracy ranks the candidates: --eval_examples of
        them (the same seeded subset every iteration, shared with any criterion that draws
        as many), or the whole split."""
        n = self.cfg.eval_examples
        if n == 0 or n >= self.data.spec.num_train:
            return self.data.train_eval()
        x, y = self.sample(n)
        import tensorflow as tf
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(self.cfg.data.batch_size)

    def teacher_logits(self) -> Optional[np.ndarray]:
        """The teacher's logits on the training split (None when the training data is
        augmented: then the teacher runs on every batch)."""
        if self._teacher_logits is None:
            from epkd_tf.distill.cache import teacher_logits_for
            # One teacher_logits row per run (computed in iteration 1): a resumed run
            # computes the cache again, and that time counts as `other`.
            phase = (contextlib.nullcontext() if self.resumed()
                     else self.clock.phase("teacher_logits"))
            with phase:
                logits = teacher_logits_for(self.teacher(), self.data)
            self._teacher_logits = False if logits is None else logits
        return None if self._teacher_logits is False else self._teacher_logits

    def use_teacher_logits(self, logits) -> None:
        """Logits the caller already holds (the study, the Python API)."""
        self._teacher_logits = logits
