"""Magnitude pruning of the study's iterative methods, against NumPy."""
import numpy as np
import pytest

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf.graph import nonzero_params
from epkd_tf.models import build_model
from epkd_tf.study import sparsity


def small_model(seed=0):
    tf_keras.utils.set_random_seed(seed)
    model = build_model("lenet300_100", (6, 6, 1), 3, width=0.1)
    # Nonzero biases, so that they visibly survive pruning.
    model.set_weights([w if w.ndim > 1 else np.full_like(w, 0.5) for w in model.get_weights()])
    return model


@pytest.mark.unit
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_prune_to_zeroes_exactly_the_smallest_kernel_weights(keep):
    model = small_model()
    before = model.get_weights()
    target = int(round(keep * nonzero_params(model)))
    removed = sparsity.prune_to(model, target)
    after = model.get_weights()
    assert nonzero_params(model) == target and removed == len(np.concatenate(
        [w.ravel() for w in before])) - target
    # Independent NumPy selection: the `removed` smallest |w| over all kernels.
    kernels = np.concatenate([np.abs(w).ravel() for w in before if w.ndim > 1])
    threshold = np.sort(kernels)[removed - 1]
    for b, a in zip(before, after):
        if b.ndim == 1:
            np.testing.assert_array_equal(a, b)        # biases untouched
        else:
            assert (np.abs(b[a == 0]) <= threshold).all()
            assert (np.abs(b[a != 0]) >= threshold).all()
            np.testing.assert_array_equal(a[a != 0], b[a != 0])


@pytest.mark.unit
def test_prune_to_counts_existing_zeros_and_refuses_the_impossible():
    model = small_model()
    sparsity.prune_to(model, nonzero_params(model) // 2)
    half = nonzero_params(model)
    assert sparsity.prune_to(model, half + 10) == 0     # already below: nothing to do
    assert sparsity.prune_to(model, half - 7) == 7
    biases = sum(w.size for w in model.get_weights() if w.ndim == 1)
    with pytest.raises(ValueError, match="cannot reach"):
        sparsity.prune_to(model, biases - 1)


@pytest.mark.unit
def test_round_targets_are_geometric_capped_and_exact():
    targets = sparsity.round_targets(1000, 400, 0.2)
    assert targets[-1] == 400 and len(targets) == 5   # 0.8^4 = 0.41 > 0.4: five rounds
    previous = 1000
    for t in targets:
        assert t >= 0.8 * previous - 1
        previous = t
    assert sparsity.round_targets(1000, 900, 0.2) == [900]
    assert sparsity.round_targets(1000, 1000, 0.2) == []


@pytest.mark.unit
def test_rewind_resets_survivors_and_keeps_the_mask():
    model = small_model()
    initial = [w * 0 + np.float32(i + 1) for i, w in enumerate(model.get_weights())]
    sparsity.prune_to(model, nonzero_params(model) // 3)
    masks = sparsity.masks(model)
    sparsity.rewind(model, initial)
    kernels = [w for w in model.get_weights() if w.ndim > 1]
    init_kernels = [w for w in initial if w.ndim > 1]
    for w, w0, m in zip(kernels, init_kernels, masks):
        np.testing.assert_array_equal(w, w0 * m)
    biases = [w for w in model.get_weights() if w.ndim == 1]
    np.testing.assert_array_equal(biases[0], [w for w in initial if w.ndim == 1][0])


@pytest.mark.integration
def test_masked_training_holds_the_mask():
    model = small_model()
    sparsity.prune_to(model, nonzero_params(model) // 4)
    zero_before = [w == 0 for w in model.get_weights()]
    masked = sparsity.MaskedClassifier(model)
    masked.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    x = np.random.default_rng(0).random((64, 6, 6, 1)).astype(np.float32)
    y = np.arange(64) % 3
    history = masked.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    for w, z in zip(model.get_weights(), zero_before):
        if w.ndim > 1:
            assert (w[z] == 0).all()
            assert (w[~z] != 0).mean() > 0.99           # the survivors did train
