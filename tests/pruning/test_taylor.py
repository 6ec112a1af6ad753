"""Tests for the first-order Taylor criterion against a hand (NumPy) computation."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import FakeData, mlp_model, randomize  # noqa: E402

from epkd_tf.config import PruningConfig  # noqa: E402
from epkd_tf.settings import with_flags  # noqa: E402
from epkd_tf.graph import analyze  # noqa: E402
from epkd_tf.pruning import PruningContext, make_pruner  # noqa: E402
from epkd_tf.pruning.taylor import taylor_scores  # noqa: E402

pytestmark = pytest.mark.unit


def _numpy_taylor(model, x, y, batch_size):
    """Per-unit Taylor scores by explicit NumPy backprop of the summed cross-entropy."""
    (w1, b1), (w2, b2), (w3, b3) = [model.get_layer(n).get_weights()
                                    for n in ("h1", "h2", "logits")]
    w1, b1, w2, b2, w3, b3 = [np.asarray(a, np.float64) for a in (w1, b1, w2, b2, w3, b3)]
    total1, total2, batches = np.zeros(len(b1)), np.zeros(len(b2)), 0
    for start in range(0, len(x), batch_size):
        xb = np.asarray(x[start:start + batch_size], np.float64)
        yb = y[start:start + batch_size]
        a1 = xb @ w1 + b1
        z1 = np.maximum(a1, 0)
        a2 = z1 @ w2 + b2
        z2 = np.maximum(a2, 0)
        logits = z2 @ w3 + b3
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dlogits = p - np.eye(w3.shape[1])[yb]          # d(sum of CE)/d logits, per example
        g2 = dlogits @ w3.T                              # dL/dz2
        g1 = (g2 * (a2 > 0)) @ w2.T                      # dL/dz1
        total1 += np.abs((z1 * g1).mean(axis=0))
        total2 += np.abs((z2 * g2).mean(axis=0))
        batches += 1
    return total1 / batches, total2 / batches


def _tape_taylor(model, x, y, batch_size):
    """The same with an independent GradientTape on a plain Keras forward pass."""
    layers = {n: model.get_layer(n) for n in ("h1", "h2", "logits")}
    relu = tf.nn.relu
    t1, t2, batches = 0.0, 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        with tf.GradientTape() as tape:
            z1 = relu(layers["h1"](xb))
            tape.watch(z1)
            z2 = relu(layers["h2"](z1))
            tape.watch(z2)
            logits = layers["logits"](z2)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
        g1, g2 = tape.gradient(loss, [z1, z2])
        t1 = t1 + np.abs(tf.reduce_mean(z1 * g1, axis=0).numpy())
        t2 = t2 + np.abs(tf.reduce_mean(z2 * g2, axis=0).numpy())
        batches += 1
    return t1 / batches, t2 / batches


def _data(n=40, seed=0):
    data = FakeData((4,), 3, num_train=n, batch_size=8, seed=seed)
    data.x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    return data


@pytest.fixture(params=[True, False], ids=["separate_relu", "dense_activation"])
def model(request):
    model = mlp_model(seed=1, separate_relu=request.param)
    return randomize(model, seed=1, bias_scale=0.3)


def _by_layer(graph, scores):
    return [scores[graph.group_of_unit[graph.layer(n).units]] for n in ("h1", "h2")]


@pytest.mark.parametrize("batch_size", [8, 7, 40])
def test_taylor_scores_match_hand_computation(model, batch_size):
    data = _data()
    x, y = data.x[:20], data.y[:20]
    graph = analyze(model)
    assert graph.num_groups == 11
    got1, got2 = _by_layer(graph, taylor_scores(graph, x, y, batch_size))
    ref1, ref2 = _numpy_taylor(model, x, y, batch_size)
    np.testing.assert_allclose(got1, ref1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got2, ref2, rtol=1e-4, atol=1e-7)
    tape1, tape2 = _tape_taylor(model, x, y, batch_size)
    np.testing.assert_allclose(got1, tape1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got2, tape2, rtol=1e-4, atol=1e-7)
    # Some ReLUs are inactive, so some units score exactly zero, others not.
    assert np.all(got1 >= 0) and np.any(got1 > 0) and np.any(got2 > 0)


_NORMALISERS = {"l2": np.linalg.norm, "mean": np.mean, "none": lambda raw: 1.0}


@pytest.mark.parametrize("normalization", sorted(_NORMALISERS))
def test_taylor_pruner_normalises_per_layer(model, normalization):
    data = _data()
    # The criterion's own settings (--taylor_batches, --taylor_normalization) travel
    # with the config.
    cfg = with_flags(PruningConfig(), taylor_batches=3, taylor_normalization=normalization)
    ctx = PruningContext(data, cfg, seed=0, batch_size=8)
    graph = analyze(model)
    scores = cfg.criteria["taylor"].score(graph, ctx)
    x, y = data.sample(24, seed=0)
    ref = _numpy_taylor(model, x, y, 8)
    for got, raw in zip(_by_layer(graph, scores), ref):
        np.testing.assert_allclose(got, raw / _NORMALISERS[normalization](raw),
                                   rtol=1e-4, atol=1e-7)
        if normalization == "l2":
            np.testing.assert_allclose(np.linalg.norm(got), 1.0, rtol=1e-6)
        elif normalization == "mean":
            np.testing.assert_allclose(np.mean(got), 1.0, rtol=1e-6)


def test_taylor_normalization_defaults_to_mean():
    # Measured in BENCHMARKS.md (quality factors): mean-normalised Taylor keeps
    # the accuracy of L2 with fewer MACs at 10x on LeNet-5.
    assert PruningConfig().criteria["taylor"].normalization == "mean"


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_taylor_chunks_do_not_change_scores(model, chunk, forward_passes):
    """A memory bound splits each batch into chunks of examples (seen by the forward
    pass) whose sums add up to the whole batch's: same scores as unbounded."""
    from epkd_tf.activations import activation_values
    data = _data()
    x, y = data.x[:20], data.y[:20]
    graph = analyze(model)
    whole = taylor_scores(graph, x, y, 8)
    forward_passes.clear()
    # Two copies (outputs and gradients) of 4-byte values for `chunk` examples.
    memory = 2 * 4 * activation_values(model) * chunk
    got = taylor_scores(graph, x, y, 8, memory_bytes=memory)
    expected_passes = []
    for start in range(0, 20, 8):
        size = min(8, 20 - start)
        expected_passes += [min(chunk, size - first) for first in range(0, size, chunk)]
    assert forward_passes == expected_passes
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-8)
