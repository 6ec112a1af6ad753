"""One distillation fine-tune, shared by the EPKD loop and the study's methods.

A student is fitted to the teacher's softened outputs with :class:`Distiller` and Adam, at
a constant learning rate or a cosine decay over every step of ``epochs``. The teacher's
logits can be given precomputed (:mod:`epkd_tf.distill.cache`): the teacher then never
runs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tf_keras

from epkd_tf import optimizers, training
from epkd_tf.distill.distiller import Distiller


def distil(student: tf_keras.Model, teacher: tf_keras.Model, data, *, epochs: int,
           learning_rate: float, alpha: float, temperature: float, batch_size: int,
           cosine: bool = True, batchnorm: str = "auto", preserve_zeros: bool = True,
           teacher_logits=None, callbacks: Sequence = (), validation_data=None,
           track_accuracy: bool = False, jit_compile: Optional[bool] = None,
           verbose: int = 0, checkpoint=None, name: str = "finetune",
           what: Optional[str] = None):
    """Fine-tunes ``student`` in place by distillation from ``teacher``.

    Args:
        student: the model trained (changed in place).
        teacher: the model whose outputs it learns (never changed).
        data: the training data (``data.train()`` batches, ``data.spec.num_train``).
        epochs: passes over the training split.
        learning_rate: Adam's rate (the peak of the cosine decay when ``cosine``).
        alpha: the weight of the hard-label loss (1 - alpha weighs the soft one).
        temperature: the softening temperature of both outputs.
        batch_size: the batch size of ``data.train()`` (the cosine decay's step count).
        cosine: decay the rate over every step (else constant).
        batchnorm: how the student's BatchNormalization layers normalise
            (:class:`Distiller`'s ``batchnorm``).
        preserve_zeros: weights that are exactly zero stay zero (magnitude sparsity).
        teacher_logits: the teacher's logits on the training split, or None.
        callbacks: Keras callbacks of the fit.
        validation_data: evaluated after each epoch, or None.
        track_accuracy: also record the training accuracy per epoch.
        jit_compile: compile the training step with XLA (None: Keras' default).
        verbose: Keras' verbosity.
        checkpoint: the training's :class:`epkd_tf.epochs.TrainingCheckpoint` (written
            after every epoch and as --checkpoint_every asks; a killed training resumes
            from it), or None.
        name: the training's fault points (``<name>_epoch_<e>[_step_<k>]``).
        what: how progress lines name it (default ``name``).

    Returns:
        An object whose ``history`` holds the per-epoch logs, as a Keras ``History``'s.
    """
    from epkd_tf.epochs import fit_epochs
    steps = -(-data.spec.num_train // batch_size)
    rate = (training.cosine_learning_rate(learning_rate, epochs, steps) if cosine
            else learning_rate)
    # The Distiller freezes the teacher for the fit; the shared teacher object must come
    # back as it was: a candidate later pruned from a frozen teacher would copy the frozen
    # flags (no BatchNormalization re-estimation, a magnitude fine-tune training nothing).
    flags = _trainable_flags(teacher) if teacher is not None else []
    try:
        distiller = Distiller(student=student, teacher=teacher,
                              preserve_zeros=preserve_zeros, batchnorm=batchnorm)
        metrics: Optional[list] = (
            [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
            if track_accuracy else None)
        extra = {} if jit_compile is None else {"jit_compile": jit_compile}
        distiller.compile(optimizer=optimizers.adam(rate, student),
                          metrics=metrics,
                          alpha=alpha, temperature=temperature, **extra)
        # Each epoch's order from (seed, epoch) alone, so that a resumed epoch replays it.
        return fit_epochs(distiller, training.epoch_batches(data, teacher_logits), epochs,
                          name=name, steps_per_epoch=steps, batch_size=batch_size,
                          what=what, callbacks=callbacks, validation_data=validation_data,
                          verbose=verbose, checkpoint=checkpoint)
    finally:
        for layer, trainable in flags:
            layer.trainable = trainable


def _trainable_flags(model: tf_keras.Model) -> list:
    """``[(layer, its trainable flag)]`` of ``model`` and every layer in it, nested models
    included, outermost first, so that restoring them in order leaves each as it was
    (setting a model's flag sets its layers' too)."""
    flags = [(model, model.trainable)]
    for layer in getattr(model, "layers", []):
        flags += (_trainable_flags(layer) if isinstance(layer, tf_keras.Model)
                  else [(layer, layer.trainable)])
    return flags
