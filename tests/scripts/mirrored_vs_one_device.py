"""Trains the same Distiller and classifier on one device and under MirroredStrategy over 2
logical CPU devices; prints JSON with both results (run by tests/test_distribute.py in a
fresh process, because logical devices must be configured before TensorFlow starts)."""
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np  # noqa: E402

from epkd_tf import distribute  # noqa: E402

strategy = distribute.make_strategy("mirrored", logical_cpus=2)
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from epkd_tf import optimizers  # noqa: E402
from epkd_tf.distill import Distiller  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(512, 10)).astype("float32")
y = (x[:, :4].argmax(1)).astype("int32")
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)   # global batch 64


def mlp(seed, hidden):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential([tf_keras.layers.Dense(hidden, activation="relu",
                                                      input_shape=(10,)),
                                tf_keras.layers.Dense(4)])


def train(scope):
    with scope:
        teacher, student = mlp(1, 32), mlp(2, 8)
        classifier = mlp(3, 16)
        distiller = Distiller(student=student, teacher=teacher)
        distiller.compile(optimizer=tf_keras.optimizers.SGD(0.1), alpha=0.3, temperature=4.0,
                          metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="acc")])
        # The run's own optimizer: it must still sum the replicas' gradients.
        classifier.compile(optimizer=optimizers.adam(0.01, classifier),
                           loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    d = distiller.fit(data, epochs=2, verbose=0).history
    c = classifier.fit(data, epochs=2, verbose=0).history
    return {"distill_loss": d["loss"], "distill_acc": d["acc"],
            "student": [w.tolist() for w in student.get_weights()],
            "classifier_loss": c["loss"]}


one = train(tf.distribute.get_strategy().scope())
two = train(strategy.scope())
json.dump({"replicas": strategy.num_replicas_in_sync, "one": one, "two": two}, sys.stdout)
