"""The optimizers every training phase of a run uses (teacher, fine-tunes, distillation).

Why not a plain ``tf_keras.optimizers.Adam``: its ``apply_gradients`` sums the gradients
over the replicas through ``ReplicaContext.all_reduce``, which, in a traced train step,
registers a ``tf.custom_gradient`` in TensorFlow's process-wide gradient registry and never
removes it. The registered gradient function holds tensors of the train step's graph, so
every ``fit`` leaves that graph alive for the rest of the process, and with it the handles
of every variable it captured: the trained model's weights, the optimizer's slots and, for
``poly_magnitude``, TF-MOT's masks. An EPKD run trains a model per candidate and per
iteration, so its resident memory grew by a model's training state each iteration
(ResNet-50: 1.4 GB from the end of iteration 1 to the end of iteration 2). With one
replica that sum is the identity: :func:`adam` skips it there (the Keras-documented way to
customise the aggregation) and keeps it wherever there are several replicas.
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects tf_keras before TensorFlow loads)
import tensorflow as tf
import tf_keras

from epkd_tf import precision


def adam(learning_rate, model: tf_keras.Model) -> tf_keras.optimizers.Optimizer:
    """Adam for training ``model``.

    Args:
        learning_rate: a float or a Keras learning-rate schedule.
        model: the model it will train: a ``mixed_float16`` model gets a dynamic
            ``LossScaleOptimizer`` around the Adam (:func:`epkd_tf.precision.optimizer_for`).

    Returns:
        A ``tf_keras`` optimizer (still of Keras' own classes, so a saved compile config
        reloads anywhere) that does not sum gradients over a single replica.
    """
    optimizer = tf_keras.optimizers.Adam(learning_rate)
    single_replica_aggregation(optimizer)
    return precision.optimizer_for(model, optimizer)


def single_replica_aggregation(optimizer: tf_keras.optimizers.Optimizer
                               ) -> tf_keras.optimizers.Optimizer:
    """Makes ``optimizer`` leave gradients as they are when one replica computed them.

    Keras' ``Optimizer.aggregate_gradients`` is the hook its documentation names for
    custom aggregation; it is replaced on this one instance, so the optimizer stays of its
    Keras class. A ``LossScaleOptimizer`` calls its inner optimizer's hook, so wrap after.

    Args:
        optimizer: a ``tf_keras`` optimizer (not a ``LossScaleOptimizer``).

    Returns:
        ``optimizer`` itself.
    """
    keras_aggregation = optimizer.aggregate_gradients

    def aggregate_gradients(grads_and_vars):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync == 1:
            return list(grads_and_vars)        # a sum over one replica
        return keras_aggregation(grads_and_vars)

    optimizer.aggregate_gradients = aggregate_gradients
    return optimizer
