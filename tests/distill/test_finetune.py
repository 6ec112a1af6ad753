"""epkd_tf.distill.finetune.distil: the shared teacher comes back as it was."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import numpy as np
import pytest
import tf_keras

from epkd_tf.data import from_arrays
from epkd_tf.distill import finetune

pytestmark = pytest.mark.integration


def test_the_teacher_s_trainable_flags_are_restored_after_a_distillation():
    """The Distiller freezes the teacher during the fit; afterwards every flag is as it was
    (a layer the user froze stays frozen, the rest trainable), so a candidate pruned from
    the same teacher object later (the study's EPKD after its distillation methods) is
    not silently frozen."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, 64)
    data = from_arrays(x[:48], y[:48], x[48:], y[48:], batch_size=16)

    def model(name):
        inputs = tf_keras.Input((6, 6, 1))
        h = tf_keras.layers.Conv2D(4, 3, name=f"{name}_conv")(inputs)
        h = tf_keras.layers.BatchNormalization(name=f"{name}_bn")(h)
        h = tf_keras.layers.Flatten()(h)
        return tf_keras.Model(inputs, tf_keras.layers.Dense(3, name=f"{name}_out")(h))

    teacher, student = model("t"), model("s")
    teacher.get_layer("t_conv").trainable = False         # the user's own choice
    before = [(layer.name, layer.trainable) for layer in teacher.layers]
    weights = [w.copy() for w in teacher.get_weights()]
    finetune.distil(student, teacher, data, epochs=1, learning_rate=1e-3, alpha=0.5,
                    temperature=2.0, batch_size=16)
    assert teacher.trainable and [(l.name, l.trainable) for l in teacher.layers] == before
    assert len(teacher.trainable_weights) == 2 + 2        # bn (gamma, beta) and dense
    for a, b in zip(weights, teacher.get_weights()):      # and it never trained
        np.testing.assert_array_equal(a, b)
