"""Model-comparison metrics against direct NumPy computations."""
import math

import numpy as np
import pytest

from epkd_tf.study import compare

pytestmark = pytest.mark.unit


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_metrics_equal_numpy():
    rng = np.random.default_rng(0)
    p_a, p_b = softmax(rng.normal(size=(500, 10))), softmax(rng.normal(size=(500, 10)))
    differ = sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(p_a, p_b))
    assert compare.n_differ(p_a, p_b) == differ
    assert math.isclose(compare.agreement(p_a, p_b), 1 - differ / 500)
    squared = sum(float(((a - b) ** 2).sum()) for a, b in zip(p_a, p_b))
    assert math.isclose(compare.l2_distance(p_a, p_b), math.sqrt(squared), rel_tol=1e-12)
    assert compare.n_differ(p_a, p_a) == 0 and compare.l2_distance(p_a, p_a) == 0
    # Bound: two one-hot outputs that disagree everywhere are sqrt(2 n) apart.
    one_hot = np.eye(10)[np.arange(500) % 10]
    assert math.isclose(compare.l2_distance(one_hot, np.roll(one_hot, 1, axis=1)),
                        math.sqrt(1000))


def test_weight_distance_only_for_equal_architectures():
    rng = np.random.default_rng(1)
    a = [rng.normal(size=(4, 3)), rng.normal(size=3)]
    b = [rng.normal(size=(4, 3)), rng.normal(size=3)]
    expected = math.sqrt(((a[0] - b[0]) ** 2).sum() + ((a[1] - b[1]) ** 2).sum())
    assert math.isclose(compare.weight_l2_distance(a, b), expected)
    assert math.isnan(compare.weight_l2_distance(a, [rng.normal(size=(4, 2)), b[1]]))
    assert math.isnan(compare.weight_l2_distance(a, a[:1]))


def test_compare_all_lists_every_pair_once():
    rng = np.random.default_rng(2)
    probs = {name: softmax(rng.normal(size=(50, 4))) for name in ["t", "a", "b"]}
    weights = {"t": [np.zeros((2, 2))], "a": [np.ones((2, 2))], "b": [np.ones((3, 2))]}
    frame = compare.compare_all(0.5, probs, weights.__getitem__)
    assert list(zip(frame.model_a, frame.model_b)) == [("t", "a"), ("t", "b"), ("a", "b")]
    row = frame.iloc[0]
    assert row.n_differ == compare.n_differ(probs["t"], probs["a"])
    assert row.weight_l2_distance == 2.0
    assert math.isnan(frame.iloc[1].weight_l2_distance)
    assert (frame.fraction_removed == 0.5).all()
