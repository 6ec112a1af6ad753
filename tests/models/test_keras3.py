"""Keras 3 <-> tf_keras conversion (epkd_tf/models/keras3.py): every supported layer type
both ways, the zoo, refused files whose code must never run, and a whole EPKD run from a
Keras 3 teacher to a Keras 3 student on real MNIST."""
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keras       # Keras 3, whatever TF_USE_LEGACY_KERAS says (it only decides tf.keras)
import tf_keras
from epkd_tf.models import build_model, model_names
from epkd_tf.models.keras3 import (ACTIVATIONS, LAYERS, Keras3ConversionError,
                                   check_keras3_export, is_keras3_file, load_keras3,
                                   save_keras3, to_keras3)
from epkd_tf.models.user import ModelFileError, load_user_model

ATOL = 1e-5
MNIST_NPZ = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist.npz"


def flat_cat(k, tensors):
    """Concatenates tensors of any shapes (flattened), so one model checks many layers."""
    return k.layers.Concatenate()([k.layers.Flatten()(t) for t in tensors])


def _dense(k, x):
    return k.layers.Dense(5, activation="tanh", kernel_initializer=k.initializers.HeNormal(1),
                          kernel_regularizer=k.regularizers.L2(1e-3),
                          bias_constraint=k.constraints.MaxNorm(2.0),
                          activity_regularizer=k.regularizers.L1(1e-4))(x)


def _batchnorm(k, x):
    x = k.layers.BatchNormalization(momentum=0.9, epsilon=1e-2)(x)
    frozen = k.layers.BatchNormalization(center=False)
    frozen.trainable = False
    return k.layers.BatchNormalization(axis=-1, scale=False)(frozen(x))


def _activations(k, x):
    branches = [k.layers.Activation(name)(x) for name in sorted(ACTIVATIONS)]
    branches += [k.layers.ReLU(max_value=6.0, negative_slope=0.1, threshold=0.2)(x),
                 k.layers.LeakyReLU(0.2)(x), k.layers.ELU(0.7)(x), k.layers.Softmax()(x)]
    return k.layers.Concatenate()(branches)


def _dropouts(k, x):
    for layer in (k.layers.Dropout(0.3, seed=1), k.layers.SpatialDropout2D(0.2),
                  k.layers.GaussianNoise(0.1), k.layers.GaussianDropout(0.1),
                  k.layers.AlphaDropout(0.1), k.layers.ActivityRegularization(l1=0.01)):
        x = layer(x)
    return x


def _pool1d(k, x):
    L = k.layers
    return flat_cat(k, [L.MaxPooling1D(2)(x), L.AveragePooling1D(3, strides=1, padding="same")(x),
                        L.GlobalMaxPooling1D()(x), L.GlobalAveragePooling1D(keepdims=True)(x)])


def _pool2d(k, x):
    L = k.layers
    return flat_cat(k, [L.MaxPooling2D(2)(x), L.AveragePooling2D(3, strides=2, padding="same")(x),
                        L.GlobalMaxPooling2D(keepdims=True)(x), L.GlobalAveragePooling2D()(x)])


def _pool3d(k, x):
    L = k.layers
    return flat_cat(k, [L.MaxPooling3D(2)(x), L.AveragePooling3D(2, strides=1)(x),
                        L.GlobalMaxPooling3D()(x), L.GlobalAveragePooling3D()(x)])


def _preprocessing(k, x):
    L = k.layers
    x = L.Rescaling(1 / 255.0, offset=-0.5)(x)
    x = L.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.0, 2.0, 0.5])(x)
    adapted = L.Normalization()
    adapted.adapt(np.random.default_rng(0).normal(size=(16, 5, 5, 3)).astype("float32"))
    x = adapted(x)
    return L.Normalization(mean=[0.5, 0.5, 0.5], variance=[4.0, 4.0, 4.0], invert=True)(x)


def _merges(k, x):
    L = k.layers
    a, b = L.Dense(4)(x), L.Dense(4)(x)
    return L.Concatenate(axis=-1)([L.Add()([a, b]), L.Subtract()([a, b]),
                                   L.Multiply()([a, b]), L.Average()([a, b, a]),
                                   L.Maximum()([a, b]), L.Minimum()([a, b])])


def _application_layers(k, x):
    """ConvNeXt's LayerScale and InceptionResNetV2's CustomScaleLayer: Keras 3's own
    classes, and epkd_tf's tf_keras equivalents."""
    if k is keras:
        from keras.src.applications.convnext import LayerScale
        from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
    else:
        from epkd_tf.models.keras3_layers import CustomScaleLayer, LayerScale
    scaled = LayerScale(0.1, 3)(k.layers.Conv2D(3, 1)(x))
    return CustomScaleLayer(0.17)([x, scaled])


def _shared(k, x):
    dense = k.layers.Dense(6, activation="relu")
    return dense(dense(x))           # one layer, two calls (two nodes)


# id -> (input shape, builder(keras module, input) -> output); each builder runs unchanged
# with tf_keras and with Keras 3, so the two models are the same by construction.
CASES = {
    "dense": ((6,), _dense),
    "conv1d": ((10, 3), lambda k, x: k.layers.Conv1D(4, 3, strides=2, padding="same",
                                                      activation="relu")(x)),
    "conv2d": ((9, 9, 4), lambda k, x: k.layers.Conv2D(6, 3, dilation_rate=2)(x)),
    "conv3d": ((5, 5, 5, 2), lambda k, x: k.layers.Conv3D(3, 2, strides=2, padding="same")(x)),
    "depthwise2d": ((8, 8, 3), lambda k, x: k.layers.DepthwiseConv2D(
        3, depth_multiplier=2, padding="same",
        depthwise_regularizer=k.regularizers.L2(1e-4))(x)),
    "separable1d": ((10, 3), lambda k, x: k.layers.SeparableConv1D(4, 3, depth_multiplier=2)(x)),
    "separable2d": ((8, 8, 3), lambda k, x: k.layers.SeparableConv2D(
        5, 3, padding="same", activation="relu6")(x)),
    "batchnorm": ((6, 6, 3), _batchnorm),
    "layernorm": ((5, 4), lambda k, x: k.layers.LayerNormalization(epsilon=1e-3)(x)),
    "unitnorm": ((5,), lambda k, x: k.layers.UnitNormalization()(x)),
    "activations": ((7,), _activations),
    "prelu": ((4, 4, 3), lambda k, x: k.layers.PReLU(shared_axes=[1, 2])(x)),
    "dropouts": ((6, 6, 4), _dropouts),
    "spatial_dropout1d": ((5, 3), lambda k, x: k.layers.SpatialDropout1D(0.2)(x)),
    "spatial_dropout3d": ((4, 4, 4, 2), lambda k, x: k.layers.SpatialDropout3D(0.2)(x)),
    "pooling1d": ((8, 3), _pool1d),
    "pooling2d": ((8, 8, 3), _pool2d),
    "pooling3d": ((4, 4, 4, 2), _pool3d),
    "resize1d": ((6, 3), lambda k, x: k.layers.UpSampling1D(2)(
        k.layers.Cropping1D((1, 2))(k.layers.ZeroPadding1D(2)(x)))),
    "resize2d": ((6, 6, 3), lambda k, x: flat_cat(k, [
        k.layers.UpSampling2D(2)(k.layers.Cropping2D(((1, 1), (0, 2)))(
            k.layers.ZeroPadding2D(((1, 0), (2, 1)))(x))),
        k.layers.UpSampling2D(2, interpolation="bilinear")(x)])),
    "resize3d": ((4, 4, 4, 2), lambda k, x: k.layers.UpSampling3D(2)(
        k.layers.Cropping3D(1)(k.layers.ZeroPadding3D(1)(x)))),
    "reshape_flatten": ((4, 4, 3), lambda k, x: k.layers.Flatten()(
        k.layers.Reshape((12, 4))(x))),
    "preprocessing": ((5, 5, 3), _preprocessing),
    "merges": ((6,), _merges),
    "application_layers": ((4, 4, 3), _application_layers),
    "shared_layer": ((6,), _shared),
}


def functional(k, case):
    shape, builder = CASES[case]
    inputs = k.Input(shape, name="x")
    return k.Model(inputs, builder(k, inputs), name=case)


def randomize(model, seed=0, kernels=True):
    """Random weights everywhere (positive variances, count > 0), so a weight copied to the
    wrong place shows in the outputs. ``kernels=False`` keeps the kernels' initial values
    (deep models: random kernels would blow the outputs up beyond float32's precision)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape = tuple(weight.shape)
            if "variance" in weight.name or "count" in weight.name or "gamma" in weight.name:
                values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
            elif not kernels and "kernel" in weight.name:
                values.append(weight.numpy())
            else:
                values.append((0.4 * rng.normal(size=shape)).astype("float32"))
        layer.set_weights(values)
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()     # Normalization: apply the new mean and variance
    return model


def inputs_for(model, seed=1):
    return np.random.default_rng(seed).normal(size=(3, *model.input_shape[1:])).astype(
        "float32")


def no_legacy_env():
    """The environment of a plain TF 2.21 process: tf.keras is Keras 3 there."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


# -- Keras 3 -> tf_keras ------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(CASES))
def test_keras3_file_converts_to_an_equal_tf_keras_model(case, tmp_path):
    source = randomize(functional(keras, case))
    path = str(tmp_path / f"{case}.keras")
    source.save(path)
    assert is_keras3_file(path)
    model = load_keras3(path, "teacher_path")
    assert isinstance(model, tf_keras.Model)
    assert sorted(type(l).__name__ for l in model.layers) == sorted(
        type(l).__name__ for l in source.layers)
    x = inputs_for(model)
    np.testing.assert_allclose(model(x).numpy(), np.asarray(source(x)), rtol=0, atol=ATOL)


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::UserWarning")   # Keras on .h5 files, rms_scaling
def test_keras3_sequential_and_load_user_model(tmp_path, caplog):
    source = randomize(keras.Sequential([keras.Input((12, 12, 1)),
                                         keras.layers.Conv2D(4, 3, activation="relu"),
                                         keras.layers.MaxPooling2D(2),
                                         keras.layers.Flatten(), keras.layers.Dense(4)]))
    path = str(tmp_path / "seq.keras")
    source.save(path)
    with caplog.at_level("INFO", logger="epkd_tf"):
        model = load_user_model(path, "teacher_path")       # what --teacher_path does
    assert "a Keras 3 model, converted to tf_keras" in caplog.text
    assert model.input_shape == (None, 12, 12, 1) and model.output_shape == (None, 4)
    x = inputs_for(model)
    np.testing.assert_allclose(model(x).numpy(), np.asarray(source(x)), rtol=0, atol=ATOL)
    # A tf_keras file is not taken for a Keras 3 one.
    model.save(str(tmp_path / "tf.keras"))
    model.save(str(tmp_path / "tf.h5"))
    assert not any(is_keras3_file(str(tmp_path / n)) for n in ("tf.keras", "tf.h5"))


# -- tf_keras -> Keras 3, loaded by a plain TF 2.21 process ------------------------------
ZOO_INPUT = (32, 32, 3)
PLAIN_PROCESS = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    assert "TF_USE_LEGACY_KERAS" not in os.environ
    import tensorflow as tf
    import keras
    assert keras.__version__.startswith("3") and tf.keras.Model is keras.Model
    directory = sys.argv[1]
    result = {}
    for name in json.load(open(os.path.join(directory, "names.json"))):
        model = keras.models.load_model(os.path.join(directory, name + ".keras"))
        data = np.load(os.path.join(directory, name + ".npz"))
        outputs = np.asarray(model(data["x"], training=False))
        result[name] = {"diff": float(np.abs(outputs - data["y"]).max()),
                        "same_classes": bool((outputs.argmax(-1) == data["y"].argmax(-1)).all()),
                        "class": type(model).__name__}
    json.dump(result, open(os.path.join(directory, "result.json"), "w"))
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every case and zoo model written by save_keras3, then loaded and run in ONE plain
    TF 2.21 subprocess (no TF_USE_LEGACY_KERAS): {name: result}, the tf_keras models, and
    the layer classes the cases use."""
    directory = tmp_path_factory.mktemp("keras3_out")
    models, classes = {}, set()
    for case in CASES:
        models[case] = randomize(functional(tf_keras, case))
        classes |= {type(l).__name__ for l in models[case].layers}
    for name in model_names():
        tf_keras.utils.set_random_seed(0)
        models[f"zoo_{name}"] = randomize(build_model(name, ZOO_INPUT, 10, width=0.125),
                                          kernels=False)
    for name, model in models.items():
        save_keras3(model, str(directory / f"{name}.keras"))
        x = inputs_for(model)
        np.savez(directory / f"{name}.npz", x=x, y=model(x).numpy())
    (directory / "names.json").write_text(json.dumps(sorted(models)))
    (directory / "plain.py").write_text(PLAIN_PROCESS)
    done = subprocess.run([sys.executable, str(directory / "plain.py"), str(directory)],
                          env=no_legacy_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((directory / "result.json").read_text()), models, classes, directory


@pytest.mark.e2e
def test_every_supported_layer_type_is_tested(exported):
    assert exported[2] == set(LAYERS)


@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(CASES))
def test_tf_keras_layers_load_equal_in_plain_keras3(exported, case):
    result = exported[0][case]
    assert result["diff"] <= ATOL, result
    # ... and the file converts back to the same tf_keras model.
    back = load_keras3(str(exported[3] / f"{case}.keras"), None)
    x = inputs_for(back)
    np.testing.assert_allclose(back(x).numpy(), exported[1][case](x).numpy(), rtol=0,
                               atol=ATOL)


@pytest.mark.e2e
@pytest.mark.parametrize("name", model_names())
def test_zoo_round_trips(exported, name):
    result = exported[0][f"zoo_{name}"]
    assert result["diff"] <= ATOL and result["same_classes"] and result["class"] == "Functional"
    original = exported[1][f"zoo_{name}"]
    back = load_keras3(str(exported[3] / f"zoo_{name}.keras"), "model")
    assert sorted(l.name for l in back.layers) == sorted(l.name for l in original.layers)
    for layer in original.layers:
        for a, b in zip(back.get_layer(layer.name).get_weights(), layer.get_weights(),
                        strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.unit
def test_unsupported_tf_keras_layers_are_named():
    inputs = tf_keras.Input((5, 3))
    model = tf_keras.Model(inputs, tf_keras.layers.LSTM(4, name="memory")(inputs))
    with pytest.raises(Keras3ConversionError) as err:
        check_keras3_export(model)
    message = str(err.value)
    assert "\n" not in message and "layer 'memory' (LSTM)" in message
    assert "supported layers: Activation, ActivityRegularization, Add," in message
    with pytest.raises(Keras3ConversionError, match="'memory'"):
        to_keras3(model)


@pytest.mark.integration
def test_slashed_names_and_tensorflow_initializers_go_to_keras3():
    # tf_keras.applications name layers "conv1/conv" (Keras 3 refuses "/") and some use
    # TensorFlow's own initializers (EfficientNetV2's tf.constant_initializer).
    import tensorflow as tf
    inputs = tf_keras.Input((6,))
    x = tf_keras.layers.Dense(4, name="block/dense",
                              bias_initializer=tf.constant_initializer(0.1))(inputs)
    model = randomize(tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="block_dense")(x)))
    converted = to_keras3(model)
    assert [l.name for l in converted.layers[1:]] == ["block_dense_", "block_dense"]
    x = inputs_for(model)
    np.testing.assert_allclose(np.asarray(converted(x)), model(x).numpy(), rtol=0, atol=ATOL)


# -- refusals -----------------------------------------------------------------------------
def small_keras3_file(path):
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden)).save(path)
    return path


def rewrite(path, out, change):
    """Copies the .keras archive at ``path`` to ``out`` with ``change(config)`` applied to
    its config.json: a file made by hand, as an attacker would."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "config.json":
                config = json.loads(data)
                change(config)
                data = json.dumps(config).encode()
            target.writestr(item, data)
    return out


def layer_named(config, name):
    return next(l for l in config["config"]["layers"] if l["name"] == name)


def refused(path, *fragments):
    """The one-line error of loading ``path`` as --teacher_path, containing ``fragments``."""
    with pytest.raises(ModelFileError) as err:
        load_user_model(str(path), "teacher_path")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"--teacher_path={path} ")
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.unit
def test_lambda_code_never_runs(tmp_path):
    marker = str(tmp_path / "code_ran")
    inputs = keras.Input((6,))
    x = keras.layers.Lambda(lambda t, m=marker: (open(m, "w").close(), t)[1],
                            name="sneaky")(inputs)
    path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, keras.layers.Dense(2)(x)).save(path)
    if os.path.exists(marker):
        os.remove(marker)                  # building the model ran it here
    refused(path, "layer 'sneaky' (Lambda)", "safe mode")
    assert not os.path.exists(marker)


EVIL_MODULE = textwrap.dedent("""
    open({marker!r}, "w").close()          # runs when the module is imported
    import keras

    @keras.saving.register_keras_serializable(package="evil")
    class Sneaky(keras.layers.Layer):
        def call(self, x):
            open({marker!r}, "w").close()  # runs when the layer is called
            return x
""")


@pytest.mark.unit
def test_custom_objects_and_foreign_modules_are_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    module = "epkd_test_evil_keras3"
    (tmp_path / f"{module}.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))           # importable: it must still not be
    evil = __import__(module)
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2)(evil.Sneaky(name="sneaky")(inputs))
    custom = str(tmp_path / "custom.keras")
    keras.Model(inputs, outputs).save(custom)
    del sys.modules[module]
    marker.unlink()
    plain = small_keras3_file(str(tmp_path / "plain.keras"))

    def module_of(name, value):
        return lambda config: layer_named(config, name).update(module=value)

    def initializer(config):
        layer_named(config, "hidden")["config"]["kernel_initializer"] = {
            "module": module, "class_name": "Sneaky", "config": {},
            "registered_name": "evil>Sneaky"}

    def tf_op(config):
        layer_named(config, "hidden").update(class_name="TFOpLambda", config={
            "name": "hidden", "function": "os.system", "trainable": True})

    def model_class(config):
        config.update(module=module, class_name="Sneaky", registered_name="evil>Sneaky")

    this_imported = "this" in sys.modules
    cases = [
        (custom, ["layer 'sneaky' (Sneaky)", "not supported"]),
        (rewrite(plain, tmp_path / "module.keras", module_of("hidden", module)),
         ["layer 'hidden' (Dense)", f"module '{module}'", "custom object"]),
        (rewrite(plain, tmp_path / "this.keras", module_of("logits", "this")),
         ["layer 'logits' (Dense)", "module 'this'"]),
        (rewrite(plain, tmp_path / "init.keras", initializer),
         ["layer 'hidden' (Dense)", "kernel_initializer", "not a built-in initializer"]),
        (rewrite(plain, tmp_path / "tf_op.keras", tf_op),
         ["layer 'hidden' (TFOpLambda)", "TensorFlow-op layer"]),
        (rewrite(plain, tmp_path / "model.keras", model_class),
         ["'Sneaky' model", "only Functional and Sequential"]),
    ]
    for path, fragments in cases:
        refused(path, *fragments)
        assert not marker.exists(), path
        assert module not in sys.modules, path
    assert this_imported or "this" not in sys.modules


@pytest.mark.unit
@pytest.mark.filterwarnings("ignore::UserWarning")   # Keras on .h5 files, rms_scaling
def test_unconvertible_keras3_models_get_one_line(tmp_path):
    inputs = keras.Input((5, 3))
    lstm = str(tmp_path / "lstm.keras")
    keras.Model(inputs, keras.layers.LSTM(4, name="memory")(inputs)).save(lstm)
    refused(lstm, "is a Keras 3 model that epkd_tf cannot convert to tf_keras",
            "layer 'memory' (LSTM)",
            "supported layers: Activation, ActivityRegularization, Add,")

    # A nested model is inlined (tests/models/test_keras_applications.py), once: a block
    # called twice would share its weights.
    nested_inputs = keras.Input((6,))
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6)], name="block")
    nested = str(tmp_path / "nested.keras")
    keras.Model(nested_inputs, inner(inner(nested_inputs))).save(nested)
    refused(nested, "layer 'block' (Sequential)", "must be called once")

    for name, layer, fragment in [
            ("renorm", keras.layers.BatchNormalization(renorm=True, name="bn"),
             "layer 'bn' (BatchNormalization): renorm=True has no tf_keras equivalent"),
            ("rms", keras.layers.LayerNormalization(rms_scaling=True, name="ln"),
             "layer 'ln' (LayerNormalization): rms_scaling=True"),
            ("hard_sigmoid", keras.layers.Activation("hard_sigmoid", name="act"),
             "layer 'act' (Activation): activation 'hard_sigmoid' is not supported")]:
        inputs = keras.Input((6,))
        path = str(tmp_path / f"{name}.keras")
        keras.Model(inputs, layer(inputs)).save(path)
        refused(path, fragment)

    # A setting the table does not know may change what the layer computes: refused.
    plain = small_keras3_file(str(tmp_path / "plain.keras"))
    unknown = rewrite(plain, tmp_path / "unknown.keras",
                      lambda config: layer_named(config, "hidden")["config"].update(sparse=1))
    refused(unknown, "layer 'hidden' (Dense): setting 'sparse' is not supported")

    # A Keras 3 .h5 file is recognised as one, and the message says what to do.
    h5 = str(tmp_path / "legacy.h5")
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(h5)
    assert is_keras3_file(h5)
    refused(h5, "is a Keras 3 .h5 file", "model.save('model.keras')")


# -- the whole way: a Keras 3 teacher in, a Keras 3 student out ---------------------------
EVALUATE_PLAIN = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    model = keras.models.load_model(sys.argv[1])
    with np.load(sys.argv[2]) as data:
        x = data["x_test"][:500, :, :, None].astype("float32") / 255.0
        y = data["y_test"][:500]
    print(float(np.mean(model.predict(x, batch_size=128, verbose=0).argmax(-1) == y)))
""")


@pytest.mark.e2e
def test_keras3_teacher_to_keras3_student_on_mnist(mnist_dir, tmp_path):
    from cli_helpers import run_subprocess
    with np.load(MNIST_NPZ) as data:
        x = data["x_train"][:2000, :, :, None].astype("float32") / 255.0
        y = data["y_train"][:2000]
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((28, 28, 1)),
                                keras.layers.Conv2D(8, 5, activation="relu"),
                                keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                                keras.layers.Dense(32, activation="relu"),
                                keras.layers.Dense(10)], name="k3_lenet")
    teacher.compile(keras.optimizers.Adam(3e-3),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=1, batch_size=32, verbose=0)
    teacher_path = str(tmp_path / "k3_lenet.keras")
    teacher.save(teacher_path)
    out = tmp_path / "run"
    done = run_subprocess("epkd_tf.main", [
        f"--teacher_path={teacher_path}", f"--data_dir={mnist_dir}", f"--output_dir={out}",
        "--train_split=train[:2000]", "--test_split=test[:500]", "--iterations=1",
        "--pruners=l1_filter", "--finetune_epochs=1", "--eval_examples=500",
        "--batch_size=64", "--latency_runs=2", "--export_formats=keras3,tflite"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "a Keras 3 model, converted to tf_keras" in done.stderr
    deployment = pd.read_csv(out / "deployment.csv").set_index(["model", "format"])
    students = pd.read_csv(out / "students.csv")
    student_accuracy = students.test_accuracy.iloc[0]
    assert student_accuracy > 0.7
    row = deployment.loc[("final", "keras3")]       # the final student: iteration 1's
    assert row.path == "keras3/final.keras" and row.bytes > 0 and row.iteration == 1
    # The Keras 3 file's accuracy, measured in the run, is the tf_keras student's ...
    assert row.test_accuracy == pytest.approx(student_accuracy, abs=1e-9)
    # ... and a plain TF 2.21 process that knows nothing of epkd_tf agrees.
    script = tmp_path / "evaluate.py"
    script.write_text(EVALUATE_PLAIN)
    plain = subprocess.run([sys.executable, str(script), str(out / row.path), str(MNIST_NPZ)],
                           env=no_legacy_env(), capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert float(plain.stdout.split()[-1]) == pytest.approx(student_accuracy, abs=1e-9)
