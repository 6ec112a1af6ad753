"""Tests for epkd_tf.pruning.plan: removal order, floors and parameter budgets."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import lenet300_100, randomize, residual_model  # noqa: E402

from epkd_tf.graph import ParamCounter, analyze  # noqa: E402
from epkd_tf.pruning import PruningError, plan_removal, removal_order  # noqa: E402
from epkd_tf.pruning.plan import floor_groups  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def mlp_graph():
    return analyze(randomize(lenet300_100(input_shape=(8, 8, 1)), sparsity=0.3))


@pytest.fixture(scope="module")
def residual_graph():
    return analyze(randomize(residual_model(width=6)))


def _reference_order(graph, scores, layer_floor):
    """Independent reference: sort by (score, group id), skip groups a block floor protects."""
    sizes = {b: len(block.groups) for b, block in enumerate(graph.blocks)}
    floors = {b: max(1, math.ceil(layer_floor * n)) for b, n in sizes.items()}
    removed_per_block = {b: 0 for b in sizes}
    result = []
    for g in sorted(range(len(scores)), key=lambda i: (scores[i], i)):
        b = int(graph.group_block[g])
        if sizes[b] - removed_per_block[b] > floors[b]:
            removed_per_block[b] += 1
            result.append(g)
    return result


@pytest.mark.parametrize("layer_floor", [0.1, 0.5, 0.95])
@pytest.mark.parametrize("ties", [False, True])
def test_removal_order_matches_reference(mlp_graph, layer_floor, ties):
    rng = np.random.default_rng(7)
    scores = rng.normal(size=mlp_graph.num_groups)
    if ties:
        scores = np.round(scores)            # a handful of distinct values: many ties
    order = removal_order(mlp_graph, scores, layer_floor)
    assert order.tolist() == _reference_order(mlp_graph, scores, layer_floor)
    # Floors: each block keeps at least ceil(floor * size) groups, and exactly that many
    # when the order runs to the end.
    for b, block in enumerate(mlp_graph.blocks):
        removed = int(np.sum(mlp_graph.group_block[order] == b))
        assert len(block.groups) - removed == max(1, math.ceil(layer_floor * len(block.groups)))


def test_removal_order_ties_by_group_id(residual_graph):
    scores = np.zeros(residual_graph.num_groups)
    order = removal_order(residual_graph, scores, 0.01)
    # Every block keeps one group: the highest id of each block goes last and is kept.
    kept = [int(block.groups.max()) for block in residual_graph.blocks]
    assert order.tolist() == [g for g in range(residual_graph.num_groups) if g not in kept]


@pytest.mark.parametrize("fraction", [0.97, 0.8, 0.55, 0.3])
def test_plan_lands_near_target(mlp_graph, fraction):
    counter = ParamCounter(mlp_graph)
    full = counter.count_all()
    rng = np.random.default_rng(11)
    scores = rng.random(mlp_graph.num_groups)
    order = removal_order(mlp_graph, scores, 0.1)
    counts = np.array([counter.count(mlp_graph.unit_keep(order[:k]))
                       for k in range(len(order) + 1)])
    assert counts[0] == full
    steps = -np.diff(counts)
    assert np.all(steps >= 0), "count must not increase along the removal order"
    target = int(fraction * full)
    plan = plan_removal(mlp_graph, scores, target, 0.1)
    k = len(plan.removed_groups)
    assert plan.removed_groups.tolist() == order[:k].tolist()
    assert plan.nonzero_params == counts[k] == counter.count(mlp_graph.unit_keep(plan.removed_groups))
    assert plan.target == target
    # Within one group's parameters of the target, and the closest prefix of the order.
    assert abs(plan.nonzero_params - target) <= steps.max()
    assert abs(plan.nonzero_params - target) == np.min(np.abs(counts - target))
    assert abs(plan.nonzero_params - target) <= max(steps[k - 1] if k else 0,
                                                    steps[k] if k < len(steps) else 0)


def test_plan_on_coupled_groups(residual_graph):
    counter = ParamCounter(residual_graph)
    full = counter.count_all()
    scores = np.random.default_rng(0).random(residual_graph.num_groups)
    target = int(0.7 * full)
    plan = plan_removal(residual_graph, scores, target, 0.1)
    order = removal_order(residual_graph, scores, 0.1)
    counts = [counter.count(residual_graph.unit_keep(order[:k])) for k in range(len(order) + 1)]
    assert plan.nonzero_params == min(counts, key=lambda c: abs(c - target))
    assert abs(plan.nonzero_params - target) <= max(-np.diff(counts))


def test_target_above_current_removes_nothing(mlp_graph):
    counter = ParamCounter(mlp_graph)
    full = counter.count_all()
    scores = np.arange(mlp_graph.num_groups, dtype=float)
    for target in (full, full + 1, 10 * full):
        plan = plan_removal(mlp_graph, scores, target, 0.1)
        assert len(plan.removed_groups) == 0
        assert plan.nonzero_params == full


def test_a_smaller_target_always_removes_something(mlp_graph):
    """When the whole model is closer to the target than the first prefix of the order
    (a coarse first step), the plan still removes that prefix: an unchanged model is no
    candidate for a smaller target."""
    n = mlp_graph.num_units

    def cost(unit_keep):                      # the first removal costs a 90% drop
        return 100.0 if unit_keep.all() else 10.0 * unit_keep.sum() / n

    scores = np.arange(mlp_graph.num_groups, dtype=float)
    order = removal_order(mlp_graph, scores, 0.1)
    plan = plan_removal(mlp_graph, scores, 90.0, 0.1, cost=cost)
    assert plan.removed_groups.tolist() == order[:1].tolist()
    assert plan.nonzero_params == cost(mlp_graph.unit_keep(order[:1])) < 90.0
    # A target at or above the cost still removes nothing.
    assert len(plan_removal(mlp_graph, scores, 100.0, 0.1, cost=cost).removed_groups) == 0


def test_a_smaller_target_removes_something_with_channel_multiples(mlp_graph):
    """With --channel_multiple=8 the first prefixes of the order round back to nothing
    removed; a target one parameter below the model still gets a plan that removes a
    whole multiple of 8 from some layer."""
    counter = ParamCounter(mlp_graph)
    full = counter.count_all()
    scores = np.random.default_rng(5).random(mlp_graph.num_groups)
    plan = plan_removal(mlp_graph, scores, full - 1, 0.1, channel_multiple=8)
    assert len(plan.removed_groups) > 0 and plan.nonzero_params < full - 1
    for block in mlp_graph.blocks:
        removed = int(np.isin(plan.removed_groups, block.groups).sum())
        kept = len(block.groups) - removed
        assert kept == len(block.groups) or kept % 8 == 0


def test_unreachable_target_raises(mlp_graph):
    scores = np.arange(mlp_graph.num_groups, dtype=float)
    with pytest.raises(PruningError, match="--layer_floor"):
        plan_removal(mlp_graph, scores, 10, 0.1)
    # With a high floor even a moderate target is out of reach.
    full = ParamCounter(mlp_graph).count_all()
    with pytest.raises(PruningError, match="--layer_floor"):
        plan_removal(mlp_graph, scores, int(0.3 * full), 0.9)
    assert issubclass(PruningError, ValueError)


class _SawtoothCost:
    """A monotone cost (kept units) with an ``exact_cost`` below it that is not: every
    other run of 16 removed units is 10 faster, so leaving it is slower (as LiteRT's
    odd/even tiles make some narrower widths slower)."""

    def __init__(self, graph):
        self.graph = graph

    def __call__(self, unit_keep):
        return float(np.sum(unit_keep))

    def exact_cost(self, unit_keep):
        gone = len(unit_keep) - int(np.sum(unit_keep))
        return float(len(unit_keep) - gone - (10 if (gone // 16) % 2 else 0))


def test_a_plan_with_an_exact_cost_takes_the_shortest_prefix_at_or_below_the_target(
        mlp_graph):
    """The exact cost does not fall along the order; the plan is the first prefix whose
    exact cost is within the target (checked against a scan of every prefix), removes no
    more groups than the monotone cost's plan, and reports the exact cost."""
    cost = _SawtoothCost(mlp_graph)
    scores = np.random.default_rng(2).random(mlp_graph.num_groups)
    order = removal_order(mlp_graph, scores, 0.1)
    n = mlp_graph.num_units
    exact = [cost.exact_cost(mlp_graph.unit_keep(order[:k])) for k in range(len(order) + 1)]
    assert any(b > a for a, b in zip(exact, exact[1:]))          # really not monotone
    for target in (n - 20.0, n - 40.0, n - 70.0, n - 100.0):
        plan = plan_removal(mlp_graph, scores, target, 0.1, cost=cost)
        first = next(k for k in range(1, len(exact)) if exact[k] <= target)
        closer = first if abs(exact[first] - target) <= abs(exact[first - 1] - target) \
            else first - 1
        assert len(plan.removed_groups) == max(closer, 1)
        assert plan.cost == exact[len(plan.removed_groups)]
        monotone = plan_removal(mlp_graph, scores, target, 0.1, cost=cost.__call__)
        assert len(plan.removed_groups) <= len(monotone.removed_groups)


def _dense_chain(widths, inputs=8, classes=2):
    import tf_keras
    x = inputs_layer = tf_keras.Input((inputs,))
    for i, width in enumerate(widths):
        x = tf_keras.layers.Dense(width, activation="relu", name=f"hidden{i}")(x)
    return tf_keras.Model(inputs_layer, tf_keras.layers.Dense(classes, name="logits")(x))


def _chain_params(widths, inputs=8, classes=2) -> int:
    """Parameters of a Dense chain, counted independently: (fan-in + 1) x width."""
    sizes = [inputs, *widths, classes]
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


@pytest.mark.parametrize("layer_floor, multiple, reference, kept", [
    (0.25, 1, None, [2, 1]),                              # ceil(0.25 x 8), ceil(0.25 x 4)
    (0.25, 2, None, [2, 2]),                              # 1 rounded up to a multiple of 2
    (0.25, 1, {"hidden0": 16, "hidden1": 8}, [4, 2]),     # fractions of the teacher's widths
    (1.0, 1, None, [8, 4]),                               # nothing removable
])
def test_the_floor_network_keeps_every_layer_at_its_floor(layer_floor, multiple, reference,
                                                          kept):
    from epkd_tf.graph import nonzero_params, remove_groups
    graph = analyze(randomize(_dense_chain([8, 4])))
    removed = floor_groups(graph, layer_floor, multiple, reference)
    floor = remove_groups(graph, removed)
    assert [floor.get_layer(f"hidden{i}").units for i in range(2)] == kept
    cost = ParamCounter(graph).count(graph.unit_keep(removed))
    assert cost == nonzero_params(floor) == _chain_params(kept)
    # No plan reaches below it: asking for less is refused, asking for it is met.
    plan = plan_removal(graph, np.arange(graph.num_groups, dtype=float), cost, layer_floor,
                        channel_multiple=multiple, reference_widths=reference)
    assert plan.cost == cost
    if cost > 1:
        with pytest.raises(PruningError):
            plan_removal(graph, np.arange(graph.num_groups, dtype=float), cost - 1,
                         layer_floor, channel_multiple=multiple, reference_widths=reference)
