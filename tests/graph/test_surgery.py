"""Tests for epkd_tf.graph.surgery (remove_groups / zero_groups) and graph.count."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import sys
from pathlib import Path

import numpy as np
import pytest
import tf_keras

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import (concat_model, depthwise_model, lenet5, lenet300_100,  # noqa: E402
                            random_groups, random_inputs, randomize, residual_model)

from epkd_tf.graph import (ParamCounter, analyze, dense_params, nonzero_params,  # noqa: E402
                           remove_groups, zero_groups)

pytestmark = pytest.mark.unit

BUILDERS = {
    "lenet300_100": lambda: lenet300_100(),
    "lenet5": lambda: lenet5(),
    "residual": lambda: residual_model(),
    "depthwise_bn": lambda: depthwise_model(),
    "concat": lambda: concat_model(),
}


@pytest.fixture(params=list(BUILDERS), scope="module")
def model_name(request):
    return request.param


def _model(name, sparsity=0.0, seed=0):
    return randomize(BUILDERS[name](), seed=seed, sparsity=sparsity)


def _out(model, x):
    return model(x, training=False).numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_remove_equals_zero(model_name, seed):
    model = _model(model_name, seed=seed)
    graph = analyze(model)
    groups = random_groups(graph, seed=seed)
    assert len(groups) > 0
    pruned = remove_groups(graph, groups)
    zeroed = zero_groups(graph, groups)
    x = random_inputs(model, n=5, seed=seed)
    np.testing.assert_allclose(_out(pruned, x), _out(zeroed, x), rtol=1e-5, atol=1e-5)
    # The zeroed copy keeps the shape; the original is not modified by either.
    assert dense_params(zeroed) == dense_params(model)
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    assert [type(la) for la in pruned.layers] == [type(la) for la in model.layers]
    assert dense_params(pruned) < dense_params(model)
    assert pruned.count_params() == dense_params(pruned)
    # Widths of producing layers = units kept.
    keep = graph.unit_keep(groups)
    for info in graph.layers:
        if len(info.units):
            assert pruned.get_layer(info.name).output_shape[-1] == keep[info.units].sum()


@pytest.mark.parametrize("sparsity", [0.0, 0.4])
def test_counter_matches_pruned_model(model_name, sparsity):
    model = _model(model_name, sparsity=sparsity)
    if sparsity:
        # Exact zeros in biases / BN parameters are not counted either.
        weights = model.get_weights()
        weights[1][:2] = 0.0
        model.set_weights(weights)
    graph = analyze(model)
    counter = ParamCounter(graph)
    assert counter.count_all() == nonzero_params(model)
    if not sparsity:
        assert counter.count_all() == dense_params(model)
    for seed in range(2):
        groups = random_groups(graph, seed=seed)
        pruned = remove_groups(graph, groups)
        assert counter.count(graph.unit_keep(groups)) == nonzero_params(pruned)
    assert counter.count(graph.unit_keep([])) == nonzero_params(remove_groups(graph, []))


def test_removing_dead_unit_changes_nothing(model_name):
    model = _model(model_name)
    graph = analyze(model)
    rng = np.random.default_rng(3)
    g = int(rng.integers(graph.num_groups))
    # Zero every outgoing weight (the consumer rows) ...
    dead = zero_groups(graph, [g])
    # ... and every incoming weight and bias of the group's units.
    for u in graph.group_units[g]:
        name = graph.producer_names[graph.unit_layer[u]]
        c = graph.unit_channel[u]
        layer = dead.get_layer(name)
        weights = layer.get_weights()
        weights[0][..., c] = 0.0
        if len(weights) > 1:
            weights[1][c] = 0.0
        layer.set_weights(weights)
    dead_graph = analyze(dead)
    pruned = remove_groups(dead_graph, [g])
    x = random_inputs(model, n=4, seed=1)
    np.testing.assert_allclose(_out(pruned, x), _out(dead, x), rtol=1e-6, atol=1e-6)
    assert nonzero_params(pruned) == nonzero_params(dead) - _bn_nonzero_of(dead_graph, g)


def _bn_nonzero_of(graph, g):
    """Nonzero per-channel parameters (BN) and depthwise weights that read group g."""
    total = 0
    for info in graph.layers:
        if info.rule.mixes or not info.in_positions:
            continue
        weights = graph.model.get_layer(info.name).get_weights()
        if not weights:
            continue
        hit = graph.group_positions(info.in_positions[0]) == g
        if type(info.rule).__name__ == "Depthwise":
            total += int(np.count_nonzero(weights[0][:, :, hit, :]))
            for w in weights[1:]:
                total += int(np.count_nonzero(w.reshape(len(hit), -1)[hit]))
        else:
            total += sum(int(np.count_nonzero(w[hit])) for w in weights)
    return total


def test_emptying_a_block_raises(model_name):
    model = _model(model_name)
    graph = analyze(model)
    block = graph.blocks[0]
    with pytest.raises(ValueError) as info:
        remove_groups(graph, block.groups)
    assert any(repr(name) in str(info.value) for name in block.layers)
    # One group short of emptying it is fine.
    remove_groups(graph, block.groups[1:])


def test_pruned_model_saves_and_reloads(model_name, tmp_path):
    model = _model(model_name)
    graph = analyze(model)
    pruned = remove_groups(graph, random_groups(graph, seed=5))
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    reloaded = tf_keras.models.load_model(path)
    x = random_inputs(model, n=3, seed=2)
    np.testing.assert_array_equal(_out(reloaded, x), _out(pruned, x))
    assert dense_params(reloaded) == dense_params(pruned)


def test_original_model_untouched():
    model = _model("residual")
    before = [w.copy() for w in model.get_weights()]
    graph = analyze(model)
    groups = random_groups(graph, seed=0)
    remove_groups(graph, groups)
    zero_groups(graph, groups)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_residual_removal_slices_both_producers():
    model = _model("residual")
    graph = analyze(model)
    stem = graph.layer("stem").units
    g = int(graph.group_of_unit[stem[2]])
    pruned = remove_groups(graph, [g])
    assert pruned.get_layer("stem").filters == 3
    assert pruned.get_layer("conv_b").filters == 3
    assert pruned.get_layer("conv_a").filters == 5
    keep = np.array([0, 1, 3])
    np.testing.assert_array_equal(pruned.get_layer("stem").get_weights()[0],
                                  model.get_layer("stem").get_weights()[0][..., keep])
    np.testing.assert_array_equal(pruned.get_layer("conv_a").get_weights()[0],
                                  model.get_layer("conv_a").get_weights()[0][:, :, keep, :])
    np.testing.assert_array_equal(pruned.get_layer("logits").get_weights()[0],
                                  model.get_layer("logits").get_weights()[0][keep])
