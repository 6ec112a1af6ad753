"""Model files planted with code that Keras would run or import while loading them.

Each maker writes a model for tiny_digits (12x12x1 images, 4 classes) that is fine in
every other way, so that only the planted part can make loading it fail. ``marker`` is a
path that the planted code creates if it ever runs.
"""
import json
import os
import shutil
import zipfile

import h5py

import tf_keras


def plain_model():
    """A small valid tiny_digits teacher (logits)."""
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((12, 12, 1))
    x = tf_keras.layers.Flatten()(inputs)
    x = tf_keras.layers.Dense(8, activation="relu")(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(4)(x))


def write_file_layer(marker: str) -> dict:
    """A TF-op layer that calls ``tf.io.write_file(marker, "pwned")``: its arguments are
    constants, so Keras calls it as soon as it rebuilds the layer's node."""
    return {"class_name": "TFOpLambda", "module": "tf_keras.src.layers.core.tf_op_layer",
            "registered_name": "TFOpLambda",
            "config": {"name": "tf.io.write_file", "trainable": True, "dtype": "float32",
                       "function": "io.write_file"},
            "name": "tf.io.write_file",
            "inbound_nodes": [["_CONSTANT_VALUE", -1, marker, {"contents": "pwned"}]]}


def rewrite_keras_config(path: str, edit) -> None:
    """Applies ``edit(config)`` to the config.json of the .keras archive at ``path``."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def rewrite_h5_config(path: str, edit) -> None:
    """Applies ``edit(config)`` to the model_config of the .h5 file at ``path``."""
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config)


def tfop_write_file(directory, marker: str, stem: str = "tfop"):
    """``<stem>.keras`` and ``<stem>.h5`` whose configs hold :func:`write_file_layer`."""
    model = plain_model()
    paths = [os.path.join(directory, f"{stem}.keras"), os.path.join(directory, f"{stem}.h5")]
    model.save(paths[0])
    model.save(paths[1])

    def plant(config):
        config["config"]["layers"].append(write_file_layer(marker))

    rewrite_keras_config(paths[0], plant)
    rewrite_h5_config(paths[1], plant)
    return paths


HELPERS_MODULE = "epkd_planted_helpers"


def module_field(directory, marker: str, module: str = "this", stem: str = "module"):
    """``<stem>.keras`` whose top-level ``module`` field names ``module``; with the
    default name of :data:`HELPERS_MODULE`, a module of that name is written beside the
    file and creates ``marker`` when imported."""
    path = os.path.join(directory, f"{stem}.keras")
    plain_model().save(path)
    if module == HELPERS_MODULE:
        with open(os.path.join(directory, f"{module}.py"), "w") as f:
            f.write(f"open({marker!r}, 'w').close()\nFunctional = None\n")

    def plant(config):
        config["module"] = module
        config["registered_name"] = None

    rewrite_keras_config(path, plant)
    return path


def custom_layer_saved_model(directory, marker: str, stem: str = "custom_saved_model",
                             class_name: str = "Stamp"):
    """A Keras SavedModel with a custom layer whose call writes ``marker`` (with the
    traces Keras revives an unknown class from). ``class_name`` may be a built-in name
    (``Dense``) to disguise it: its config then does not fit that class."""
    import tensorflow as tf

    class Stamp(tf_keras.layers.Layer):
        def call(self, x):
            tf.io.write_file(marker, "pwned")
            return x

        def get_config(self):
            return {**super().get_config(), "stamp": 1}

    Stamp.__name__ = Stamp.__qualname__ = class_name
    inputs = tf_keras.Input((12, 12, 1))
    x = tf_keras.layers.Flatten()(inputs)
    x = Stamp(name="stamp")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(4)(x))
    path = os.path.join(directory, stem)
    model.save(path, save_format="tf")
    if os.path.exists(marker):          # tracing the call while saving ran it here
        os.remove(marker)
    return path


def resource_saved_model(directory, marker: str, stem: str = "resource_saved_model",
                         classes: int = 4):
    """A Keras SavedModel of :func:`plain_model` (``classes`` logits) that also tracks a
    TensorFlow resource whose initializer writes ``marker``: TensorFlow's SavedModel
    loader runs it as soon as it restores the file, before anything could check it.
    Returns the path and the model's weights."""
    import tensorflow as tf

    class Stamp(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[])

        def _initialize(self):
            tf.io.write_file(marker, "pwned")

    model = plain_model()
    if classes != 4:
        model = tf_keras.Model(model.inputs, tf_keras.layers.Dense(classes)(
            model.layers[-2].output))
    model.stamp = Stamp()
    path = os.path.join(directory, stem)
    model.save(path, save_format="tf")
    assert not os.path.exists(marker)
    return path, model.get_weights()


def copy(path: str, target: str) -> str:
    """``path`` (file or directory) copied to ``target``."""
    if os.path.isdir(path):
        shutil.copytree(path, target)
    else:
        shutil.copy(path, target)
    return target
