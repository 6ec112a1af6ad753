"""Every ``keras.applications`` classifier through epkd_tf (issue #22, section 2): a Keras 3
file converts to tf_keras with the same outputs, prunes structurally to half its MACs, and
goes back to Keras 3 and TFLite with the pruned outputs. Plus the pieces that make it
possible, each on a hand-made model: nested models inlined, tensor operators, hard_silu,
LayerScale and CustomScaleLayer; and an unknown class still refused naming the layer.

Tolerance: Keras 3 and tf_keras run the same float32 operations, but not always in the same
order (fused kernels, summation order), so deep networks differ by float32 rounding that
grows with the logits' magnitude (1e-5 absolute on DenseNet logits of ~10 on 0..255
inputs). Outputs are compared relative to the largest logit: max |a - b| <= 1e-5 x
max |b| (see docs/layer_rules.md). EfficientNetV2L with random weights is unstable in
float32 itself (its logits move by ~0.8 of their scale when its input is multiplied by
1 + 1e-7); for such a model the conversion is judged on the same model with its residual
branches damped, as in benchmarks/keras_applications.py.
"""
import epkd_tf  # noqa: F401  (before TensorFlow)

import numpy as np
import pytest

import keras          # Keras 3
import tf_keras
from epkd_tf.budget import multiply_accumulates
from epkd_tf.deploy import tflite as metrics
from epkd_tf.models import keras3_layers
from epkd_tf.models.keras3 import Keras3ConversionError, load_keras3, save_keras3

RELATIVE = 1e-5
TFLITE_RELATIVE = 1e-4     # TFLite's kernels (XNNPACK) sum in yet another order


def _benchmark():
    """benchmarks/keras_applications.py, whose damping and self-sensitivity the checks
    share (one definition of how an unstable model is judged)."""
    import importlib.util
    import sys
    from pathlib import Path
    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(folder))       # its own `from benchmarks_md import ...`
    spec = importlib.util.spec_from_file_location("keras_applications_benchmark",
                                                  folder / "keras_applications.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BENCH = _benchmark()
damp_residual_branches, self_sensitivity = _BENCH.damp_residual_branches, \
    _BENCH.self_sensitivity


def relative_error(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()
                 / max(float(np.abs(np.asarray(b)).max()), 1e-30))


def images(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def tflite_outputs(model, x):
    interpreter = metrics.make_interpreter(metrics.to_tflite(model))
    return metrics.tflite_predict(interpreter, x)


def converted(model, tmp_path, name="model"):
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    return load_keras3(path, None)


def check_application(model, tmp_path):
    """Converts, compares, prunes to half the MACs, exports to Keras 3 and TFLite."""
    x = images(model.input_shape[1:])
    teacher = converted(model, tmp_path)
    if relative_error(teacher(x).numpy(), model(x)) > RELATIVE:
        # Only acceptable where the Keras 3 model amplifies rounding by itself; the
        # conversion must then be exact on the same model, well conditioned.
        assert self_sensitivity(model, x) > RELATIVE
        assert damp_residual_branches(model) > 0
        assert self_sensitivity(model, x) <= RELATIVE
        damped = converted(model, tmp_path, "damped")
        assert relative_error(damped(x).numpy(), model(x)) <= RELATIVE
    pruned = epkd_tf.prune(teacher, 0.5, criterion="l1_filter", budget="macs")
    ratio = multiply_accumulates(pruned) / multiply_accumulates(teacher)
    assert abs(ratio - 0.5) <= 0.02, ratio
    assert pruned.count_params() < teacher.count_params()
    out = str(tmp_path / "pruned.keras")
    save_keras3(pruned, out)
    expected = pruned(x).numpy()
    assert relative_error(keras.models.load_model(out)(x), expected) <= RELATIVE
    assert relative_error(tflite_outputs(pruned, x), expected) <= TFLITE_RELATIVE


def small_convnext():
    """ConvNeXt with one block per stage and narrow stages: every layer class of
    ConvNeXtTiny (nested Sequential stem and downsamplers, grouped depthwise Conv2D,
    LayerNormalization, LayerScale, ``+`` operators) at a fraction of the cost."""
    from keras.src.applications.convnext import ConvNeXt
    return ConvNeXt(depths=[1, 1, 1, 1], projection_dims=[32, 32, 64, 64], weights=None,
                    input_shape=(32, 32, 3), classes=10, classifier_activation=None,
                    name="convnext_small_test")


FAST = {
    "MobileNetV3Small": lambda: keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None),
    "ConvNeXt-1111": small_convnext,
    "MobileNetV2-0.35": lambda: keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
        classifier_activation=None),
}


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(FAST))
def test_small_applications(name, tmp_path):
    check_application(FAST[name](), tmp_path)


# Every classifier of TF 2.21's keras.applications at its smallest allowed input.
SMALLEST = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
ALL = sorted(n for n in dir(keras.applications) if n[:1].isupper())


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ALL)
def test_every_application(name, tmp_path):
    size = SMALLEST.get(name, 32)
    check_application(getattr(keras.applications, name)(
        input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None),
        tmp_path)


@pytest.mark.unit
def test_there_are_40_classifiers():
    assert len(ALL) == 40


# -- the pieces -----------------------------------------------------------------------
@pytest.mark.integration
def test_nested_sequential_and_functional_are_inlined(tmp_path):
    """Nested models (a Sequential in a Functional in the model) become their layers;
    clashing names get the model's name in front; weights land in the right layers."""
    block_in = keras.Input((6,))
    block = keras.Model(block_in, keras.layers.Dense(5, name="dense")(
        keras.layers.Dense(6, activation="relu", name="hidden")(block_in)), name="block")
    stem = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="dense"),
                             keras.layers.LayerNormalization(name="norm")], name="stem")
    inputs = keras.Input((4,), name="x")
    frozen = keras.Sequential([keras.layers.Dense(5, name="frozen_dense")], name="frozen")
    frozen.build((None, 5))
    frozen.trainable = False
    x = block(stem(inputs))
    outputs = keras.layers.Dense(3, name="dense")(frozen(x) + x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:           # random weights everywhere
        for weight in layer.weights:
            weight.assign(np.random.default_rng(len(weight.path)).normal(
                size=weight.shape).astype("float32"))
    x = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    flat = converted(model, tmp_path)
    assert relative_error(flat(x).numpy(), model(x)) <= RELATIVE
    names = [layer.name for layer in flat.layers]
    assert not {"stem", "block", "frozen"} & set(names)
    assert {"dense", "stem_dense", "block_dense", "hidden", "norm"} <= set(names)
    assert not flat.get_layer("frozen_dense").trainable
    assert flat.get_layer("hidden").trainable
    # Flat, it prunes, and goes back to Keras 3 flat.
    pruned = epkd_tf.prune(flat, 0.5, criterion="l1_filter")
    out = str(tmp_path / "pruned.keras")
    save_keras3(pruned, out)
    assert relative_error(keras.models.load_model(out)(x), pruned(x).numpy()) <= RELATIVE


@pytest.mark.integration
def test_tensor_operators_convert(tmp_path):
    """``a + b``, ``x + 3``, ``3 + x``, ``x * c`` in a Keras 3 model are operators, not
    layers: they become Add / Rescaling layers computing exactly the same."""
    inputs = keras.Input((5,))
    a, b = keras.layers.Dense(5)(inputs), keras.layers.Dense(5)(inputs)
    outputs = ((a + b) + 3.0) * (1.0 / 6.0) + 2.5 * (1.5 + a) * b
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    flat = converted(model, tmp_path)
    np.testing.assert_array_equal(flat(x).numpy(), np.asarray(model(x)))
    assert {type(layer).__name__ for layer in flat.layers} >= {"Add", "Rescaling",
                                                              "Multiply"}


@pytest.mark.unit
def test_unsupported_operator_is_refused_naming_it(tmp_path):
    inputs = keras.Input((5,))
    path = str(tmp_path / "op.keras")
    keras.Model(inputs, keras.layers.Dense(5)(inputs) - 1.0).save(path)
    with pytest.raises(Keras3ConversionError, match=r"\(keras.src.ops.numpy.Subtract\): "
                                                    r"this operator is not supported"):
        load_keras3(path, None)


@pytest.mark.integration
def test_hard_silu_is_keras3s_to_the_bit(tmp_path):
    x = np.linspace(-8, 8, 4001, dtype="float32")
    np.testing.assert_array_equal(keras3_layers.hard_silu(x).numpy(),
                                  np.asarray(keras.activations.hard_silu(x)))
    # ... and through a model both ways, in an Activation and as a layer's activation.
    inputs = keras.Input((7,))
    hidden = keras.layers.Dense(7, activation="hard_silu")(inputs)
    model = keras.Model(inputs, keras.layers.Activation("hard_swish")(hidden))
    x = 4 * np.random.default_rng(0).normal(size=(16, 7)).astype("float32")
    flat = converted(model, tmp_path)
    np.testing.assert_array_equal(flat(x).numpy(), np.asarray(model(x)))
    out = str(tmp_path / "back.keras")
    save_keras3(flat, out)
    back = keras.models.load_model(out)
    assert back.layers[-1].get_config()["activation"] == "hard_silu"
    np.testing.assert_array_equal(np.asarray(back(x)), flat(x).numpy())


@pytest.mark.integration
def test_layer_scale_and_custom_scale_layer_are_exact(tmp_path):
    from keras.src.applications.convnext import LayerScale
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
    inputs = keras.Input((4, 4, 6))
    conv = keras.layers.Conv2D(6, 1, name="conv")(inputs)
    scaled = LayerScale(0.3, 6, name="scale")(conv)
    model = keras.Model(inputs, CustomScaleLayer(0.17, name="merge")([inputs, scaled]))
    model.get_layer("scale").gamma.assign(np.arange(1, 7, dtype="float32") / 7)
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 6)).astype("float32")
    flat = converted(model, tmp_path)
    np.testing.assert_array_equal(flat(x).numpy(), np.asarray(model(x)))
    assert type(flat.get_layer("scale")) is keras3_layers.LayerScale
    # Pruned: LayerScale's gamma is sliced per channel, CustomScaleLayer couples its inputs
    # like Add (the conv's channels are added to the input image's: all fixed here).
    graph = epkd_tf.analyze(flat)
    assert (graph.group_of_unit[graph.layer("conv").units] == -1).all()
    out = str(tmp_path / "back.keras")
    save_keras3(flat, out)
    back = keras.models.load_model(out)
    assert type(back.get_layer("scale")) is LayerScale
    np.testing.assert_array_equal(np.asarray(back(x)), flat(x).numpy())


@pytest.mark.unit
def test_layer_scale_is_pruned_per_channel():
    inputs = tf_keras.Input((4, 4, 3))
    x = tf_keras.layers.Conv2D(8, 1, name="conv")(inputs)
    x = keras3_layers.LayerScale(0.5, 8, name="scale")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(x))
    pruned = epkd_tf.prune(model, 0.5, criterion="l1_filter")
    kept = pruned.get_layer("conv").filters
    assert kept < 8
    assert pruned.get_layer("scale").projection_dim == kept
    assert pruned.get_layer("scale").get_weights()[0].shape == (kept,)


@pytest.mark.unit
def test_unknown_application_class_is_refused_naming_the_layer(tmp_path):
    """An application's class from another module, or a custom class of the same name,
    is refused in one line naming the layer; the module is never imported."""
    @keras.saving.register_keras_serializable(package="mine")
    class LayerScale(keras.layers.Layer):     # same name, not ConvNeXt's
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((4,))
    path = str(tmp_path / "custom.keras")
    keras.Model(inputs, LayerScale(name="impostor")(inputs)).save(path)
    with pytest.raises(Keras3ConversionError) as err:
        load_keras3(path, None)
    message = str(err.value)
    assert "layer 'impostor' (LayerScale)" in message and "custom object" in message
    assert "\n" not in message
    # tf_keras -> Keras 3: a class of that name that is not epkd_tf's is refused too.

    class Impostor(tf_keras.layers.Layer):
        pass

    Impostor.__name__ = "LayerScale"
    inputs = tf_keras.Input((4,))
    with pytest.raises(Keras3ConversionError, match="layer 'fake' \\(LayerScale\\).*not "
                                                    "epkd_tf's LayerScale"):
        save_keras3(tf_keras.Model(inputs, Impostor(name="fake")(inputs)),
                    str(tmp_path / "x.keras"))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["MobileNetV3Small", "ConvNeXt-1111"])
def test_a_run_on_a_converted_model_saves_exports_and_resumes(name, tmp_path):
    """hard_silu and LayerScale through a whole (tiny) run: checkpoints reloaded by the
    safe loader, SavedModel, TFLite and Keras 3 exports, and a finished run resumed."""
    teacher = converted(FAST[name](), tmp_path)
    rng = np.random.default_rng(0)
    train = (images((32, 32, 3), 64), rng.integers(0, 10, 64))
    test = (images((32, 32, 3), 32, seed=1), rng.integers(0, 10, 32))
    settings = dict(iterations=1, finetune_epochs=1, batch_size=32,
                    output_dir=str(tmp_path / "run"),
                    export_formats=("saved_model", "tflite", "keras3"))
    epkd_tf.compress(teacher, train, test, **settings)
    for export in ("keras3/final.keras", "tflite/final.tflite", "serving/final"):
        assert (tmp_path / "run" / export).exists(), export
    keras.models.load_model(str(tmp_path / "run/keras3/final.keras"))
    epkd_tf.compress(teacher, train, test, **settings)      # resumes the finished run
