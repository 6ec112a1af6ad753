"""Every rule of the table (``epkd_tf.graph.rules.RULES``) on a tiny model of its own, and
``register_rule`` for users' layers.

Each template puts the layer under test (named ``t``) where its channels are prunable (a
Conv1D whose units another layer reads, a Cropping2D between two convs, a Subtract
coupling two branches...), or, for the layers only allowed on fixed channels (Softmax,
LayerNormalization on the logits), behind a prunable layer. With random weights and a
random removal set:

* ``remove_groups`` computes what ``zero_groups`` computes;
* ``ParamCounter`` gives the rebuilt model's nonzero parameters exactly (also with exact
  zeros in every weight), and its dense tables the rebuilt model's ``dense_params``;
* ``macs_cost`` gives the rebuilt model's ``model_macs``.

``test_templates_cover_every_rule`` makes a new rule come with a template.
"""
import epkd_tf  # noqa: F401  (before TensorFlow)

import dataclasses
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tf_keras import layers as L

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import random_groups, random_inputs  # noqa: E402

from epkd_tf.graph import (RULES, CountTables, ParamCounter, Rule,  # noqa: E402
                           UnsupportedLayerError, analyze, dense_params, nonzero_params,
                           register_rule, remove_groups, unregister_rule, zero_groups)
from epkd_tf.graph.count import macs_cost, model_macs  # noqa: E402
from epkd_tf.graph.rules import builtin_rule_names  # noqa: E402
from epkd_tf.models.keras3_layers import CustomScaleLayer, LayerScale  # noqa: E402
from epkd_tf.pruning.l1 import mean_abs_weight_per_unit  # noqa: E402

pytestmark = pytest.mark.unit

SPATIAL = {1: (8,), 2: (6, 6), 3: (4, 4, 4)}
CONV = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}
GAP = {1: L.GlobalAveragePooling1D, 2: L.GlobalAveragePooling2D, 3: L.GlobalAveragePooling3D}


# ---------------------------------------------------------------------------- templates
def chain(rank: int, layer: Callable[[], L.Layer]) -> tf_keras.Model:
    """ConvND producer ``p`` -> the layer ``t`` -> 1x1 ConvND consumer ``c`` -> GAP -> logits."""
    inputs = tf_keras.Input(SPATIAL[rank] + (2,), name="x")
    x = CONV[rank](4, 3, padding="same", name="p")(inputs)
    x = layer()(x)
    x = CONV[rank](3, 1, name="c")(x)
    x = GAP[rank](name="gap")(x)
    return tf_keras.Model(inputs, L.Dense(3, name="logits")(x))


def head(rank: int, layer: Callable[[], L.Layer]) -> tf_keras.Model:
    """ConvND producer ``p`` -> the layer ``t`` (to vectors) -> Dense ``fc`` -> logits."""
    inputs = tf_keras.Input(SPATIAL[rank] + (2,), name="x")
    x = CONV[rank](4, 3, padding="same", name="p")(inputs)
    x = layer()(x)
    x = L.Dense(5, name="fc")(x)
    return tf_keras.Model(inputs, L.Dense(3, name="logits")(x))


def merge(layer: Callable[[], L.Layer], branches: int = 2) -> tf_keras.Model:
    """``branches`` Conv2D branches merged by the layer ``t`` -> Conv2D ``c`` -> GAP -> logits."""
    inputs = tf_keras.Input(SPATIAL[2] + (2,), name="x")
    outs = [L.Conv2D(4, 3 if i == 0 else 1, padding="same", name=f"b{i}")(inputs)
            for i in range(branches)]
    x = layer()(outs)
    x = L.Conv2D(3, 1, name="c")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return tf_keras.Model(inputs, L.Dense(3, name="logits")(x))


def on_logits(layer: Callable[[], L.Layer]) -> tf_keras.Model:
    """Dense ``h`` (prunable) -> ReLU -> Dense logits -> the layer ``t`` (fixed channels)."""
    inputs = tf_keras.Input((4,), name="x")
    x = L.Dense(5, name="h")(inputs)
    x = L.ReLU(name="relu")(x)
    x = L.Dense(3, name="logits")(x)
    return tf_keras.Model(inputs, layer()(x))


def dense_on_sequences() -> tf_keras.Model:
    """Dense ``t`` applied at 3 positions, read by Dense ``d2`` -> Flatten -> logits."""
    inputs = tf_keras.Input((3, 4), name="x")
    x = L.Dense(5, name="t")(inputs)
    x = L.Dense(4, name="d2")(x)
    x = L.Flatten(name="flatten")(x)
    return tf_keras.Model(inputs, L.Dense(3, name="logits")(x))


def mlp_from(input_layer_name: str) -> tf_keras.Model:
    inputs = tf_keras.Input((4,), name=input_layer_name)
    x = L.Dense(5, activation="relu", name="h")(inputs)
    return tf_keras.Model(inputs, L.Dense(3, name="logits")(x))


def squeeze_excitation(target_shape) -> tf_keras.Model:
    """Conv2D ``p`` -> GAP -> Reshape ``t`` (keeps the channels last) -> conv -> logits."""
    inputs = tf_keras.Input(SPATIAL[2] + (2,), name="x")
    x = L.Conv2D(4, 3, padding="same", name="p")(inputs)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Reshape(target_shape, name="t")(x)
    rank = len(target_shape) - 1
    x = CONV[rank](3, 1, name="c")(x)
    x = L.Flatten(name="flatten")(x)
    return tf_keras.Model(inputs, L.Dense(3, name="logits")(x))


@dataclasses.dataclass(frozen=True)
class Template:
    rule: str                              # the rule name (= class name of layer "t")
    variant: str
    build: Callable[[], tf_keras.Model]
    fixed: bool = False                    # "t" only sees fixed channels (by design)

    @property
    def id(self):
        return f"{self.rule}-{self.variant}" if self.variant else self.rule


def T(rule, build, variant="", fixed=False):
    return Template(rule, variant, build, fixed)


def _t(cls, *args, **kwargs):
    """A factory of ``cls(*args, **kwargs)`` named ``t``."""
    return lambda: cls(*args, name="t", **kwargs)


TEMPLATES = [
    # Producers.
    T("Dense", dense_on_sequences, "positions"),
    T("Conv1D", lambda: chain(1, _t(L.Conv1D, 5, 3, strides=2, padding="same"))),
    T("Conv2D", lambda: chain(2, _t(L.Conv2D, 5, 3, strides=2, padding="same"))),
    T("Conv3D", lambda: chain(3, _t(L.Conv3D, 5, 3, strides=2, padding="same"))),
    T("SeparableConv1D", lambda: chain(1, _t(L.SeparableConv1D, 5, 3, depth_multiplier=2,
                                             padding="same"))),
    T("SeparableConv2D", lambda: chain(2, _t(L.SeparableConv2D, 5, 3, depth_multiplier=2,
                                             padding="same"))),
    T("DepthwiseConv2D", lambda: chain(2, _t(L.DepthwiseConv2D, 3, depth_multiplier=2,
                                             padding="same"))),
    # Per-channel weights.
    T("BatchNormalization", lambda: chain(2, _t(L.BatchNormalization))),
    T("PReLU", lambda: chain(2, _t(L.PReLU, shared_axes=[1, 2])), "per_channel"),
    T("PReLU", lambda: chain(2, _t(L.PReLU)), "per_position"),
    T("PReLU", lambda: chain(2, _t(L.PReLU, shared_axes=[1, 2, 3])), "shared"),
    T("Normalization", lambda: chain(2, _t(L.Normalization)), "adapted"),
    T("Normalization", lambda: chain(2, _t(L.Normalization, mean=[0.1, -0.2, 0.3, 0.0],
                                           variance=[1.0, 2.0, 0.5, 1.5])), "in_config"),
    # Weightless layers that pass channels through.
    T("Activation", lambda: chain(2, _t(L.Activation, "tanh"))),
    T("ReLU", lambda: chain(2, _t(L.ReLU, max_value=6.0))),
    T("LeakyReLU", lambda: chain(2, _t(L.LeakyReLU, 0.2))),
    T("ELU", lambda: chain(2, _t(L.ELU))),
    T("ThresholdedReLU", lambda: chain(2, _t(L.ThresholdedReLU, theta=0.05))),
    T("Dropout", lambda: chain(2, _t(L.Dropout, 0.3))),
    T("SpatialDropout1D", lambda: chain(1, _t(L.SpatialDropout1D, 0.3))),
    T("SpatialDropout2D", lambda: chain(2, _t(L.SpatialDropout2D, 0.3))),
    T("SpatialDropout3D", lambda: chain(3, _t(L.SpatialDropout3D, 0.3))),
    T("GaussianNoise", lambda: chain(2, _t(L.GaussianNoise, 0.1))),
    T("GaussianDropout", lambda: chain(2, _t(L.GaussianDropout, 0.1))),
    T("AlphaDropout", lambda: chain(2, _t(L.AlphaDropout, 0.1))),
    T("ActivityRegularization", lambda: chain(2, _t(L.ActivityRegularization, l1=0.01))),
    T("Rescaling", lambda: chain(2, _t(L.Rescaling, 0.5, offset=0.1))),
    T("InputLayer", lambda: mlp_from("t"), fixed=True),
] + [
    T(f"{kind}Pooling{rank}D", lambda kind=kind, rank=rank: chain(
        rank, _t(getattr(L, f"{kind}Pooling{rank}D"), 2)))
    for kind in ("Max", "Average") for rank in (1, 2, 3)
] + [
    T(f"Global{kind}Pooling{rank}D", lambda kind=kind, rank=rank: head(
        rank, _t(getattr(L, f"Global{kind}Pooling{rank}D"))))
    for kind in ("Max", "Average") for rank in (1, 2, 3)
] + [
    T(f"{cls}{rank}D", lambda cls=cls, rank=rank, arg=arg: chain(
        rank, _t(getattr(L, f"{cls}{rank}D"), arg)))
    for cls, arg in (("ZeroPadding", 1), ("Cropping", 1), ("UpSampling", 2))
    for rank in (1, 2, 3)
] + [
    T("Flatten", lambda: head(2, _t(L.Flatten))),
    T("Reshape", lambda: squeeze_excitation((1, 1, 4)), "to_1x1"),
    T("Reshape", lambda: squeeze_excitation((1, -1)), "inferred_last"),
    # Merges: the inputs' channels are coupled (stacked, for Concatenate on channels).
    T("Add", lambda: merge(_t(L.Add), branches=3)),
    T("Subtract", lambda: merge(_t(L.Subtract))),
    T("Multiply", lambda: merge(_t(L.Multiply))),
    T("Average", lambda: merge(_t(L.Average))),
    T("Maximum", lambda: merge(_t(L.Maximum))),
    T("Minimum", lambda: merge(_t(L.Minimum))),
    T("Concatenate", lambda: merge(_t(L.Concatenate)), "channels"),
    T("Concatenate", lambda: merge(_t(L.Concatenate, axis=1)), "spatial"),
    # keras.applications' own layers (converted from Keras 3 files).
    T("LayerScale", lambda: chain(2, _t(LayerScale, 0.5, 4))),
    # A Conv2D with a group per input channel is depthwise (ConvNeXt's, multiplier 1).
    T("Conv2D", lambda: chain(2, _t(L.Conv2D, 4, 3, padding="same", groups=4)), "depthwise"),
    T("Conv2D", lambda: chain(2, _t(L.Conv2D, 8, 3, padding="same", groups=4)),
      "depthwise_x2"),
    T("CustomScaleLayer", lambda: merge(_t(CustomScaleLayer, 0.17))),
    # Mixing channels without weights: on fixed channels only, or over other axes.
    T("Softmax", lambda: on_logits(_t(L.Softmax)), fixed=True),
    T("LayerNormalization", lambda: on_logits(_t(L.LayerNormalization)), "logits", True),
    T("LayerNormalization", lambda: chain(1, _t(L.LayerNormalization, axis=1)), "positions"),
    T("UnitNormalization", lambda: on_logits(_t(L.UnitNormalization)), "logits", True),
    T("UnitNormalization", lambda: chain(1, _t(L.UnitNormalization, axis=1)), "positions"),
]


# ------------------------------------------------------------------------- the checks
def randomize_all(model, seed=0, zeros=0.0):
    """Random weights of every kind (valid variances, positive PReLU slopes, random
    biases); with ``zeros`` > 0 that fraction of every float weight is set to exact zero."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for var, value in zip(layer.weights, layer.get_weights()):
            name = var.name.split("/")[-1].split(":")[0]
            if value.dtype.kind != "f":
                values.append(np.full_like(value, 7))          # Normalization's count
                continue
            if name in ("moving_variance", "gamma", "variance"):
                value = rng.uniform(0.5, 1.5, value.shape)
            elif name == "alpha":
                value = rng.uniform(0.1, 0.3, value.shape)
            elif "kernel" in name:
                value = rng.normal(0.0, 0.5, value.shape)
            else:                                              # bias, beta, mean
                value = rng.normal(0.0, 0.1, value.shape)
            if zeros:
                value = np.where(rng.random(value.shape) < zeros, 0.0, value)
            values.append(np.asarray(value, dtype=np.float32))
        if values:
            layer.set_weights(values)
    return model


def check_rule_contract(model, seed=0, zeros=0.4, layer_under_test=None, fixed=False):
    """Removal equals zeroing; exact nonzero / dense parameter counts and MACs (also with
    exact zeros in the weights); the layer under test is touched by the removal."""
    randomize_all(model, seed=seed)
    graph = analyze(model)
    groups = random_groups(graph, seed=seed)
    assert len(groups) > 0, "the template has nothing to prune"
    keep = graph.unit_keep(groups)
    if layer_under_test is not None:
        info = graph.layer(layer_under_test)
        in_keep = [keep_of(graph, p, keep) for p in info.in_positions]
        touched = (any(not k.all() for k in in_keep)
                   or (len(info.units) and not keep[info.units].all()))
        assert touched != fixed, (f"{layer_under_test} should "
                                  f"{'not ' if fixed else ''}see removed channels")

    pruned = remove_groups(graph, groups)
    x = random_inputs(model, n=3, seed=seed)
    expected = zero_groups(graph, groups)(x, training=False).numpy()
    np.testing.assert_allclose(pruned(x, training=False).numpy(), expected,
                               rtol=1e-5, atol=1e-5)
    assert [type(la) for la in pruned.layers] == [type(la) for la in model.layers]

    counter = ParamCounter(graph)
    assert counter.count_all() == nonzero_params(model)
    assert counter.count(keep) == nonzero_params(pruned)
    dense = ParamCounter(graph, dense=True)
    assert dense.count_all() == dense_params(model)
    assert dense.count(keep) == dense_params(pruned)
    macs = macs_cost(graph)
    assert macs.full() == model_macs(model)
    assert macs(keep) == model_macs(pruned)

    # Exact zeros in every weight (a magnitude-pruned network) are not counted.
    randomize_all(model, seed=seed + 1, zeros=zeros)
    graph = analyze(model)
    counter = ParamCounter(graph)
    pruned = remove_groups(graph, groups)
    assert counter.count_all() == nonzero_params(model)
    assert counter.count(keep) == nonzero_params(pruned)
    assert ParamCounter(graph, dense=True).count(keep) == dense_params(pruned)
    return graph, pruned


def keep_of(graph, positions, unit_keep):
    from epkd_tf.graph.analysis import keep_of_positions
    return keep_of_positions(positions, unit_keep)


def test_templates_cover_every_rule():
    """Every rule epkd_tf ships has a template here (a new rule must come with one)."""
    assert sorted({t.rule for t in TEMPLATES}) == builtin_rule_names()
    assert len({t.id for t in TEMPLATES}) == len(TEMPLATES)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_rule(template):
    tf_keras.utils.set_random_seed(0)
    model = template.build()
    layer = model.get_layer("t")
    assert type(layer).__name__ == template.rule
    assert analyze(model).layer("t").rule is RULES.get(template.rule).variant(layer)
    check_rule_contract(model, seed=1, layer_under_test="t", fixed=template.fixed)


@pytest.mark.parametrize("template_id,expected", [
    ("Dense-positions", 3 * 4 * 5),                    # 3 positions x 4 inputs x 5 units
    ("Conv1D", 4 * 3 * 4 * 5),                         # 4 outputs (stride 2) x k3 x 4 x 5
    ("Conv2D", 3 * 3 * 9 * 4 * 5),
    ("Conv3D", 2 * 2 * 2 * 27 * 4 * 5),
    ("SeparableConv1D", 8 * 3 * 4 * 2 + 8 * 8 * 5),    # depthwise (x2) + pointwise
    ("SeparableConv2D", 36 * 9 * 4 * 2 + 36 * 8 * 5),
    ("DepthwiseConv2D", 36 * 9 * 4 * 2),
    ("BatchNormalization", 0),
])
def test_macs_by_hand(template_id, expected):
    """The MAC formulas themselves (the table test checks that pruned and counted agree)."""
    template = next(t for t in TEMPLATES if t.id == template_id)
    layer = template.build().get_layer("t")
    rule = RULES.get(template.rule)
    cout = int(layer.output_shape[-1]) if rule.produces else int(layer.input_shape[-1])
    assert rule.macs(layer, int(layer.input_shape[-1]), cout) == expected


def test_softmax_on_prunable_channels_is_refused():
    inputs = tf_keras.Input((4,), name="x")
    x = L.Dense(5, name="h")(inputs)
    x = L.Softmax(name="bad")(x)
    model = tf_keras.Model(inputs, L.Dense(3, name="logits")(x))
    with pytest.raises(UnsupportedLayerError, match="'bad'.*mixes prunable channels"):
        analyze(model)


# ----------------------------------------------------------------- users' own layers
class ScaledReLU(L.Layer):
    """relu(x) * scale: channel c out depends on channel c in only; no weights."""

    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return self.scale * tf.nn.relu(x)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class ChannelScale(L.Layer):
    """x * scale with one learnt scale per channel."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


class PlainDense(L.Layer):
    """A Dense layer written from scratch: kernel (inputs, units) and bias."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", shape=(input_shape[-1], self.units))
        self.bias = self.add_weight("bias", shape=(self.units,), initializer="zeros")

    def call(self, x):
        return tf.matmul(x, self.kernel) + self.bias

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class ChannelScaleRule(Rule):
    """Passes channels through; its one weight is indexed by channel."""

    def slice_weights(self, layer, weights, in_keep, out_keep):
        return [weights[0][in_keep[0]]]

    def count_tables(self, layer, weights):
        return CountTables(in_vec=(weights[0] != 0).astype(np.int64))


class PlainDenseRule(Rule):
    """Produces ``units`` new units from its inputs through its kernel."""

    produces = True
    mixes = True
    width_key = "units"

    def out_units(self, layer):
        return layer.units

    def propagate(self, layer, in_pos, in_shapes, new_units):
        return new_units(layer.units)

    def slice_weights(self, layer, weights, in_keep, out_keep):
        kernel, bias = weights
        return [kernel[in_keep[0]][:, out_keep], bias[out_keep]]

    def zero_inputs(self, layer, weights, in_keep):
        kernel = weights[0].copy()
        kernel[~in_keep] = 0.0
        return [kernel, weights[1]]

    def count_tables(self, layer, weights):
        kernel, bias = weights
        return CountTables(pair=(kernel != 0).astype(np.int64),
                           out_vec=(bias != 0).astype(np.int64))

    def macs(self, layer, kept_in, kept_out):
        return kept_in * kept_out

    def scored_kernel(self, layer):
        return layer.kernel


@pytest.fixture
def clean_rules():
    """Leaves no rule of this module's classes registered, before or after a test."""
    names = ["ScaledReLU", "ChannelScale", "PlainDense", "ClippedConv2D"]
    for name in names:
        unregister_rule(name)
    yield
    for name in names:
        unregister_rule(name)


def _scaled_relu_model():
    return chain(2, lambda: ScaledReLU(1.5, name="t"))


def test_unregistered_custom_layer_is_refused_by_name(clean_rules):
    with pytest.raises(UnsupportedLayerError) as info:
        analyze(_scaled_relu_model())
    message = str(info.value)
    assert "'t' (ScaledReLU)" in message
    assert "register_rule(ScaledReLU, 'channel_preserving')" in message


def test_lambda_refusal_does_not_suggest_registering_it():
    inputs = tf_keras.Input((4,), name="x")
    x = L.Dense(5, name="h")(inputs)
    x = L.Lambda(lambda t: t[:, ::-1], name="bad")(x)           # reverses the channels
    model = tf_keras.Model(inputs, L.Dense(3, name="logits")(x))
    with pytest.raises(UnsupportedLayerError) as info:
        analyze(model)
    assert "'bad' (Lambda)" in str(info.value) and "can compute anything" in str(info.value)
    assert "register_rule(Lambda" not in str(info.value)


def test_register_channel_preserving_layer(clean_rules):
    register_rule(ScaledReLU, "channel_preserving")
    graph, pruned = check_rule_contract(_scaled_relu_model(), seed=2, layer_under_test="t")
    assert pruned.get_layer("t").scale == 1.5
    assert graph.num_groups == 4 + 3           # p's and c's filters
    # Registered once: a second registration is refused until the rule is unregistered.
    with pytest.raises(ValueError, match="'ScaledReLU' is already registered.*unregister_rule"):
        register_rule(ScaledReLU, "channel_preserving")
    unregister_rule(ScaledReLU)
    with pytest.raises(UnsupportedLayerError):
        analyze(_scaled_relu_model())
    register_rule("ScaledReLU", "channel_preserving")      # by class name
    analyze(_scaled_relu_model())


def test_register_rule_rejects_bad_arguments(clean_rules):
    with pytest.raises(ValueError, match="channel_preserving"):
        register_rule(ScaledReLU, "keeps_channels")
    with pytest.raises(TypeError, match="type\\(layer\\)"):
        register_rule(ScaledReLU(), "channel_preserving")
    assert "ScaledReLU" not in RULES


def test_a_subclass_is_not_its_parent(clean_rules):
    """A Conv2D subclass may compute something else: it needs its own rule, and a class
    that merely shares a built-in's name is not taken for it."""
    class ClippedConv2D(L.Conv2D):
        pass

    with pytest.raises(UnsupportedLayerError, match=r"'t' \(ClippedConv2D\).*register_rule"):
        analyze(chain(2, lambda: ClippedConv2D(5, 3, padding="same", name="t")))
    impostor = type("Conv2D", (L.Conv2D,), {})
    with pytest.raises(UnsupportedLayerError, match="is not the Conv2D that has a channel rule"):
        analyze(chain(2, lambda: impostor(5, 3, padding="same", name="t")))
    register_rule(ClippedConv2D, "conv")
    check_rule_contract(chain(2, lambda: ClippedConv2D(5, 3, padding="same", name="t")),
                        layer_under_test="t")


def test_custom_layers_with_weights_and_their_rules(clean_rules):
    register_rule(ChannelScale, ChannelScaleRule())
    register_rule(PlainDense, PlainDenseRule)               # a Rule class is instantiated
    inputs = tf_keras.Input((4,), name="x")
    x = PlainDense(6, name="t")(inputs)
    x = ChannelScale(name="s")(x)
    x = L.ReLU(name="relu")(x)
    x = PlainDense(5, name="u")(x)
    model = tf_keras.Model(inputs, L.Dense(3, name="logits")(x))
    graph, pruned = check_rule_contract(model, seed=3, layer_under_test="s")
    kept = pruned.get_layer("t").units
    assert pruned.get_layer("s").get_weights()[0].shape == (kept,)
    # The L1 criterion reads the kernel the rule names.
    scores = mean_abs_weight_per_unit(graph)
    kernel = model.get_layer("t").get_weights()[0]
    np.testing.assert_allclose(scores[graph.layer("t").units], np.abs(kernel).mean(axis=0),
                               rtol=1e-6)
