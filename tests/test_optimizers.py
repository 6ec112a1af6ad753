"""epkd_tf.optimizers: the run's Adam trains like Keras' own and lets a trained model go."""
import gc
import weakref

import numpy as np
import pytest

import epkd_tf  # noqa: F401
import tensorflow as tf
import tf_keras

from epkd_tf import optimizers, precision

pytestmark = pytest.mark.unit


def _mlp(seed=0):
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((6,))
    hidden = tf_keras.layers.Dense(12, activation="relu")(inputs)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(3)(hidden))


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    return x, x[:, :3].argmax(1).astype("int32")


def _fit(model, optimizer):
    model.compile(optimizer, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    return model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0).history["loss"]


def _trained_handles(make_optimizer):
    """Weak references to the variable handles of a model and optimizer trained inside
    this call (nothing of them is returned)."""
    model = _mlp()
    optimizer = make_optimizer(model)
    _fit(model, optimizer)
    return [weakref.ref(v.handle) for v in model.variables + optimizer.variables]


def test_a_trained_model_and_its_optimizer_are_freed():
    """Keras' Adam sums gradients over the replicas with a custom gradient that TensorFlow
    registers process-wide and never drops; the trained variables stayed alive with it
    (every candidate's fine-tune leaked its weights and Adam slots)."""
    refs = _trained_handles(lambda model: optimizers.adam(1e-3, model))
    gc.collect()
    alive = [ref for ref in refs if ref() is not None]
    assert refs and not alive, f"{len(alive)} of {len(refs)} variables outlived training"


def test_same_training_as_keras_adam():
    reference, ours = _mlp(), _mlp()
    keras_losses = _fit(reference, tf_keras.optimizers.Adam(1e-3))
    our_losses = _fit(ours, optimizers.adam(1e-3, ours))
    np.testing.assert_allclose(our_losses, keras_losses, rtol=1e-6)
    for a, b in zip(ours.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_stays_a_keras_adam_and_scales_float16_losses():
    plain = optimizers.adam(1e-3, _mlp())
    assert type(plain) is tf_keras.optimizers.Adam          # a saved compile config reloads
    assert tf_keras.optimizers.serialize(plain)["class_name"] == "Adam"
    mixed = precision.with_policy(_mlp(), "mixed_float16")
    scaled = optimizers.adam(1e-3, mixed)
    assert isinstance(scaled, tf_keras.mixed_precision.LossScaleOptimizer)
    refs = _trained_handles(lambda model: optimizers.adam(
        1e-3, precision.with_policy(model, "mixed_float16")))
    gc.collect()
    assert not [ref for ref in refs if ref() is not None]


def test_one_replica_gradients_pass_unchanged():
    """Several replicas keep Keras' summation: tests/test_distribute.py trains with this
    optimizer under MirroredStrategy over two devices and matches one device."""
    optimizer = optimizers.adam(1e-3, _mlp())
    assert tf.distribute.get_replica_context().num_replicas_in_sync == 1
    gradient, variable = tf.constant([1.0, 2.0]), tf.Variable([0.0, 0.0])
    (g, v), = optimizer.aggregate_gradients([(gradient, variable)])
    assert g is gradient and v is variable
