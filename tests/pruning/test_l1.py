"""Tests for the l1_filter pruner (mean absolute kernel weight, global ranking)."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import FakeData, lenet300_100, randomize  # noqa: E402

from epkd_tf.config import PruningConfig  # noqa: E402
from epkd_tf.graph import ParamCounter, analyze, nonzero_params  # noqa: E402
from epkd_tf.pruning import PruningContext, make_pruner  # noqa: E402
from epkd_tf.pruning.l1 import mean_abs_weight_per_unit  # noqa: E402

pytestmark = pytest.mark.unit


def _model(fc2_scale):
    model = randomize(lenet300_100(input_shape=(8, 8, 1), seed=3), seed=3)
    # Shrink fc2 so that its units rank lowest globally and its floor has to stop them.
    layer = model.get_layer("fc2")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * fc2_scale, bias])
    return model


def _ctx(layer_floor):
    data = FakeData((8, 8, 1), 10, num_train=16)
    return PruningContext(data, PruningConfig(layer_floor=layer_floor), seed=0, batch_size=8)


def _expected_kept(model, n_removed, layer_floor):
    """NumPy reference: remove the n smallest mean-|kernel| units globally, floors honoured."""
    names = ["fc1", "fc2"]
    scores = [np.abs(model.get_layer(n).get_weights()[0]).mean(axis=0) for n in names]
    entries = sorted((s, li, u) for li, layer_scores in enumerate(scores)
                     for u, s in enumerate(layer_scores))
    removable = [len(s) - max(1, math.ceil(layer_floor * len(s))) for s in scores]
    removed = [set(), set()]
    for s, li, u in entries:
        if sum(map(len, removed)) == n_removed:
            break
        if len(removed[li]) < removable[li]:
            removed[li].add(u)
    return [np.array(sorted(set(range(len(s))) - r)) for s, r in zip(scores, removed)]


@pytest.mark.parametrize("fc2_scale,layer_floor,fraction", [
    (0.05, 0.3, 0.4),     # fc2 ranks lowest: its floor (30 units) binds
    (1.0, 0.1, 0.8),      # genuine global mixing of the two layers
])
def test_l1_filter_keeps_highest_mean_abs(fc2_scale, layer_floor, fraction):
    model = _model(fc2_scale)
    target = int(fraction * nonzero_params(model))
    candidate = make_pruner("l1_filter").make_candidate(model, target, _ctx(layer_floor))
    pruned = candidate.model
    w1, w2 = pruned.get_layer("fc1").units, pruned.get_layer("fc2").units
    assert w1 < 300 and w2 < 100
    if fc2_scale < 1:
        assert w2 == math.ceil(layer_floor * 100)
    n_removed = (300 - w1) + (100 - w2)
    kept1, kept2 = _expected_kept(model, n_removed, layer_floor)
    assert (len(kept1), len(kept2)) == (w1, w2)

    # Kept units' weights are copied exactly (incoming columns, biases, outgoing rows).
    k1, b1 = model.get_layer("fc1").get_weights()
    k2, b2 = model.get_layer("fc2").get_weights()
    k3, b3 = model.get_layer("logits").get_weights()
    p1, q1 = pruned.get_layer("fc1").get_weights()
    p2, q2 = pruned.get_layer("fc2").get_weights()
    p3, q3 = pruned.get_layer("logits").get_weights()
    np.testing.assert_array_equal(p1, k1[:, kept1])
    np.testing.assert_array_equal(q1, b1[kept1])
    np.testing.assert_array_equal(p2, k2[kept1][:, kept2])
    np.testing.assert_array_equal(q2, b2[kept2])
    np.testing.assert_array_equal(p3, k3[kept2])
    np.testing.assert_array_equal(q3, b3)

    # Budget: within one unit's parameters of the target.
    one_unit = 64 + 1 + 100
    assert abs(nonzero_params(pruned) - target) <= one_unit
    assert candidate.structured and candidate.pruner == "l1_filter"
    assert candidate.scores.shape == (candidate.graph.num_groups,)


def test_mean_abs_weight_per_unit():
    model = _model(1.0)
    graph = analyze(model)
    scores = mean_abs_weight_per_unit(graph)
    for name in ("fc1", "fc2", "logits"):
        kernel = model.get_layer(name).get_weights()[0]
        np.testing.assert_allclose(scores[graph.layer(name).units],
                                   np.abs(kernel).mean(axis=0), rtol=1e-6)
    # Group scores equal unit scores in a plain chain.
    group_scores = make_pruner("l1_filter").score(graph, _ctx(0.1))
    np.testing.assert_allclose(group_scores[graph.group_of_unit[graph.layer("fc1").units]],
                               scores[graph.layer("fc1").units])
    assert ParamCounter(graph).count_all() == nonzero_params(model)
