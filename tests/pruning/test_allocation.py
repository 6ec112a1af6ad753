"""Tests for epkd_tf.pruning.allocation and the marginal group costs it weighs: the
cost-aware order against a NumPy reference on a small branching graph, coupled groups
costed whole, and the plan's behaviour under each allocation."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import concat_model, depthwise_model, randomize, residual_model  # noqa: E402

from epkd_tf.budget import multiply_accumulates  # noqa: E402
from epkd_tf.graph import ParamCounter, analyze, nonzero_params, remove_groups  # noqa: E402
from epkd_tf.graph.count import AffineCost, LayerwiseCost, macs_cost  # noqa: E402
from epkd_tf.models import build_model  # noqa: E402
from epkd_tf.pruning import allocation as allocation_module  # noqa: E402
from epkd_tf.pruning import plan_removal, removal_order  # noqa: E402
from epkd_tf.pruning.allocation import ALLOCATIONS, marginal_costs  # noqa: E402

pytestmark = pytest.mark.unit

WIDTH, MIDDLE, POSITIONS, CLASSES = 6, 5, 8 * 8 * 9, 3


@pytest.fixture(scope="module")
def residual_graph():
    return analyze(randomize(residual_model(width=WIDTH)))


def _residual_macs(stem: int, middle: int) -> int:
    """MACs of the tiny residual model (tests/helpers_models.py) by hand, keeping ``stem``
    channels of the residual stream (stem and conv_b, coupled by the Add) and ``middle``
    of conv_a: stem reads 2 input channels, conv_a reads the stream, conv_b reads conv_a,
    the logits read the pooled stream (3x3 kernels at 8x8 positions)."""
    return POSITIONS * (2 * stem + stem * middle + middle * stem) + CLASSES * stem


def _stream_groups(graph):
    """Which groups hold residual-stream channels (stem + conv_b) and which conv_a's."""
    names = np.array(graph.producer_names)
    layers = [set(names[graph.unit_layer[units]]) for units in graph.group_units]
    stream = np.array([layer == {"stem", "conv_b"} for layer in layers])
    middle = np.array([layer == {"conv_a"} for layer in layers])
    assert (stream | middle).all() and stream.sum() == WIDTH and middle.sum() == MIDDLE
    return stream


def test_coupled_groups_are_costed_with_all_their_members(residual_graph):
    """A residual-stream group is one channel of stem, conv_b and everything reading the
    Add: its marginal MACs are those of all of them, at every keep state."""
    graph = residual_graph
    stream = _stream_groups(graph)
    cost = macs_cost(graph)
    rng = np.random.default_rng(3)
    for _ in range(5):
        removed = [g for g in range(graph.num_groups) if rng.random() < 0.3]
        keep = graph.unit_keep(removed)
        s = int(WIDTH - stream[removed].sum())
        m = int(MIDDLE - (~stream)[removed].sum())
        assert cost(keep) == _residual_macs(s, m)
        expected = np.where(stream, _residual_macs(s, m) - _residual_macs(s - 1, m),
                            _residual_macs(s, m) - _residual_macs(s, m - 1))
        expected[removed] = 0
        np.testing.assert_allclose(cost.group_costs(keep), expected)


@pytest.mark.parametrize("build", [concat_model, depthwise_model, residual_model])
def test_marginal_params_and_macs_match_the_rebuilt_models(build):
    """What removing each group alone saves, against the surgically rebuilt model's own
    count (nonzero parameters, multiply-accumulates)."""
    model = randomize(build())
    graph = analyze(model)
    params, macs = ParamCounter(graph), macs_cost(graph)
    full_params, full_macs = nonzero_params(model), multiply_accumulates(model)
    for g in range(graph.num_groups):
        if len(graph.blocks[graph.group_block[g]].groups) == 1:
            continue                                  # a block's last group stays
        pruned = remove_groups(graph, [g])
        assert params.group_costs()[g] == full_params - nonzero_params(pruned), g
        assert macs.group_costs()[g] == full_macs - multiply_accumulates(pruned), g


def test_any_layerwise_cost_and_its_scaled_copy_have_exact_marginals(residual_graph):
    """A nonlinear per-layer cost (as a latency table is): group costs are the exact
    differences of the cost itself, at a partial keep too; AffineCost scales them."""
    graph = residual_graph

    def per_layer(layer, rule, kin, kout):
        return 0.0 if kin <= 0 or kout <= 0 else (kin ** 1.5) * kout + 7.0

    cost = LayerwiseCost(graph, per_layer, offset=3.0)
    keep = graph.unit_keep([0, graph.num_groups - 1])
    fd = np.array([cost(keep) - cost(keep & (graph.group_of_unit != g)) if keep[
        graph.group_units[g]].any() else 0.0 for g in range(graph.num_groups)])
    np.testing.assert_allclose(cost.group_costs(keep), fd)
    np.testing.assert_allclose(marginal_costs(graph, lambda k: cost(k), keep), fd)
    scaled = AffineCost(cost, 4.0, 100.0)
    assert scaled(keep) == 4.0 * cost(keep) + 100.0
    np.testing.assert_allclose(scaled.group_costs(keep), 4.0 * fd)


def _reference_cost_order(graph, scores, stream):
    """Independent greedy knapsack on the hand-counted MACs: repeatedly remove the group
    with the least importance per unit of MACs it saves now (ties by group id), each
    block keeping one group."""
    n = len(scores)
    s, m, removed = WIDTH, MIDDLE, []
    while True:
        saving = {g: (_residual_macs(s, m) - _residual_macs(s - 1, m)) if stream[g]
                  else (_residual_macs(s, m) - _residual_macs(s, m - 1))
                  for g in range(n) if g not in removed}
        allowed = [g for g in saving if (s if stream[g] else m) > 1]
        if not allowed:
            return removed
        g = min(allowed, key=lambda g: (scores[g] / saving[g], g))
        removed.append(g)
        s, m = (s - 1, m) if stream[g] else (s, m - 1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_cost_order_matches_a_numpy_reference_on_a_branching_graph(residual_graph, seed,
                                                                   monkeypatch):
    """Re-costed after every removal (one-group chunks), the cost-aware order is the
    reference greedy knapsack."""
    monkeypatch.setattr(allocation_module, "CHUNK", 1e-9)
    graph = residual_graph
    scores = np.random.default_rng(seed).random(graph.num_groups)
    order = removal_order(graph, scores, 0.01, allocation="cost", cost=macs_cost(graph))
    assert order.tolist() == _reference_cost_order(graph, scores, _stream_groups(graph))


def test_the_cost_order_does_not_depend_on_the_scale_of_scores_or_costs(residual_graph):
    graph = residual_graph
    scores = np.random.default_rng(7).random(graph.num_groups)
    cost = macs_cost(graph)
    order = removal_order(graph, scores, 0.01, allocation="cost", cost=cost).tolist()
    assert order == removal_order(graph, 1e3 * scores, 0.01, allocation="cost",
                                  cost=cost).tolist()
    assert order == removal_order(graph, scores, 0.01, allocation="cost",
                                  cost=AffineCost(cost, 0.001, 5.0)).tolist()


def test_the_importance_allocation_is_the_plain_ranking(residual_graph):
    graph = residual_graph
    scores = np.random.default_rng(4).random(graph.num_groups)
    plain = removal_order(graph, scores, 0.01)
    assert plain.tolist() == removal_order(graph, scores, 0.01, allocation="importance",
                                           cost=macs_cost(graph)).tolist()
    assert plain.tolist() == [g for g in np.argsort(scores, kind="stable")
                              if g in set(plain.tolist())]


@pytest.mark.parametrize("allocation", ALLOCATIONS.names())
def test_every_allocation_plans_to_the_target_and_cost_falls_along_its_order(allocation):
    model = build_model("lenet5", (28, 28, 1), 10)
    graph = analyze(model)
    cost = macs_cost(graph)
    scores = np.random.default_rng(5).random(graph.num_groups)
    order = removal_order(graph, scores, 0.1, allocation=allocation, cost=cost)
    costs = [cost(graph.unit_keep(order[:k])) for k in range(0, len(order) + 1, 7)]
    assert np.all(np.diff(costs) <= 0)
    target = 0.3 * cost.full()
    plan = plan_removal(graph, scores, target, 0.1, cost=cost, allocation=allocation)
    student = remove_groups(graph, plan.removed_groups)
    assert multiply_accumulates(student) == plan.cost
    assert abs(plan.cost - target) <= cost.group_costs().max()


def test_the_cost_allocation_removes_expensive_units_first():
    """At equal MACs on LeNet-5, ranking per MAC removes more of the costly convolution
    filters and keeps more of the cheap dense units than ranking by importance alone."""
    model = build_model("lenet5", (28, 28, 1), 10)
    graph = analyze(model)
    cost = macs_cost(graph)
    scores = np.random.default_rng(6).random(graph.num_groups)
    students = {a: remove_groups(graph, plan_removal(graph, scores, 0.3 * cost.full(), 0.1,
                                                     cost=cost, allocation=a).removed_groups)
                for a in ("importance", "cost")}
    by_cost, by_importance = students["cost"], students["importance"]
    assert by_cost.get_layer("conv1").filters < by_importance.get_layer("conv1").filters
    assert by_cost.get_layer("fc1").units > by_importance.get_layer("fc1").units
    assert nonzero_params(by_cost) > nonzero_params(by_importance)


def test_a_group_that_saves_nothing_goes_last(residual_graph):
    graph = residual_graph
    scores = np.zeros(graph.num_groups)
    free = 2

    def cost(keep):                               # group 2 costs nothing
        return float(sum(keep[units].sum() for g, units in enumerate(graph.group_units)
                         if g != free))

    order = removal_order(graph, scores, 0.01, allocation="cost", cost=cost).tolist()
    assert len(order) >= graph.num_groups - len(graph.blocks) - 1
    assert free not in order[:-1]          # after every group that saves something


def test_the_cost_allocation_needs_a_cost(residual_graph):
    scores = np.zeros(residual_graph.num_groups)
    with pytest.raises(ValueError, match="needs the budget's cost"):
        removal_order(residual_graph, scores, 0.1, allocation="cost")
