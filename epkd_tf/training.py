"""Plain supervised training and evaluation of classifiers that output logits."""
from __future__ import annotations

import math
from typing import List, Optional

import pandas as pd

import epkd_tf  # noqa: F401
import tf_keras

HISTORY_COLUMNS = ["epoch", "loss", "train_accuracy", "test_accuracy"]


def compile_classifier(model: tf_keras.Model, learning_rate,
                       jit_compile: bool = False) -> tf_keras.Model:
    """Compiles ``model`` with Adam (a float or a schedule), cross-entropy on logits and an
    accuracy metric; ``jit_compile``: XLA-compiled train step."""
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
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
                     validate: bool = True, jit_compile: bool = False) -> pd.DataFrame:
    """Trains ``model`` on ``data.train()`` for ``epochs`` (Adam, cosine-decayed rate),
    evaluating on the test split after every epoch unless ``validate`` is False (then
    ``test_accuracy`` is empty); returns the per-epoch history."""
    steps = math.ceil(data.spec.num_train / data.cfg.batch_size)
    compile_classifier(model, cosine_learning_rate(learning_rate, epochs, steps), jit_compile)
    if epochs == 0:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    history = model.fit(data.train(), epochs=epochs,
                        validation_data=data.test() if validate else None,
                        callbacks=callbacks or [], verbose=verbose)
    return history_frame(history)


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
