"""FLOPs regularisation of the global ranking (Molchanov et al. 2016, section 2.3)."""
import numpy as np
import pytest
from scipy import stats

from epkd_tf.graph import analyze, group_macs, nonzero_params, remove_groups
from epkd_tf.budget import multiply_accumulates
from epkd_tf.models import build_model
from epkd_tf.pruning import plan_removal
from epkd_tf.pruning.allocation import ByImportance

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def lenet5():
    model = build_model("lenet5", (28, 28, 1), 10)
    return model, analyze(model)


def test_group_macs_by_hand(lenet5):
    _, graph = lenet5
    macs = {b.name: group_macs(graph)[b.groups] for b in graph.blocks}
    # conv1 filter: computes 24·24 positions of a 5x5x1 kernel, conv2 reads it at 8·8
    # positions with 5x5 kernels for 50 outputs.
    assert (macs["conv1"] == 24 * 24 * 25 + 8 * 8 * 25 * 50).all()
    # conv2 filter: 8·8 positions of 5x5x20; fc1 reads its 4·4 positions for 500 outputs.
    assert (macs["conv2"] == 8 * 8 * 25 * 20 + 16 * 500).all()
    assert (macs["fc1"] == 800 + 10).all()


def test_zero_weight_keeps_the_plain_ranking(lenet5):
    _, graph = lenet5
    scores = np.random.default_rng(0).random(graph.num_groups)
    np.testing.assert_array_equal(ByImportance(0.0).key(graph, scores, None, None), scores)


def test_key_is_rank_minus_weighted_normalised_macs(lenet5):
    _, graph = lenet5
    scores = np.random.default_rng(1).random(graph.num_groups)
    macs = group_macs(graph)
    expected = stats.rankdata(scores) / len(scores) - 0.3 * macs / macs.max()
    np.testing.assert_allclose(ByImportance(0.3).key(graph, scores, None, None), expected)


def test_flops_weight_trades_dense_units_for_convolutions(lenet5):
    model, graph = lenet5
    scores = np.random.default_rng(2).random(graph.num_groups)
    target = nonzero_params(model) // 10 + 20_000   # biases are zero at initialisation
    plain = remove_groups(graph, plan_removal(graph, scores, target, 0.1).removed_groups)
    costed = remove_groups(graph, plan_removal(graph, scores, target, 0.1,
                                               flops_weight=0.25).removed_groups)
    # Both meet the same parameter budget (each within one group, here < 2%) ...
    for pruned in (plain, costed):
        assert abs(nonzero_params(pruned) - target) <= 0.02 * target
    # ... but the costed plan removes convolution filters and so many more MACs.
    assert costed.get_layer("conv2").filters < plain.get_layer("conv2").filters
    assert multiply_accumulates(costed) < 0.5 * multiply_accumulates(plain)
