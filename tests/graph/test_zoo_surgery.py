"""Surgery, counting and planning on every teacher of the zoo and two tf_keras.applications.

Each model is built small (width 0.125-0.5, 32x32 inputs) with random kernels, biases and
BatchNorm statistics, analysed once per module, and then:

* ``remove_groups`` of a random removal set computes what ``zero_groups`` computes;
* ``ParamCounter`` predicts the nonzero parameters of the physically pruned model;
* an L1 plan to 50% of the nonzero parameters lands within 2% of the target and the
  pruned model runs; models covering every layer class of the zoo also survive a
  SavedModel round trip and convert to TFLite (see ``test_pruned_model_exports``).
"""
import epkd_tf  # noqa: F401  (before TensorFlow)

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tf_keras import layers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import random_groups, random_inputs, randomize  # noqa: E402

from epkd_tf.graph import (ParamCounter, UnsupportedLayerError, analyze,  # noqa: E402
                           nonzero_params, remove_groups, zero_groups)
from epkd_tf.deploy.tflite import make_interpreter, to_tflite  # noqa: E402
from epkd_tf.models import build_model, model_names  # noqa: E402
from epkd_tf.models.mobilenet import inverted_residual  # noqa: E402
from epkd_tf.pruning.base import unit_to_group_mean  # noqa: E402
from epkd_tf.pruning.l1 import mean_abs_weight_per_unit  # noqa: E402
from epkd_tf.pruning.plan import plan_removal  # noqa: E402

pytestmark = pytest.mark.integration

# Widths small enough for a fast test, wide enough that no group is more than ~2% of the
# model (else no plan can land within 2% of a target).
WIDTHS = {"alexnet": 0.25, "vgg16": 0.125, "resnet18": 0.125, "resnet34": 0.125,
          "resnet50": 0.125, "inception": 0.125, "mobilenet_v2": 0.25,
          "applications.MobileNetV2": 0.35, "applications.ResNet50": 1.0}
SHAPES = {"lenet300_100": (28, 28, 1), "lenet5": (28, 28, 1)}
NAMES = model_names() + ["applications.MobileNetV2", "applications.ResNet50"]


@pytest.fixture(scope="module", params=NAMES)
def case(request):
    """(name, randomised model, its graph), built once per module."""
    name = request.param
    tf_keras.utils.set_random_seed(0)
    model = build_model(name, SHAPES.get(name, (32, 32, 3)), 10, width=WIDTHS.get(name, 1.0))
    randomize(model, seed=1)
    return name, model, analyze(model)


def _assert_close(actual, expected):
    """|actual - expected| <= 1e-5 relative to the output scale.

    Pruned and zeroed models sum different numbers of terms in different orders, so in
    float32 their outputs differ by rounding; through 50 layers with random BN statistics
    the logits reach the hundreds, so an absolute 1e-5 would test float32 itself.
    """
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def test_remove_equals_zero_and_count_is_exact(case):
    name, model, graph = case
    groups = random_groups(graph, seed=2)
    assert len(groups) > 0
    pruned = remove_groups(graph, groups)
    x = random_inputs(model, n=2, seed=3)
    _assert_close(pruned(x, training=False).numpy(),
                  zero_groups(graph, groups)(x, training=False).numpy())
    counter = ParamCounter(graph)
    assert counter.count_all() == nonzero_params(model)
    assert counter.count(graph.unit_keep(groups)) == nonzero_params(pruned)


@pytest.fixture(scope="module")
def half(case):
    """(name, model, L1 plan to 50% of the nonzero parameters, the pruned model)."""
    name, model, graph = case
    counter = ParamCounter(graph)
    scores = unit_to_group_mean(graph, mean_abs_weight_per_unit(graph))
    plan = plan_removal(graph, scores, counter.count_all() // 2, layer_floor=0.0,
                        counter=counter)
    return name, model, plan, remove_groups(graph, plan.removed_groups)


def test_half_plan_lands_on_target_and_runs(half):
    name, model, plan, pruned = half
    assert abs(plan.nonzero_params - plan.target) <= 0.02 * plan.target
    assert nonzero_params(pruned) == plan.nonzero_params
    out = pruned(random_inputs(model, n=2, seed=4), training=False).numpy()
    assert out.shape == (2, 10) and np.all(np.isfinite(out))


def _check_exports(pruned, x, tmp_path):
    """The SavedModel round trip and the TFLite flatbuffer compute the Keras outputs."""
    expected = pruned(x, training=False).numpy()
    tf.saved_model.save(pruned, str(tmp_path / "saved"))
    serve = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    (reloaded,) = serve(tf.constant(x)).values()
    _assert_close(reloaded.numpy(), expected)
    interpreter = make_interpreter(to_tflite(pruned))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), expected,
                               rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


# Zoo models that between them hold every layer class of the zoo (the applications are
# covered by the zoo's classes); the others repeat those classes deeper and export in the
# slow tier.
EXPORT_COVERING = ["alexnet", "inception", "lenet300_100", "lenet5", "mobilenet_v2",
                   "plain_convnet", "resnet18"]
EXPORT_DEEPER = [name for name in model_names() if name not in EXPORT_COVERING]


@pytest.mark.parametrize("case", EXPORT_COVERING, indirect=True)
def test_pruned_model_exports(half, tmp_path):
    """SavedModel round trip and TFLite conversion of the half-pruned model."""
    name, model, plan, pruned = half
    _check_exports(pruned, random_inputs(model, n=2, seed=4), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", EXPORT_DEEPER, indirect=True)
def test_deeper_pruned_models_export(half, tmp_path):
    """The same for the zoo models whose layer classes the covering ones already hold."""
    name, model, plan, pruned = half
    _check_exports(pruned, random_inputs(model, n=2, seed=4), tmp_path)


def test_export_cases_cover_the_zoo():
    """Every zoo model exports in one tier or the other, and the default tier's models
    hold every layer class the zoo's models use."""
    assert sorted(EXPORT_COVERING + EXPORT_DEEPER) == sorted(model_names())
    classes = {}
    for name in model_names():
        model = build_model(name, SHAPES.get(name, (32, 32, 3)), 10,
                            width=WIDTHS.get(name, 1.0))
        classes[name] = {type(layer).__name__ for layer in model.layers}
    covered = set().union(*(classes[name] for name in EXPORT_COVERING))
    missing = set().union(*classes.values()) - covered
    assert not missing, f"layer classes only the slow tier exports: {sorted(missing)}"


def test_pruned_inverted_residuals_export(tmp_path):
    """mobilenet_v2's own blocks (expand, depthwise, ReLU6, linear projection, Add)."""
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 3), name="image")
    x = inverted_residual(inputs, 6, 4, 1, name="block0")
    x = inverted_residual(x, 6, 4, 1, name="block1")          # with the residual Add
    x = inverted_residual(x, 6, 6, 2, name="block2")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = randomize(tf_keras.Model(inputs, layers.Dense(10, name="logits")(x)), seed=1)
    graph = analyze(model)
    assert "block1_add" in [layer.name for layer in model.layers]
    pruned = remove_groups(graph, random_groups(graph, seed=3))
    _check_exports(pruned, random_inputs(model, n=2, seed=4), tmp_path)


def _se_separable_model(seed=0):
    """Conv-BN-ReLU -> SeparableConv2D(x2) -> BN -> PReLU -> Squeeze-Excitation (GAP,
    Reshape to (1, 1, C), two 1x1 convs, Multiply) -> Normalization -> GAP -> Dense."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", name="sep")(x)
    x = layers.BatchNormalization(name="sep_bn")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    se = layers.GlobalAveragePooling2D(name="se_gap")(x)
    se = layers.Reshape((1, 1, 5), name="se_reshape")(se)
    se = layers.Conv2D(3, 1, activation="relu", name="se_reduce")(se)
    se = layers.Conv2D(5, 1, activation="sigmoid", name="se_expand")(se)
    x = layers.Multiply(name="se_scale")([x, se])
    x = layers.Normalization(name="norm")(x)
    x = layers.PReLU(name="prelu_full")(x)                  # alpha (8, 8, 5): per position
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(4, name="logits")(x)
    # LayerNormalization over fixed channels (the logits) is fine.
    out = layers.LayerNormalization(name="logits_ln")(x)
    model = tf_keras.Model(inputs, out, name="se_separable")
    randomize(model, seed=seed)
    rng = np.random.default_rng(seed)
    norm = model.get_layer("norm")   # randomize() would make the variance negative
    norm.set_weights([rng.normal(size=5).astype(np.float32),
                      rng.uniform(0.5, 1.5, 5).astype(np.float32), np.int64(7)])
    for name in ("prelu", "prelu_full"):
        layer = model.get_layer(name)
        alpha = rng.uniform(0.1, 0.3, layer.get_weights()[0].shape).astype(np.float32)
        alpha.reshape(-1)[:3] = 0.0                      # exact zeros are not counted
        layer.set_weights([alpha])
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_separable_se_prelu_normalization_rules(seed):
    model = _se_separable_model(seed)
    graph = analyze(model)
    # The Multiply couples se_expand's units with sep's channels (one group each).
    assert {"sep", "se_expand"} in [set(b.layers) for b in graph.blocks]
    counter = ParamCounter(graph)
    assert counter.count_all() == nonzero_params(model)
    groups = random_groups(graph, seed=seed)
    pruned = remove_groups(graph, groups)
    kept = int(graph.unit_keep(groups)[graph.layer("sep").units].sum())
    assert pruned.get_layer("se_reshape").target_shape == (1, 1, kept)
    assert pruned.get_layer("sep").filters == kept
    assert pruned.get_layer("norm").get_weights()[0].shape == (kept,)
    assert pruned.get_layer("prelu_full").get_weights()[0].shape == (8, 8, kept)
    x = random_inputs(model, n=3, seed=seed)
    _assert_close(pruned(x, training=False).numpy(),
                  zero_groups(graph, groups)(x, training=False).numpy())
    assert counter.count(graph.unit_keep(groups)) == nonzero_params(pruned)
    # The separable depthwise kernel is sliced by input channel, pointwise rows by
    # input channel x multiplier.
    keep_in = graph.unit_keep(groups)[graph.layer("conv").units]
    depthwise, pointwise = pruned.get_layer("sep").get_weights()[:2]
    assert depthwise.shape[2] == keep_in.sum() and pointwise.shape[2] == 2 * keep_in.sum()


@pytest.mark.parametrize("layer", [layers.LayerNormalization, layers.UnitNormalization])
def test_channel_norm_fixes_the_channels_it_reads(layer):
    """A LayerNorm over prunable channels keeps them all (removing one would change the
    statistics of the others): its producer's units are fixed, the rest is pruned."""
    inputs = tf_keras.Input((4, 6), name="x")
    x = layers.Dense(6, name="hidden")(inputs)
    x = layer(name="norm")(x)
    x = layers.Dense(5, name="free")(x)
    x = layers.Flatten(name="flatten")(x)
    graph = analyze(tf_keras.Model(inputs, layers.Dense(3, name="logits")(x)))
    fixed = graph.group_of_unit[graph.layer("hidden").units]
    assert (fixed == -1).all()
    assert (graph.group_of_unit[graph.layer("free").units] >= 0).all()


@pytest.mark.parametrize("layer,message", [
    (lambda: layers.Reshape((12, 2), name="bad"), "changes the last axis"),
    (lambda: layers.LSTM(5, name="bad"), "no channel rule"),
    (lambda: layers.Lambda(lambda t: t * 2.0, name="bad"), "no channel rule"),
])
def test_unsupported_layer_is_named(layer, message):
    inputs = tf_keras.Input((4, 6), name="x")
    x = layers.Dense(6, name="hidden")(inputs)
    x = layer()(x)
    x = layers.Flatten(name="flatten")(x) if len(x.shape) > 2 else x
    model = tf_keras.Model(inputs, layers.Dense(3, name="logits")(x))
    with pytest.raises(UnsupportedLayerError, match=f"'bad'.*{message}"):
        analyze(model)


def test_tf_op_lambda_is_named():
    inputs = tf_keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    x = x + 3.0                                  # a TFOpLambda layer, as in MobileNetV3
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = tf_keras.Model(inputs, layers.Dense(3, name="logits")(x))
    # Keras numbers the op's name after the models built before it in the process.
    op = next(layer for layer in model.layers if type(layer).__name__ == "TFOpLambda")
    assert re.fullmatch(r"tf\.__operators__\.add(_\d+)?", op.name), op.name
    with pytest.raises(UnsupportedLayerError, match=re.escape(f"'{op.name}' (TFOpLambda)")):
        analyze(model)
