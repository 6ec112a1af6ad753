"""Exports for serving: SavedModel in TF Serving's layout and TFLite flatbuffers."""
from __future__ import annotations

import tensorflow as tf

import epkd_tf  # noqa: F401
import tf_keras


def serving_signature(model: tf_keras.Model):
    """``serving_default``: float32 images as the model takes them → named outputs
    ``logits``, ``probabilities`` and ``classes``."""
    spec = tf.TensorSpec([None] + list(model.input_shape[1:]), tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def serve(images):
        logits = model(images, training=False)
        return {"logits": logits,
                "probabilities": tf.nn.softmax(logits, axis=-1),
                "classes": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    return serve


def export_saved_model(model: tf_keras.Model, path: str) -> None:
    """Writes ``model`` as a SavedModel that TF Serving loads from ``path`` as it is."""
    tf.saved_model.save(model, path, signatures={"serving_default": serving_signature(model)})
