"""Unstructured magnitude pruning for the study's iterative methods (Han et al. 2015;
Frankle & Carbin 2018): global thresholds, pruning rounds and masks kept during training."""
from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np
import tensorflow as tf

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf.pruning.magnitude import zero_smallest


def prunable(model: tf_keras.Model) -> List[tf.Variable]:
    """The weights magnitude pruning may zero: kernels (rank >= 2). Biases and
    normalisation parameters are kept, as in Han et al. and Frankle & Carbin. (Not
    ``trainable_variables``: a frozen teacher has none.)"""
    return [v for v in model.weights if v.shape.rank is not None and v.shape.rank >= 2]


def prune_to(model: tf_keras.Model, target_nonzero: int) -> int:
    """Zeros the globally smallest-magnitude nonzero kernel weights of ``model`` (in place)
    until it has ``target_nonzero`` nonzero parameters; returns the number zeroed (see
    :func:`epkd_tf.pruning.magnitude.zero_smallest`). One threshold over all layers: small
    layers whose weights are large keep more of them."""
    return zero_smallest(model, target_nonzero, prunable(model))


def masks(model: tf_keras.Model) -> List[np.ndarray]:
    """0/1 masks of the prunable weights (1 = nonzero)."""
    return [(v.numpy() != 0).astype(v.dtype.as_numpy_dtype) for v in prunable(model)]


def rewind(model: tf_keras.Model, initial_weights: Sequence[np.ndarray]) -> None:
    """Lottery-ticket reset: every weight back to ``initial_weights`` (those of the model
    before its first training), pruned kernel entries kept at zero."""
    kept = masks(model)
    model.set_weights(initial_weights)
    for var, mask in zip(prunable(model), kept):
        var.assign(var.numpy() * mask)


def round_targets(start_nonzero: int, target_nonzero: int, prune_rate: float) -> List[int]:
    """Nonzero counts after each pruning round from ``start_nonzero`` down to
    ``target_nonzero``: the fewest equal geometric rounds that each remove at most
    ``prune_rate`` of the remaining weights; the last equals ``target_nonzero``."""
    if target_nonzero >= start_nonzero:
        return []
    ratio = target_nonzero / start_nonzero
    rounds = max(1, math.ceil(math.log(ratio) / math.log(1.0 - prune_rate) - 1e-9))
    step = ratio ** (1.0 / rounds)
    targets = [int(round(start_nonzero * step ** k)) for k in range(1, rounds)]
    return targets + [int(target_nonzero)]


class MaskedClassifier(tf_keras.Model):
    """Trains ``model`` with its pruned weights held at zero: after every optimizer step
    inside the compiled train step, each kernel is multiplied by its 0/1 mask (taken when
    the wrapper is made). Compile and fit the wrapper like the model; the model itself
    holds the trained weights."""

    def __init__(self, model: tf_keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.inner = model
        self._masks = [(v, tf.constant(m)) for v, m in zip(prunable(model), masks(model))
                       if not m.all()]

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            logits = self.inner(x, training=True)
            loss = self.compiled_loss(y, logits, regularization_losses=self.inner.losses)
        variables = self.inner.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        for var, mask in self._masks:
            var.assign(var * mask)
        self.compiled_metrics.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}
