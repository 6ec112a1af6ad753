"""Model files never run or import code while epkd_tf loads them (epkd_tf/models/safe_config.py).

Every planted file below makes plain ``tf_keras.models.load_model`` run or import code
(checked in the test that plants it); ``load_user_model`` must refuse it before Keras
deserialises anything: no marker file appears, no module is imported.
"""
import json
import os
import shutil
import sys
import zipfile

import numpy as np
import pytest

import tf_keras
from planted_models import (HELPERS_MODULE, custom_layer_saved_model, module_field,
                            plain_model, resource_saved_model, rewrite_h5_config,
                            rewrite_keras_config, tfop_write_file)
from epkd_tf.graph.rules import RULES
from epkd_tf.models import build_model
from epkd_tf.models.registry import model_names
from epkd_tf.models.safe_config import LAYERS, UnsafeConfigError, check_config, check_model
from epkd_tf.models.user import ModelFileError, load_user_model


@pytest.mark.unit
def test_every_class_the_graph_rules_know_is_loadable():
    assert set(RULES) <= LAYERS


@pytest.mark.integration
@pytest.mark.parametrize("name", model_names() + ["applications.MobileNetV3Small",
                                                  "applications.EfficientNetV2B0"])
def test_the_zoo_and_applications_pass_in_both_config_formats(name):
    from tf_keras.src.saving import serialization_lib
    application = name.startswith("applications.")
    shape = (96, 96, 3) if application else (32, 32, 3)
    try:
        model = build_model(name, shape, 10, width=1.0 if application else 0.25)
    except ValueError:          # LeNet-5 and AlexNet need their own input sizes
        model = build_model(name, (64, 64, 3), 10, width=0.25)
    check_config(json.loads(model.to_json()))                                    # .h5
    check_config(json.loads(json.dumps(serialization_lib.serialize_keras_object(model))))
    check_model(model)


@pytest.mark.unit
def test_tf_op_layers_of_pure_arithmetic_load(tmp_path):
    # What tf_keras.applications models record for `x * 2` (MobileNetV3, ConvNeXt).
    import tensorflow as tf
    inputs = tf_keras.Input((12, 12, 1))
    x = tf.math.multiply(tf_keras.layers.Flatten()(inputs), 2.0)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(4)(x))
    for path in (str(tmp_path / "mul.keras"), str(tmp_path / "mul.h5")):
        model.save(path)
        loaded = load_user_model(path, "teacher_path")
        x = np.ones((2, 12, 12, 1), np.float32)
        np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


@pytest.mark.unit
def test_a_tf_op_layer_writing_a_file_is_refused_before_it_runs(tmp_path):
    marker = str(tmp_path / "written")
    keras_file, h5_file = tfop_write_file(str(tmp_path), marker)
    for path in (keras_file, h5_file):
        with pytest.raises(ModelFileError, match=r"TF-op layer 'tf.io.write_file' calling "
                                                 r"tf.io.write_file"):
            load_user_model(path, "teacher_path")
        assert not os.path.exists(marker), path
    # Plain Keras would have written it (and then failed).
    with pytest.raises(Exception):
        tf_keras.models.load_model(h5_file, compile=False)
    assert os.path.exists(marker)


@pytest.mark.unit
def test_a_module_field_is_never_imported(tmp_path, monkeypatch, capsys):
    marker = str(tmp_path / "imported")
    zen = module_field(str(tmp_path), marker, "this", "zen")
    helpers = module_field(str(tmp_path), marker, HELPERS_MODULE, "helpers")
    monkeypatch.syspath_prepend(str(tmp_path))      # as `python -m` run beside the file
    for path, module in ((zen, "this"), (helpers, HELPERS_MODULE)):
        with pytest.raises(ModelFileError, match=rf"an object of module '{module}'.*would "
                                                 rf"import"):
            load_user_model(path, "model")
        assert module not in sys.modules
    assert not os.path.exists(marker)
    assert "Beautiful is better than ugly" not in capsys.readouterr().out
    # Plain Keras imports the module beside the file.
    with pytest.raises(Exception):
        tf_keras.models.load_model(helpers, compile=False)
    assert os.path.exists(marker)
    sys.modules.pop(HELPERS_MODULE, None)


@pytest.mark.unit
def test_a_custom_layer_saved_model_is_refused_even_disguised_as_dense(tmp_path):
    marker = str(tmp_path / "called")
    custom = custom_layer_saved_model(str(tmp_path), marker)
    disguised = custom_layer_saved_model(str(tmp_path), marker, stem="disguised",
                                         class_name="Dense")
    with pytest.raises(ModelFileError, match="unknown class 'Stamp'"):
        load_user_model(custom, "teacher_path")
    # Its config claims a built-in class, so it passes the stored-config check; rebuilt from
    # that config as a real Dense, its extra setting does not fit (Keras would revive it
    # from the SavedModel's traced functions instead).
    with pytest.raises(ModelFileError, match=r"disguised cannot be loaded as a Keras model"):
        load_user_model(disguised, "teacher_path")
    assert not os.path.exists(marker)
    revived = tf_keras.models.load_model(custom, compile=False)      # plain Keras
    revived(np.zeros((1, 12, 12, 1), np.float32))
    assert os.path.exists(marker)


@pytest.mark.unit
def test_a_saved_model_s_resource_initializer_never_runs(tmp_path):
    """TensorFlow's SavedModel loader runs the initializer of every resource the file
    tracks while it loads it; epkd_tf rebuilds the model from its checked Keras config and
    reads only its variables' values, so the model loads and nothing in it runs."""
    import epkd_tf
    marker = str(tmp_path / "initialized")
    path, weights = resource_saved_model(str(tmp_path), marker)
    for load in (lambda: load_user_model(path, "teacher_path"),
                 lambda: epkd_tf.load_model(path)):
        loaded = load()
        assert not os.path.exists(marker)
        for a, b in zip(weights, loaded.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        assert [type(layer).__name__ for layer in loaded.layers] == \
            ["InputLayer", "Flatten", "Dense", "Dense"]
    tf_keras.models.load_model(path, compile=False)         # plain Keras runs it
    assert os.path.exists(marker)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["resnet18", "applications.MobileNetV3Small", "sequential"])
def test_zoo_and_applications_saved_models_are_rebuilt_with_their_weights(name, tmp_path):
    """A SavedModel is rebuilt from its Keras config and its variables' values only: the
    zoo's and tf_keras.applications' models come back computing what they computed."""
    if name == "sequential":
        model = tf_keras.Sequential([tf_keras.layers.Flatten(input_shape=(12, 12, 1)),
                                     tf_keras.layers.BatchNormalization(),
                                     tf_keras.layers.Dense(4)])
        model(np.ones((2, 12, 12, 1), np.float32), training=True)   # non-trivial BN stats
    else:
        application = name.startswith("applications.")
        model = build_model(name, (96, 96, 3) if application else (32, 32, 3), 10,
                            width=1.0 if application else 0.25)
    path = str(tmp_path / "saved")
    model.save(path, save_format="tf")
    loaded = load_user_model(path, "teacher_path")
    x = np.random.default_rng(0).uniform(0, 1, (2,) + model.input_shape[1:]).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    assert len(loaded.weights) == len(model.weights)


@pytest.mark.unit
def test_a_saved_model_whose_variables_do_not_fit_its_config_is_refused(tmp_path):
    saved, other = str(tmp_path / "saved"), str(tmp_path / "other")
    plain_model().save(saved, save_format="tf")
    inputs = tf_keras.Input((12, 12, 1))
    tf_keras.Model(inputs, tf_keras.layers.Dense(4)(tf_keras.layers.Flatten()(inputs))).save(
        other, save_format="tf")
    shutil.rmtree(os.path.join(saved, "variables"))
    shutil.copytree(os.path.join(other, "variables"), os.path.join(saved, "variables"))
    with pytest.raises(ModelFileError, match=r"--teacher_path=.*saved cannot be loaded as "
                                             r"a Keras model") as err:
        load_user_model(saved, "teacher_path")
    assert "\n" not in str(err.value)


def planted_config(edit):
    config = json.loads(plain_model().to_json())
    edit(config["config"]["layers"])
    return config


def set_in_dense(key, value):
    def edit(layers):
        layers[2]["config"][key] = value
    return edit


OTHER_PLANTS = {
    "registered custom object": (set_in_dense("kernel_initializer", {
        "module": "keras.initializers", "class_name": "GlorotUniform",
        "registered_name": "MyPackage>Evil", "config": {}}), "custom object 'MyPackage>Evil'"),
    "initializer from another module": (set_in_dense("kernel_initializer", {
        "module": "os", "class_name": "system", "config": {}}), "module 'os'"),
    "builtins function": (set_in_dense("activation", {
        "module": "builtins", "class_name": "function", "config": "eval",
        "registered_name": "eval"}), "module 'builtins'"),
    "keras function that is no activation": (set_in_dense("activation", {
        "module": "keras.utils", "class_name": "function", "config": "get_file",
        "registered_name": "get_file"}), "stored function 'get_file'"),
    "stored lambda": (set_in_dense("activation", {
        "class_name": "__lambda__", "config": {"value": "AAAA"}}), "stored Python lambda"),
    "unknown activation name": (set_in_dense("activation", "os.system"),
                                "unknown activation 'os.system'"),
    "lambda layer": (lambda layers: layers.append({"class_name": "Lambda", "config": {
        "name": "sneaky", "function": ["AAAA", None, None]}}), "Lambda layer 'sneaky'"),
    "slicing op calling a file op": (lambda layers: layers.append({
        "class_name": "SlicingOpLambda", "config": {"name": "s", "function": "io.read_file"}}),
        "calling tf.io.read_file"),
    "unknown layer class": (lambda layers: layers.append({
        "class_name": "TextVectorization", "config": {"name": "t",
                                                      "vocabulary": "/etc/passwd"}}),
        "unknown class 'TextVectorization'"),
    "class name that is no string": (lambda layers: layers.append({"class_name": ["x"]}),
                                     "malformed class name"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(OTHER_PLANTS))
def test_other_planted_entries_are_refused(case):
    edit, message = OTHER_PLANTS[case]
    with pytest.raises(UnsafeConfigError, match=message):
        check_config(planted_config(edit))


@pytest.mark.unit
def test_a_planted_layer_module_in_h5_and_keras_files_is_named(tmp_path):
    model = plain_model()
    for path, rewrite in ((str(tmp_path / "m.keras"), rewrite_keras_config),
                          (str(tmp_path / "m.h5"), rewrite_h5_config)):
        model.save(path)
        rewrite(path, lambda c: c["config"]["layers"][1].update(module="this"))
        with pytest.raises(ModelFileError, match=r"m\.(keras|h5) has an object of module "
                                                 r"'this' \(in 'flatten(_\d+)?'\)"):
            load_user_model(path, "teacher_path")
    assert "this" not in sys.modules


@pytest.mark.unit
def test_compile_settings_are_not_loaded_but_their_modules_are_checked(tmp_path):
    model = plain_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    for path in (str(tmp_path / "c.keras"), str(tmp_path / "c.h5"),
                 str(tmp_path / "c_saved_model")):
        model.save(path)
        load_user_model(path, "teacher_path")
    rewrite_keras_config(str(tmp_path / "c.keras"),
                         lambda c: c["compile_config"].update(loss={
                             "module": "this", "class_name": "X", "config": {}}))
    with pytest.raises(ModelFileError, match="module 'this'"):
        load_user_model(str(tmp_path / "c.keras"), "teacher_path")


@pytest.mark.unit
def test_a_keras3_file_goes_to_the_converter_and_a_fake_one_is_refused(tmp_path):
    """A .keras archive whose metadata claims Keras 3 is read by the Keras 3 converter
    (epkd_tf.models.keras3, its own allow-list); a tf_keras configuration under that
    claim is refused in one line naming the file."""
    path = str(tmp_path / "k3.keras")
    plain_model().save(path)
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members["metadata.json"] = json.dumps({"keras_version": "3.15.1"}).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ModelFileError, match="k3.keras") as err:
        load_user_model(path, "teacher_path")
    assert "\n" not in str(err.value)


@pytest.mark.unit
def test_only_regular_files_are_read(tmp_path):
    fifo = str(tmp_path / "pipe.keras")
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match="pipe.keras is not a regular file"):
        load_user_model(fifo, "teacher_path")         # would block forever when opened
    saved = str(tmp_path / "saved")
    plain_model().save(saved, save_format="tf")
    os.remove(os.path.join(saved, "keras_metadata.pb"))
    os.mkfifo(os.path.join(saved, "keras_metadata.pb"))
    with pytest.raises(ModelFileError, match="keras_metadata.pb, which is not a regular file"):
        load_user_model(saved, "teacher_path")


def epkd_layers_model():
    """Every object of epkd_tf.models.keras3_layers, as a converted keras.applications
    model holds them (and a run's checkpoints of it)."""
    from epkd_tf.models.keras3_layers import CustomScaleLayer, LayerScale, hard_silu
    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Conv2D(4, 3, activation=hard_silu, name="conv")(inputs)
    x = tf_keras.layers.Activation(hard_silu, name="act")(x)
    y = LayerScale(0.1, 4, name="scale")(x)
    x = CustomScaleLayer(0.5, name="merge")([x, y])
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(3)(x))


# .keras only: a run's checkpoints are .keras files; tf_keras cannot reload a
# registered function activation from an .h5 file even without safe mode.
@pytest.mark.unit
@pytest.mark.parametrize("suffix", [".keras"])
def test_epkd_tf_own_layers_and_hard_silu_reload(tmp_path, suffix):
    from epkd_tf.models import keras3_layers
    from epkd_tf.records import RunDir
    model = epkd_layers_model()
    path = str(tmp_path / f"checkpoints/teacher{suffix}")
    os.makedirs(os.path.dirname(path))
    model.save(path)
    loaded = RunDir(str(tmp_path)).stages.load_checkpoint(path)
    assert type(loaded.get_layer("scale")) is keras3_layers.LayerScale
    assert type(loaded.get_layer("merge")) is keras3_layers.CustomScaleLayer
    assert loaded.get_layer("conv").activation is keras3_layers.hard_silu
    assert loaded.get_layer("act").activation is keras3_layers.hard_silu
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def _edit_layer(name, edit):
    def change(layers):
        for layer in layers:
            if layer["config"]["name"] == name:
                edit(layer)
    return change


@pytest.mark.unit
@pytest.mark.parametrize("case", ["layer module", "layer registered name",
                                  "activation module", "activation name"])
def test_epkd_tf_own_objects_are_allowed_only_exactly(case):
    edits = {
        "layer module": _edit_layer("scale", lambda la: la.update(module="helpers")),
        "layer registered name": _edit_layer(
            "scale", lambda la: la.update(registered_name="MyPackage>LayerScale")),
        "activation module": _edit_layer(
            "act", lambda la: la["config"]["activation"].update(module="helpers")),
        "activation name": _edit_layer(
            "act", lambda la: la["config"]["activation"].update(config="hard_silu2")),
    }
    config = json.loads(epkd_layers_model().to_json())
    check_config(config)
    edits[case](config["config"]["layers"])
    with pytest.raises(UnsafeConfigError):
        check_config(config)


@pytest.mark.unit
def test_a_loaded_layer_or_activation_only_named_like_epkd_tfs_is_refused():
    class LayerScale(tf_keras.layers.Layer):       # not epkd_tf's
        def call(self, x):
            return x

    def hard_silu(x):                              # not epkd_tf's
        return x

    inputs = tf_keras.Input((4,))
    with pytest.raises(UnsafeConfigError, match="not rebuilt as a built-in"):
        check_model(tf_keras.Model(inputs, LayerScale()(inputs)))
    with pytest.raises(UnsafeConfigError, match="only epkd_tf's own hard_silu"):
        check_model(tf_keras.Model(inputs, tf_keras.layers.Dense(2, activation=hard_silu)(
            inputs)))
    check_model(epkd_layers_model())
