"""Tests for the oracle criterion: batched re-evaluation equals brute-force removal."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import (FakeData, concat_model, depthwise_model, lenet5,  # noqa: E402
                            randomize, residual_model)

import epkd_tf.pruning.oracle as oracle_mod  # noqa: E402
from epkd_tf.config import PruningConfig  # noqa: E402
from epkd_tf.graph import analyze, zero_groups  # noqa: E402
from epkd_tf.pruning import PruningContext, make_pruner  # noqa: E402
from epkd_tf.pruning.oracle import oracle_scores  # noqa: E402

pytestmark = pytest.mark.unit


def _mean_ce(model, x, y):
    logits = np.asarray(model(x, training=False).numpy(), np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y)), y].mean()


def _brute_force(graph, x, y, groups):
    base = _mean_ce(graph.model, x, y)
    return np.array([_mean_ce(zero_groups(graph, [g]), x, y) - base for g in groups])


def _setup(builder, n=24, seed=0):
    model = randomize(builder(), seed=seed, bias_scale=0.2)
    data = FakeData(model.input_shape[1:], model.output_shape[-1], num_train=n, seed=seed)
    return analyze(model), data.x, data.y


@pytest.fixture(scope="module")
def lenet5_case():
    graph, x, y = _setup(lambda: lenet5(), n=16)
    return graph, x, y, oracle_scores(graph, x, y)


@pytest.mark.parametrize("builder", [residual_model, depthwise_model, concat_model],
                         ids=["residual", "depthwise_bn", "concat"])
def test_oracle_equals_brute_force_all_groups(builder):
    graph, x, y = _setup(builder)
    scores = oracle_scores(graph, x, y)
    assert scores.shape == (graph.num_groups,)
    expected = _brute_force(graph, x, y, range(graph.num_groups))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert np.any(np.abs(expected) > 1e-4)   # the test is not vacuous


def test_oracle_on_lenet5(lenet5_case):
    graph, x, y, scores = lenet5_case
    rng = np.random.default_rng(0)
    groups = np.concatenate([rng.choice(b.groups, size=5, replace=False) for b in graph.blocks])
    expected = _brute_force(graph, x, y, groups)
    np.testing.assert_allclose(scores[groups], expected, rtol=0, atol=1e-5)
    assert np.any(np.abs(expected) > 1e-4)


def _chunk_memory(graph, n):
    """memory_bytes whose halves each hold the layer outputs of ``n`` examples (4 bytes a
    value): oracle_scores then runs min(n, len(x)) examples a pass, with n // that many
    groups stacked in each re-evaluation."""
    from epkd_tf.activations import activation_values
    return 2 * 4 * activation_values(graph.model) * n


@pytest.mark.parametrize("n", [48, 10_000])
def test_chunking_gives_same_result(lenet5_case, n):
    """Stacked groups (48: the 16 examples in one pass, 3 groups per re-evaluation) only
    regroup per-example sums."""
    graph, x, y, scores = lenet5_case
    np.testing.assert_allclose(oracle_scores(graph, x, y, memory_bytes=_chunk_memory(graph, n)),
                               scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [1, 5])
def test_oracle_bounds_the_examples_of_one_pass(n, forward_passes):
    """A memory bound smaller than the sample's layer outputs splits the examples (seen
    by the forward pass) and re-evaluates one group at a time: same scores."""
    graph, x, y = _setup(residual_model)
    full = oracle_scores(graph, x, y)
    forward_passes.clear()
    got = oracle_scores(graph, x, y, memory_bytes=_chunk_memory(graph, n))
    assert forward_passes == [n] * (len(x) // n) + ([len(x) % n] if len(x) % n else [])
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-6)


def test_oracle_pruner_uses_context_sample():
    graph, _, _ = _setup(residual_model)
    data = FakeData((8, 8, 2), 3, num_train=30, seed=4)
    ctx = PruningContext(data, PruningConfig(), seed=3, batch_size=8)
    scores = make_pruner("oracle", examples=12).score(graph, ctx)
    x, y = data.sample(12, seed=3)
    # The pruner ranks by |loss change| ("oracle-abs"); oracle_scores keeps the sign.
    expected = _brute_force(graph, x, y, range(graph.num_groups))
    np.testing.assert_allclose(scores, np.abs(expected), rtol=0, atol=1e-5)
    assert np.any(expected < 0) and np.any(expected > 0)
    assert make_pruner("oracle").reference
