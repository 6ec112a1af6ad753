"""A user's trained model as the teacher (``--teacher_path``) or as ``export --model``.

:func:`load_user_model` reads a ``.keras`` file, a legacy ``.h5`` file or a Keras
SavedModel directory **without running or importing any code stored in it**: the file's
stored configuration is read first (without Keras) and checked against an allow-list of
built-in layers and Keras modules (:mod:`epkd_tf.models.safe_config`: a ``Lambda`` layer,
a TF-op layer calling e.g. ``tf.io.write_file``, a ``module`` field naming another module,
a custom class... are refused before Keras deserialises anything); loading then runs in
Keras safe mode, and every loaded layer must be exactly the built-in class it names. A
SavedModel is never loaded by TensorFlow (``tf.saved_model.load`` would run its
functions, and the initializers of any resource it tracks, before anything could be
checked): the model is rebuilt from the checked configuration of ``keras_metadata.pb``
and only the values of its variables are read from the SavedModel's checkpoint
(``variables/``), so nothing in ``saved_model.pb`` is ever read or run. A run
reloads its own checkpoints through the same function (``StageLedger.load_checkpoint``).
:func:`check_fits` checks that the model maps the dataset's images to logits of its
classes, :func:`check_finite` that its weights are numbers. Every problem is a
:class:`ModelFileError` whose one-line message names the flag (or the file). A Keras 3
file (TF 2.21's default ``model.save``) is converted to tf_keras from its stored JSON by
:mod:`epkd_tf.models.keras3`, whose table of convertible layers is its allow-list (Lambda
layers and custom objects are refused there too).
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Iterator, Optional

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from epkd_tf import compat
from epkd_tf.errors import ModelFileError  # noqa: F401
from epkd_tf.files import not_regular

KERAS, H5, SAVED_MODEL = "keras", "h5", "saved_model"


def _one_line(err: Exception, limit: int = 300) -> str:
    return " ".join(str(err).split())[:limit] or type(err).__name__


def _subject(path: str, flag: Optional[str]) -> str:
    """How messages name the file: ``--flag=path``, or the path alone (a checkpoint)."""
    return f"--{flag}={path}" if flag else path


def model_kind(path: str, flag: Optional[str]) -> str:
    """``keras``, ``h5`` or ``saved_model``; ModelFileError for anything else, and for
    anything that is not a regular file (a FIFO or a device would block or never end)."""
    subject = _subject(path, flag)
    if not os.path.exists(path):
        raise ModelFileError(f"{subject} does not exist.")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            _check_regular_files(path, subject)
            return SAVED_MODEL
    elif path.endswith((".keras", ".h5", ".hdf5")):
        if not_regular(path):
            raise ModelFileError(f"{subject} is not a regular file (a FIFO, socket or "
                                 f"device cannot be read as a model).")
        return KERAS if path.endswith(".keras") else H5
    raise ModelFileError(f"{subject} is neither a .keras file, an .h5 file nor a "
                         f"SavedModel directory.")


def _check_regular_files(path: str, subject: str) -> None:
    """Every entry of a SavedModel directory is a directory or a regular file."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = os.path.join(root, name)
            if os.path.islink(entry) and os.path.isdir(entry):
                raise ModelFileError(f"{subject} holds a link to a directory "
                                     f"({os.path.relpath(entry, path)}).")
            if name in files and not_regular(entry):
                raise ModelFileError(f"{subject} holds {os.path.relpath(entry, path)}, "
                                     f"which is not a regular file.")


def model_stem(path: str) -> str:
    """A safe name for the model at ``path``: its file or directory name without the
    extension, sanitised (:func:`epkd_tf.files.safe_name`)."""
    from epkd_tf.files import safe_name
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
        metadata_path = os.path.join(path, "keras_metadata.pb")
        if not os.path.isfile(metadata_path):
            raise ValueError("it is not a Keras SavedModel (no keras_metadata.pb; save it "
                             "with model.save, not tf.saved_model.save)")
        with open(metadata_path, "rb") as f:
            configs = compat.keras_metadata_configs(f.read())
        for config in configs:
            yield json.loads(config or "{}")


def _root_metadata(path: str) -> dict:
    """The JSON metadata keras_metadata.pb records of a SavedModel's root object (the
    model: its class name and configuration)."""
    with open(os.path.join(path, "keras_metadata.pb"), "rb") as f:
        nodes = compat.keras_metadata_nodes(f.read())
    for node_path, metadata in nodes:
        if node_path == "root":
            return json.loads(metadata or "{}")
    raise ValueError("keras_metadata.pb records no model")


def _rebuild_saved_model(path: str):
    """The Keras SavedModel at ``path`` rebuilt without TensorFlow's SavedModel loader.

    The model is built from the configuration ``keras_metadata.pb`` records (checked by
    load_user_model before this is called) in Keras safe mode, and the values of its
    variables are read from ``variables/`` (a TF2 checkpoint: tensors and an object graph,
    data only). ``saved_model.pb`` (the traced functions, resource initializers, assets)
    is never read, so nothing the file holds runs. Raises ValueError (the file is not a
    functional or Sequential Keras model, or its variables do not fit its configuration)
    or what Keras or the checkpoint reader raise."""
    import tensorflow as tf
    import tf_keras
    root = _root_metadata(path)
    class_name = root.get("class_name")
    if class_name not in ("Functional", "Sequential") or not isinstance(
            root.get("config"), dict):
        raise ValueError(f"its model is a {class_name!r}, not a functional or Sequential "
                         f"Keras model (a subclassed model cannot be rebuilt without its "
                         f"code)")
    with compat.safe_mode_scope():          # safe mode of the legacy deserialiser
        # model_from_json: the stored JSON encodes tuples and shapes as .h5 files do.
        model = tf_keras.models.model_from_json(
            json.dumps({"class_name": class_name, "config": root["config"]}))
    build_shape = root.get("build_input_shape")
    if not model.built and isinstance(build_shape, list):    # a Sequential without Input
        model.build(tuple(build_shape))
    status = tf.train.Checkpoint(root=model).read(
        os.path.join(path, "variables", "variables"))
    status.expect_partial()     # the optimizer's slots, the file's own objects: not read
    try:
        status.assert_existing_objects_matched()
    except AssertionError as err:
        raise ValueError(f"its variables do not fit its configuration "
                         f"({_one_line(err, 150)})") from None
    return model


def load_user_model(path: str, flag: Optional[str]):
    """The tf_keras model at ``path`` (.keras, .h5, Keras SavedModel), loaded uncompiled
    without running code stored in the file (see the module docstring); one input and one
    output. ``flag`` names the file in messages (``--flag=path``; None: the path alone).
    Raises ModelFileError."""
    import tf_keras
    import epkd_tf.models  # noqa: F401  (registers the zoo's custom layers, if any)
    from epkd_tf.models import keras3
    from epkd_tf.models.safe_config import UnsafeConfigError, check_config, check_model

    subject = _subject(path, flag)
    kind = model_kind(path, flag)
    keras3_file = keras3.is_keras3_file(path)
    try:
        # A Keras 3 file is checked by its converter's own table (epkd_tf.models.keras3).
        for config in [] if keras3_file else _stored_configs(path, kind):
            check_config(config)
    except UnsafeConfigError as err:
        raise ModelFileError(f"{subject} has {err}.") from None
    except Exception as err:  # a damaged archive, HDF5 or protobuf file
        label = {KERAS: ".keras file", H5: ".h5 file", SAVED_MODEL: "Keras SavedModel"}[kind]
        raise ModelFileError(f"{subject} is not a readable {label}: "
                             f"{_one_line(err)}") from err
    try:
        if keras3_file:     # checked against its allow-list before anything is built
            model = keras3.load_keras3(path, flag)
        elif kind == KERAS:
            model = tf_keras.models.load_model(path, compile=False, safe_mode=True)
        elif kind == H5:
            with compat.safe_mode_scope():    # safe mode of the legacy loaders
                model = tf_keras.models.load_model(path, compile=False)
        else:
            model = _rebuild_saved_model(path)
    except ModelFileError:
        raise
    except Exception as err:  # any loader failure is the user's file, reported in one line
        raise ModelFileError(f"{subject} cannot be loaded as a Keras model: "
                             f"{_one_line(err)}") from err
    if not isinstance(model, tf_keras.Model):
        raise ModelFileError(f"{subject} is not a Keras model (a plain TensorFlow "
                             f"SavedModel?); save it with model.save.")
    try:
        check_model(model)
    except UnsafeConfigError as err:
        raise ModelFileError(f"{subject} has {err}.") from None
    if len(model.inputs or ()) != 1 or len(model.outputs or ()) != 1:
        raise ModelFileError(f"{subject} must have one image input and one logits "
                             f"output.")
    return model


def check_finite(model, flag: str) -> None:
    """Every weight of ``model`` is a finite number; ModelFileError naming the first
    layer with NaN or Inf (a diverged model would be distilled from, and exported, as
    if it were trained)."""
    import numpy as np
    for layer in model.layers:
        for weight in layer.weights:
            if not np.all(np.isfinite(weight.numpy())):
                raise ModelFileError(f"--{flag} has non-finite weights (NaN or Inf) in "
                                     f"layer {layer.name!r} ({weight.name}); it cannot be "
                                     f"used.")


# Output activations that squash scores into a range (probabilities, bounded values):
# distillation divides logits by a temperature and applies its own softmax, so a model
# ending in one of these would be distilled from values that are not logits.
SQUASHING = {"softmax": "probabilities", "sigmoid": "probabilities",
             "hard_sigmoid": "probabilities", "tanh": "values in (-1, 1)"}


def _squashing_output(model) -> Optional[tuple]:
    """(name of the output layer, its activation) if the model ends in one of
    :data:`SQUASHING` (a Dense/Conv ``activation=`` or an Activation/Softmax layer);
    None for logits."""
    layer, _ = compat.tensor_origin(model.outputs[0])
    config = layer.get_config()
    if type(layer).__name__ == "Softmax":
        return layer.name, "softmax"
    activation = config.get("activation")
    if isinstance(activation, str) and activation in SQUASHING:
        return layer.name, activation
    return None


def check_fits(model, spec, flag: str, dataset: str) -> None:
    """``model`` takes ``spec``'s images and outputs (batch, classes) logits: not
    probabilities or squashed values (a last layer with a softmax, sigmoid, hard_sigmoid
    or tanh activation is refused, naming it).

    Args:
        model: the loaded model.
        spec: the data's :class:`~epkd_tf.data.DatasetSpec`.
        flag: the flag (or API argument) that named the model.
        dataset: how the message names the dataset.

    Raises:
        ModelFileError: naming ``--flag`` and ``--dataset``.
    """
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
    squashed = _squashing_output(model)
    if squashed is not None:
        layer, activation = squashed
        raise ModelFileError(f"--{flag} outputs {SQUASHING[activation]} ({activation} in "
                             f"layer {layer!r}); epkd_tf needs logits (distillation applies "
                             f"its own softmax): remove the final {activation}.")
