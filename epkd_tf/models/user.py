"""A user's trained model as the teacher (``--teacher_path``) or as ``export --model``.

:func:`load_user_model` reads a ``.keras`` file, a legacy ``.h5`` file or a Keras
SavedModel directory **in Keras safe mode**: no Python code stored in the file is ever run.
A ``Lambda`` layer carries such code (marshalled bytecode in ``.h5`` and SavedModels,
where ``safe_mode`` of ``load_model`` does not apply), so the file's stored layer
configuration is read first and a model with a ``Lambda`` layer is refused before Keras
deserialises anything; loading itself then runs in a safe-mode scope as well.
:func:`check_fits` checks that the model maps the dataset's images to logits of its
classes. Every problem is a :class:`ModelFileError` whose one-line message names the flag.
A Keras 3 file (TF 2.21's default ``model.save``) is converted to tf_keras from its stored
JSON by :mod:`epkd_tf.models.keras3`, which refuses Lambda layers and custom objects too.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Iterator, Optional

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)

KERAS, H5, SAVED_MODEL = "keras", "h5", "saved_model"


class ModelFileError(ValueError):
    """The model file is unusable; the message is the one line the user sees."""


def _one_line(err: Exception, limit: int = 300) -> str:
    return " ".join(str(err).split())[:limit] or type(err).__name__


def model_kind(path: str, flag: str) -> str:
    """``keras``, ``h5`` or ``saved_model``; ModelFileError for anything else."""
    if not os.path.exists(path):
        raise ModelFileError(f"--{flag}={path} does not exist.")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return SAVED_MODEL
    elif path.endswith(".keras"):
        return KERAS
    elif path.endswith((".h5", ".hdf5")):
        return H5
    raise ModelFileError(f"--{flag}={path} is neither a .keras file, an .h5 file nor a "
                         f"SavedModel directory.")


def model_stem(path: str) -> str:
    """A safe name for the model at ``path``: its file or directory name without the
    extension, sanitised (:func:`epkd_tf.records.safe_name`)."""
    from epkd_tf.records import safe_name
    stem = os.path.basename(os.path.normpath(path))
    for suffix in (".keras", ".h5", ".hdf5"):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
    return safe_name(stem, fallback="model")


def _stored_configs(path: str, kind: str) -> Iterator:
    """The layer configurations the file stores (JSON), read without Keras."""
    if kind == KERAS:
        with zipfile.ZipFile(path) as archive:
            yield json.loads(archive.read("config.json"))
    elif kind == H5:
        import h5py
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
            if config is None:
                raise ValueError("the file holds weights only, no model (save the model "
                                 "with model.save)")
            yield json.loads(config.decode() if isinstance(config, bytes) else config)
    else:
        from tf_keras.protobuf import saved_metadata_pb2
        metadata_path = os.path.join(path, "keras_metadata.pb")
        if not os.path.isfile(metadata_path):
            raise ValueError("it is not a Keras SavedModel (no keras_metadata.pb; save it "
                             "with model.save, not tf.saved_model.save)")
        metadata = saved_metadata_pb2.SavedMetadata()
        with open(metadata_path, "rb") as f:
            metadata.ParseFromString(f.read())
        for node in metadata.nodes:
            yield json.loads(node.metadata or "{}")


def _lambda_layer(config) -> Optional[str]:
    """Name of the first ``Lambda`` layer anywhere in a stored configuration, if any."""
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            inner = config.get("config")
            return str((inner if isinstance(inner, dict) else config).get("name", "?"))
        children = config.values()
    elif isinstance(config, list):
        children = config
    else:
        return None
    for child in children:
        found = _lambda_layer(child)
        if found is not None:
            return found
    return None


def load_user_model(path: str, flag: str):
    """The tf_keras model at ``path`` (.keras, .h5, Keras SavedModel), loaded in safe mode
    without compiling; one image input and one output. Raises ModelFileError."""
    import tf_keras
    from tf_keras.src.saving import serialization_lib   # safe mode of the legacy loaders
    import epkd_tf.models  # noqa: F401  (registers the zoo's custom layers, if any)
    from epkd_tf.models import keras3

    kind = model_kind(path, flag)
    keras3_file = keras3.is_keras3_file(path)
    try:
        for config in [] if keras3_file else _stored_configs(path, kind):
            name = _lambda_layer(config)
            if name is not None:
                raise ModelFileError(
                    f"--{flag}={path} has a Lambda layer {name!r}: its Python code would run "
                    f"on loading, and epkd_tf loads models in Keras safe mode; rebuild the "
                    f"model with built-in layers.")
    except ModelFileError:
        raise
    except Exception as err:  # a damaged archive, HDF5 or protobuf file
        label = {KERAS: ".keras file", H5: ".h5 file", SAVED_MODEL: "Keras SavedModel"}[kind]
        raise ModelFileError(f"--{flag}={path} is not a readable {label}: "
                             f"{_one_line(err)}") from err
    try:
        if keras3_file:     # checked against its allow-list before anything is built
            model = keras3.load_keras3(path, flag)
        elif kind == KERAS:
            model = tf_keras.models.load_model(path, compile=False, safe_mode=True)
        else:
            with serialization_lib.SafeModeScope(True):
                model = tf_keras.models.load_model(path, compile=False)
    except ModelFileError:
        raise
    except Exception as err:  # any loader failure is the user's file, reported in one line
        raise ModelFileError(f"--{flag}={path} cannot be loaded as a Keras model: "
                             f"{_one_line(err)}") from err
    if not isinstance(model, tf_keras.Model):
        raise ModelFileError(f"--{flag}={path} is not a Keras model (a plain TensorFlow "
                             f"SavedModel?); save it with model.save.")
    if len(model.inputs or ()) != 1 or len(model.outputs or ()) != 1:
        raise ModelFileError(f"--{flag}={path} must have one image input and one logits "
                             f"output.")
    return model


def _softmax_output(model) -> Optional[str]:
    """Name of the output layer if it ends in a softmax (probabilities, not logits)."""
    layer = model.outputs[0]._keras_history.layer
    config = layer.get_config()
    if type(layer).__name__ == "Softmax" or config.get("activation") == "softmax":
        return layer.name
    return None


def check_fits(model, spec, flag: str, dataset: str) -> None:
    """``model`` takes ``spec``'s images and outputs (batch, classes) logits; raises
    ModelFileError naming ``--flag`` and ``--dataset``."""
    output_shape = tuple(model.output_shape)
    if len(output_shape) != 2:
        raise ModelFileError(f"--{flag} outputs shape {output_shape}; epkd_tf needs logits "
                             f"of shape (batch, classes).")
    expected = tuple(spec.input_shape)
    if tuple(model.input_shape[1:]) != expected:
        raise ModelFileError(f"--{flag} input shape {tuple(model.input_shape[1:])} does not "
                             f"match --dataset={dataset} images {expected} (set --image_size "
                             f"if the model was trained on resized images).")
    if output_shape[-1] != spec.num_classes:
        raise ModelFileError(f"--{flag} predicts {output_shape[-1]} classes but "
                             f"--dataset={dataset} has {spec.num_classes}.")
    softmax = _softmax_output(model)
    if softmax is not None:
        raise ModelFileError(f"--{flag} outputs probabilities (softmax in layer "
                             f"{softmax!r}); epkd_tf needs logits: remove the final softmax.")
