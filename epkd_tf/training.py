"""Plain supervised training and evaluation of classifiers that output logits."""
from __future__ import annotations

import math
from typing import List, Optional

import pandas as pd

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import optimizers
from epkd_tf.errors import NonFiniteLossError  # noqa: F401

HISTORY_COLUMNS = ["epoch", "loss", "train_accuracy", "test_accuracy"]


def compile_classifier(model: tf_keras.Model, learning_rate,
                       jit_compile: bool = False) -> tf_keras.Model:
    """Compiles ``model`` with Adam (a float or a schedule), cross-entropy on logits and an
    accuracy metric; ``jit_compile``: XLA-compiled train step."""
    model.compile(optimizer=optimizers.adam(learning_rate, model),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile)
    return model


def history_frame(history: tf_keras.callbacks.History, first_epoch: int = 1) -> pd.DataFrame:
    """Keras history → DataFrame(epoch, loss, train_accuracy, test_accuracy).

    ``train_accuracy`` is the mean over the epoch's training batches as Keras reports it
    (weights move during the epoch); ``test_accuracy`` is measured on the whole test split
    after the epoch.
    """
    h = history.history
    epochs = len(h.get("loss", []))
    return pd.DataFrame({
        "epoch": list(range(first_epoch, first_epoch + epochs)),
        "loss": h.get("loss", []),
        "train_accuracy": h.get("accuracy", []),
        "test_accuracy": h.get("val_accuracy", [float("nan")] * epochs),
    }, columns=HISTORY_COLUMNS)


def cosine_learning_rate(learning_rate: float, epochs: int, steps_per_epoch: int,
                         final_fraction: float = 0.01):
    """Cosine decay from ``learning_rate`` to ``final_fraction`` of it over the training.

    A decayed rate ends training on a stable model: with a constant Adam rate the test
    accuracy of the last LeNet epochs swings by a few tenths of a point.
    """
    return tf_keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, epochs * steps_per_epoch), alpha=final_fraction)


def train_classifier(model: tf_keras.Model, data, epochs: int, learning_rate: float,
                     callbacks: Optional[List] = None, verbose: int = 0,
                     validate: bool = True, jit_compile: bool = False,
                     checkpoint=None, name: str = "train",
                     what: Optional[str] = None) -> pd.DataFrame:
    """Trains ``model`` on ``data.train()`` for ``epochs`` (Adam, cosine-decayed rate),
    evaluating on the test split after every epoch unless ``validate`` is False (then
    ``test_accuracy`` is empty); returns the per-epoch history.

    Each epoch's order comes from (``--seed``, epoch) (:func:`epoch_batches`) and the
    epochs run under :func:`epkd_tf.epochs.fit_epochs`: with ``checkpoint`` (a
    :class:`epkd_tf.epochs.TrainingCheckpoint`) a killed training resumes where its last
    checkpoint was written. ``name``: the training's fault points; ``what``: how its
    progress lines name it."""
    from epkd_tf.epochs import fit_epochs
    steps = steps_per_epoch(data)
    compile_classifier(model, cosine_learning_rate(learning_rate, epochs, steps), jit_compile)
    if epochs == 0:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    history = fit_epochs(model, epoch_batches(data), epochs, name=name,
                         steps_per_epoch=steps, batch_size=data.cfg.batch_size, what=what,
                         callbacks=callbacks or [],
                         validation_data=data.test() if validate else None,
                         verbose=verbose, checkpoint=checkpoint)
    return history_frame(history)


def steps_per_epoch(data) -> int:
    """Training batches per epoch of ``data``."""
    return math.ceil(data.spec.num_train / data.cfg.batch_size)


def epoch_batches(data, teacher_logits=None):
    """``epoch -> data.train(...)`` for that epoch (0-based): its order (shuffle and
    augmentation) drawn from a seed derived from ``--seed`` and the epoch alone, so that a
    training resumed at an epoch sees what an uninterrupted one sees there."""
    from epkd_tf.seeds import derive_seed

    def batches(epoch: int):
        seed = derive_seed(data.cfg.seed, epoch)
        if teacher_logits is not None:
            return data.train(seed=seed, teacher_logits=teacher_logits)
        return data.train(seed=seed)
    return batches


class EpochLog(tf_keras.callbacks.Callback):
    """One log line as each epoch ends (``what`` epoch e/E: loss, accuracies, seconds and
    the ETA of this training), so long trainings show progress while they happen instead
    of all their lines at the end."""

    def __init__(self, what: str, epochs: int):
        super().__init__()
        self.what, self.epochs = what, epochs
        self._started = None

        self._first = None

    def on_train_begin(self, logs=None):
        import time
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        if self._first is None:
            self._first = epoch     # a resumed training's first epoch in this process

    def on_epoch_end(self, epoch, logs=None):
        import logging
        import time
        logs = logs or {}
        elapsed = time.perf_counter() - (self._started or time.perf_counter())
        done = epoch + 1
        here = done - (self._first or 0)
        parts = [f"loss {float(logs['loss']):.4f}"] if "loss" in logs else []
        if "accuracy" in logs:
            parts.append(f"train acc {float(logs['accuracy']):.4f}")
        if "val_accuracy" in logs:
            parts.append(f"test acc {float(logs['val_accuracy']):.4f}")
        eta = elapsed / max(here, 1) * (self.epochs - done)
        logging.getLogger("epkd_tf").info(
            "%s epoch %d/%d: %s; %.0f s, ETA %.0f s", self.what, done, self.epochs,
            ", ".join(parts), elapsed, eta)


class LossGuard(tf_keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or Inf (as Keras'
    ``TerminateOnNaN``) and remembers where in ``problem``. (The fault-injection points
    ``<name>_epoch_<n>`` are :func:`epkd_tf.epochs.fit_epochs`', after each epoch's
    checkpoint.)"""

    def __init__(self, name: str):
        super().__init__()
        self._supports_tf_logs = True     # fetch the loss alone, not every metric per batch
        self.name = name
        self.problem: Optional[str] = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    # Reading the loss forces the host to wait for the step: every batch, that doubled the
    # time of a LeNet step. A non-finite loss stays non-finite, so checking every
    # CHECK_EVERY batches (and at each epoch's end) finds it a few batches later at most.
    CHECK_EVERY = 50

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.CHECK_EVERY == 0:
            self._check((logs or {}).get("loss"), f"batch {batch + 1}")

    def _check(self, loss, where: str) -> None:
        if self.problem is not None or loss is None:
            return
        value = float(loss)
        if not math.isfinite(value):
            self.problem = f"loss {value} at epoch {self._epoch + 1}, {where}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._check((logs or {}).get("loss"), "end of the epoch")


def copy_model(model: tf_keras.Model) -> tf_keras.Model:
    """An independent, trainable copy with the same weights: what distillation trains, so
    that the model it starts from (a ranked candidate, the shared teacher) stays as it was."""
    clone = tf_keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.trainable = True
    return clone


def train_teacher(model: tf_keras.Model, data, epochs: int, learning_rate: float,
                  callbacks: Optional[List] = None, verbose: int = 0,
                  jit_compile: bool = False, flag: str = "--teacher_learning_rate",
                  bn_batches: Optional[List] = None, checkpoint=None) -> pd.DataFrame:
    """Trains a teacher with :func:`train_classifier` under a :class:`LossGuard`: the one
    teacher training of the EPKD run and of the study. A NaN/Inf loss raises
    NonFiniteLossError (naming ``flag``, the learning rate to lower): every later stage
    needs the teacher. Then its BatchNormalization statistics are re-estimated
    (:mod:`epkd_tf.distill.batchnorm`) on ``bn_batches`` (default: the default number of seeded
    training batches of ``data``; [] leaves them as trained). ``checkpoint``: the
    training's :class:`epkd_tf.epochs.TrainingCheckpoint` (a killed training resumes from
    it), or None."""
    from epkd_tf.config import default_bn_batches
    from epkd_tf.distill import batchnorm
    if bn_batches is None and batchnorm.batchnorm_layers(model):
        bn_batches = batchnorm.sample_batches(data, default_bn_batches(),
                                              seed=data.cfg.seed)
    guard = LossGuard("teacher")
    history = train_classifier(model, data, epochs, learning_rate,
                               callbacks=list(callbacks or []) + [
                                   guard, RecalibrateBeforeTest(bn_batches or [])],
                               verbose=verbose, jit_compile=jit_compile,
                               checkpoint=checkpoint, name="teacher", what="Teacher")
    if guard.problem:
        raise NonFiniteLossError(f"teacher training hit a non-finite {guard.problem}; "
                                 f"lower {flag} (now {learning_rate:g}).")
    batchnorm.recalibrate(model, bn_batches or [], len(bn_batches or []))
    return history


class RecalibrateBeforeTest(tf_keras.callbacks.Callback):
    """Re-estimates the model's BatchNormalization statistics on ``batches`` before each
    epoch's test evaluation, so that the per-epoch test accuracy is the one the teacher
    would have if training stopped there (it is recalibrated then too).

    Without it the moving averages lag weights that move fast: a MobileNetV2 (0.35)
    trained 8 epochs on 10,800 Fashion-MNIST images logged 10% test accuracy for six
    epochs and 66% at the last, and scored 83.5% once recalibrated. Training itself
    normalises with batch statistics, so the weights it learns do not change."""

    def __init__(self, batches):
        super().__init__()
        self.batches = list(batches)

    def on_test_begin(self, logs=None):
        if self.batches:
            from epkd_tf.distill import batchnorm
            batchnorm.recalibrate(self.model, self.batches, len(self.batches))


def accuracy(model: tf_keras.Model, dataset) -> float:
    """Top-1 accuracy of ``model`` (logits) on a batched (x, y) dataset."""
    # Counted in NumPy, not with a Keras metric: a metric made inside a tf.distribute
    # scope has per-replica variables that cannot be updated from this plain loop.
    import numpy as np
    predict = _predict_fn(model)
    correct = seen = 0
    for x, y in dataset:
        logits = predict(x).numpy()
        correct += int(np.sum(np.argmax(logits, axis=-1) == np.asarray(y).reshape(-1)))
        seen += len(logits)
    return correct / max(seen, 1)


def _predict_fn(model):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False)

    return predict
