"""Tests for epkd_tf.graph.analysis: units, groups and blocks of functional models."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import sys
from pathlib import Path

import numpy as np
import pytest
import tf_keras
from tf_keras import layers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import concat_model, lenet5, lenet300_100, residual_model  # noqa: E402

from epkd_tf.graph import UnsupportedLayerError, analyze, remove_groups, zero_groups  # noqa: E402,E501
from epkd_tf.graph.executor import GraphExecutor  # noqa: E402

pytestmark = pytest.mark.unit


def _check_consistency(graph):
    """Invariants every ChannelGraph satisfies."""
    # Every group id appears, group_units partitions the non-fixed units.
    live = np.flatnonzero(graph.group_of_unit >= 0)
    assert np.array_equal(np.sort(np.concatenate(graph.group_units)), live)
    for g, units in enumerate(graph.group_units):
        assert np.all(graph.group_of_unit[units] == g)
    # Blocks partition the groups.
    all_groups = np.sort(np.concatenate([b.groups for b in graph.blocks]))
    assert np.array_equal(all_groups, np.arange(graph.num_groups))
    for b, block in enumerate(graph.blocks):
        assert np.all(graph.group_block[block.groups] == b)
    # unit_layer / unit_channel agree with LayerInfo.units.
    for info in graph.layers:
        if len(info.units):
            idx = graph.producer_names.index(info.name)
            assert np.all(graph.unit_layer[info.units] == idx)
            assert np.array_equal(graph.unit_channel[info.units], np.arange(len(info.units)))


def _fixed(graph, layer_name):
    return graph.group_of_unit[graph.layer(layer_name).units] < 0


def test_lenet300_100_counts():
    graph = analyze(lenet300_100())
    _check_consistency(graph)
    assert graph.num_units == 300 + 100 + 10
    assert graph.num_groups == 300 + 100
    assert [b.layers for b in graph.blocks] == [("fc1",), ("fc2",)]
    assert [len(b.groups) for b in graph.blocks] == [300, 100]
    assert _fixed(graph, "logits").all()
    assert not _fixed(graph, "fc1").any() and not _fixed(graph, "fc2").any()
    # Plain chain: every group is one unit.
    assert all(len(u) == 1 for u in graph.group_units)
    assert graph.producer_names == ["fc1", "fc2", "logits"]
    assert [i.name for i in graph.mixing_layers()] == ["fc1", "fc2", "logits"]
    # The image's pixels are fixed positions.
    assert np.all(graph.layer("fc1").in_positions[0] == -1)
    assert np.array_equal(graph.layer("fc2").in_positions[0], graph.layer("fc1").units)


def test_lenet5_counts_and_flatten_positions():
    graph = analyze(lenet5())
    _check_consistency(graph)
    assert graph.num_units == 20 + 50 + 500 + 10
    assert graph.num_groups == 20 + 50 + 500
    assert [b.name for b in graph.blocks] == ["conv1", "conv2", "fc1"]
    assert [len(b.groups) for b in graph.blocks] == [20, 50, 500]
    assert _fixed(graph, "logits").all()
    # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4: Flatten of 4x4x50.
    conv2 = graph.layer("conv2").units
    expected = np.tile(conv2, 4 * 4)
    assert np.array_equal(graph.layer("flatten").out_positions, expected)
    assert np.array_equal(graph.layer("fc1").in_positions[0], expected)
    assert np.array_equal(graph.layer("pool2").out_positions, conv2)


def test_residual_add_couples_channels():
    graph = analyze(residual_model(width=4))
    _check_consistency(graph)
    stem = graph.layer("stem").units
    conv_b = graph.layer("conv_b").units
    conv_a = graph.layer("conv_a").units
    assert graph.num_units == 4 + 5 + 4 + 3
    assert graph.num_groups == 4 + 5          # stem/conv_b coupled pairwise
    for i in range(4):
        g = graph.group_of_unit[stem[i]]
        assert g >= 0 and graph.group_of_unit[conv_b[i]] == g
        assert sorted(graph.group_units[g].tolist()) == sorted([stem[i], conv_b[i]])
    # Channel i and j of the Add are different groups.
    assert len(set(graph.group_of_unit[stem].tolist())) == 4
    assert all(len(graph.group_units[g]) == 1 for g in graph.group_of_unit[conv_a])
    assert len(graph.blocks) == 2
    coupled = [b for b in graph.blocks if "stem" in b.layers]
    assert len(coupled) == 1
    block = coupled[0]
    assert set(block.layers) == {"stem", "conv_b"}
    assert "stem" in block.name and "conv_b" in block.name
    assert sorted(block.groups.tolist()) == sorted(graph.group_of_unit[stem].tolist())
    assert _fixed(graph, "logits").all()
    # The BN after conv_a reads conv_a's positions.
    assert np.array_equal(graph.layer("bn_a").in_positions[0], conv_a)
    # The Add's output carries the stem's unit ids (representative of each coupled pair).
    assert np.array_equal(graph.group_positions(graph.layer("add").out_positions),
                          graph.group_of_unit[stem])


def test_add_with_image_fixes_the_producer():
    inputs = tf_keras.Input((8, 8, 3))
    c = layers.Conv2D(3, 3, padding="same", name="c")(inputs)
    x = layers.Add(name="add")([inputs, c])
    x = layers.Conv2D(2, 1, name="d")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(2, name="logits")(x)
    graph = analyze(tf_keras.Model(inputs, out))
    assert _fixed(graph, "c").all()
    assert not _fixed(graph, "d").any()
    assert graph.num_groups == 2


def test_concatenate_stacks_positions():
    graph = analyze(concat_model())
    _check_consistency(graph)
    left, right = graph.layer("left").units, graph.layer("right").units
    expected = np.concatenate([left, right])
    assert np.array_equal(graph.layer("concat").out_positions, expected)
    assert np.array_equal(graph.layer("mix").in_positions[0], expected)
    assert graph.num_groups == 3 + 4 + 5 + 6
    assert [b.name for b in graph.blocks] == ["left", "right", "mix", "fc"]
    # mix -> pool (3x3) -> Flatten
    assert np.array_equal(graph.layer("fc").in_positions[0],
                          np.tile(graph.layer("mix").units, 9))


def test_concatenate_on_spatial_axis_couples():
    inputs = tf_keras.Input((4, 4, 2))
    a = layers.Conv2D(3, 1, name="a")(inputs)
    b = layers.Conv2D(3, 1, name="b")(inputs)
    x = layers.Concatenate(axis=1, name="cat")([a, b])
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(2, name="logits")(x)
    graph = analyze(tf_keras.Model(inputs, out))
    assert graph.num_groups == 3
    assert len(graph.blocks) == 1 and set(graph.blocks[0].layers) == {"a", "b"}


def _assert_unsupported(model_fn, *fragments):
    with pytest.raises(UnsupportedLayerError) as info:
        analyze(model_fn())
    for fragment in fragments:
        assert fragment in str(info.value)


def test_lstm_unsupported():
    def build():
        inputs = tf_keras.Input((5, 3))
        x = layers.LSTM(4, name="my_lstm")(inputs)
        return tf_keras.Model(inputs, layers.Dense(2)(x))
    _assert_unsupported(build, "my_lstm", "LSTM")


def test_reshape_unsupported():
    def build():
        inputs = tf_keras.Input((8,))
        x = layers.Dense(6, name="fc")(inputs)
        x = layers.Reshape((2, 3), name="my_reshape")(x)
        x = layers.Flatten()(x)
        return tf_keras.Model(inputs, layers.Dense(2)(x))
    _assert_unsupported(build, "my_reshape", "Reshape")


def test_embedding_unsupported():
    def build():
        inputs = tf_keras.Input((5,), dtype="int32")
        x = layers.Embedding(10, 4, name="my_embedding")(inputs)
        x = layers.GlobalAveragePooling1D()(x)
        return tf_keras.Model(inputs, layers.Dense(2)(x))
    _assert_unsupported(build, "my_embedding", "Embedding")


def test_shared_layer_refused():
    def build():
        inputs = tf_keras.Input((4,))
        shared = layers.Dense(4, name="shared_fc")
        x = shared(shared(inputs))
        return tf_keras.Model(inputs, layers.Dense(2)(x))
    _assert_unsupported(build, "shared_fc", "Dense", "2 times")


def test_subclassed_model_refused():
    class Tiny(tf_keras.Model):
        def __init__(self):
            super().__init__(name="tiny_subclassed")
            self.fc = layers.Dense(3)
            self.out = layers.Dense(2)

        def call(self, x):
            return self.out(self.fc(x))

    def build():
        model = Tiny()
        model(np.zeros((1, 4), np.float32))
        return model
    _assert_unsupported(build, "tiny_subclassed", "Tiny")


def test_nested_model_refused():
    def build():
        inner_in = tf_keras.Input((4,))
        inner = tf_keras.Model(inner_in, layers.Dense(3)(inner_in), name="inner_block")
        inputs = tf_keras.Input((4,))
        x = inner(inputs)
        return tf_keras.Model(inputs, layers.Dense(2)(x))
    _assert_unsupported(build, "inner_block", "nested model")


def test_sequential_model_supported():
    model = tf_keras.Sequential([layers.Dense(5, activation="relu", input_shape=(3,)),
                                 layers.Dropout(0.1), layers.Dense(2)])
    graph = analyze(model)
    assert graph.num_groups == 5 and len(graph.blocks) == 1
    assert np.all(graph.layer(model.layers[0].name).in_positions[0] == -1)
    # The graph is usable end to end: surgery and the layer-by-layer executor.
    x = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    pruned = remove_groups(graph, [1, 3])
    assert pruned.layers[0].units == 3
    np.testing.assert_allclose(pruned(x).numpy(), zero_groups(graph, [1, 3])(x).numpy(),
                               rtol=1e-5, atol=1e-6)
    executor = GraphExecutor(graph)
    np.testing.assert_allclose(executor.output(executor.forward(x)).numpy(),
                               model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_unit_keep():
    graph = analyze(residual_model())
    g = int(graph.group_of_unit[graph.layer("stem").units[1]])
    keep = graph.unit_keep([g])
    assert keep.dtype == bool and keep.shape == (graph.num_units,)
    assert not keep[graph.group_units[g]].any()
    assert keep.sum() == graph.num_units - 2
    assert graph.unit_keep([]).all()
