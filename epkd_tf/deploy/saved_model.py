"""SavedModels for TF Serving: the serving signatures (raw uint8 images through the
dataset recipe's evaluation preprocessing, or float32 model inputs) and the
``models.config`` files that name every model a run serves.

``serving_default`` maps images to ``logits``, ``probabilities`` and ``classes``; with a
preprocessing signature the float one is kept as ``serving_preprocessed``. A SavedModel is
saved through Keras (``save_format="tf"``), so ``tf_keras.models.load_model`` reloads it.
"""
from __future__ import annotations

import os
from typing import Dict, Sequence

import tensorflow as tf

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tf_keras

from epkd_tf import precision


def raw_image_shape(data) -> tuple:
    """(H, W, C) of the images as the dataset stores them (what a client sends); a
    dimension is None where the dataset's images vary in size (e.g. imagenet2012)."""
    return tuple(None if d is None else int(d) for d in data.raw_image_shape)


def _outputs(logits: tf.Tensor) -> Dict[str, tf.Tensor]:
    return {"logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int32)}


def preprocessed_signature(model: tf_keras.Model):
    """float32 images as the model takes them (preprocessed) → named outputs ``logits``,
    ``probabilities`` and ``classes``."""
    spec = tf.TensorSpec([None] + list(model.input_shape[1:]), tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def serve(images):
        return _outputs(model(images, training=False))

    return serve


def serving_signature(model: tf_keras.Model, preprocess=None, raw_shape=None,
                      batchable: bool = False):
    """``serving_default``: without ``preprocess`` the float signature of
    :func:`preprocessed_signature`; with it, uint8 images ``[batch, *raw_shape]`` are mapped
    through ``preprocess(image, label) -> (float image, label)``: the whole batch at once
    if ``batchable`` (the recipe's :attr:`~epkd_tf.data.DatasetRecipe.batchable`), else one
    by one (a recipe's transform is written per example: crops and resizes read the
    image's own shape)."""
    if preprocess is None:
        return preprocessed_signature(model)
    if raw_shape is None:
        raise ValueError("A preprocessing signature needs raw_shape, the (H, W, C) of the "
                         "images clients send.")
    spec = tf.TensorSpec([None] + list(raw_shape), tf.uint8, name="images")
    model_input = tf.TensorSpec(list(model.input_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def serve(images):
        if batchable:
            x = preprocess(images, tf.zeros(tf.shape(images)[:1], tf.int64))[0]
        else:
            dummy_label = tf.constant(0, tf.int64)
            x = tf.map_fn(lambda image: preprocess(image, dummy_label)[0], images,
                          fn_output_signature=model_input)
        return _outputs(model(x, training=False))

    return serve


def export_saved_model(model: tf_keras.Model, path: str, preprocess=None,
                       raw_shape=None, batchable: bool = False) -> None:
    """Writes ``model`` as a SavedModel that TF Serving loads from ``path`` as it is.

    ``serving_default`` takes raw uint8 images when ``preprocess`` (the dataset recipe's
    evaluation transform) and ``raw_shape`` are given, float32 model inputs otherwise;
    with ``preprocess`` the float signature is kept as ``serving_preprocessed``.
    ``batchable``: ``preprocess`` may be applied to a whole batch at once. Saved
    through Keras (``save_format="tf"``), so ``tf_keras.models.load_model`` reloads it.
    """
    model = precision.float32_copy(model)    # float32 signatures whatever the run computed in
    signatures = {"serving_default": serving_signature(model, preprocess, raw_shape,
                                                        batchable)}
    if preprocess is not None:
        signatures["serving_preprocessed"] = preprocessed_signature(model)
    # save_traces=False: the layers are rebuilt from their configs on reload (every layer
    # a run can hold is a built-in tf_keras layer), not from traced call functions - half
    # the time of a save. TF Serving uses the signatures, which are traced either way.
    tf_keras.models.save_model(model, path, save_format="tf", include_optimizer=False,
                               signatures=signatures, save_traces=False)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def models_config(base_paths: Dict[str, str]) -> str:
    """TF Serving's ModelServerConfig (text proto) serving ``{name: base_path}``; each
    model serves its newest version (TF Serving's default version policy)."""
    configs = "".join(f"  config {{\n    name: {_quote(name)}\n    base_path: {_quote(path)}\n"
                      f"    model_platform: 'tensorflow'\n  }}\n"
                      for name, path in base_paths.items())
    return f"model_config_list {{\n{configs}}}\n"


def served_models(run) -> Sequence[str]:
    """Names under ``serving/`` that hold at least one version directory (teacher first)."""
    root = run.path("serving")
    if not os.path.isdir(root):
        return []
    names = [n for n in sorted(os.listdir(root))
             if os.path.isdir(os.path.join(root, n))
             and any(v.isdigit() for v in os.listdir(os.path.join(root, n)))]
    return sorted(names, key=lambda n: (n != "teacher", n))


def write_models_config(run) -> None:
    """``serving/models.config`` with absolute base paths (a server on this machine) and
    ``serving/models.docker.config`` with ``/models/<name>`` (``-v <run>/serving:/models``)."""
    names = served_models(run)
    run.write_text(os.path.join("serving", "models.config"),
                   models_config({n: run.path("serving", n) for n in names}))
    run.write_text(os.path.join("serving", "models.docker.config"),
                   models_config({n: f"/models/{n}" for n in names}))
