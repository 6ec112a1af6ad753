"""Every registered pruner meets the same nonzero-parameter budget and leaves its input alone."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import sys
from pathlib import Path

import numpy as np
import pytest
import tf_keras

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import FakeData, lenet300_100, random_inputs, randomize  # noqa: E402

from epkd_tf.config import PruningConfig  # noqa: E402
from epkd_tf.settings import with_flags  # noqa: E402
from epkd_tf.graph import dense_params, nonzero_params  # noqa: E402
from epkd_tf.pruning import (Candidate, Pruner, PruningContext, make_pruner,  # noqa: E402
                             pruner_names)

INPUT = (8, 8, 1)
ONE_UNIT = 64 + 1 + 100      # largest unit of lenet300_100 on 8x8 inputs: an fc1 neuron


@pytest.fixture(scope="module")
def setting():
    model = randomize(lenet300_100(input_shape=INPUT, seed=0), seed=0)
    data = FakeData(INPUT, 10, num_train=512, batch_size=64, seed=0)
    # One quick epoch so that the criteria see a trained-ish network.
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.train(), epochs=1, verbose=0)
    config = with_flags(PruningConfig(), pruners=tuple(pruner_names()), layer_floor=0.1,
                        taylor_batches=2, oracle_examples=128, magnitude_epochs=1)
    ctx = PruningContext(data, config, seed=0, batch_size=64, learning_rate=1e-3)
    target = int(0.9 * nonzero_params(model))
    return model, ctx, target, {}


def _tolerance(target):
    return max(int(0.01 * target), ONE_UNIT)


@pytest.mark.unit
def test_registry_names():
    names = pruner_names()
    assert names == sorted(names)
    assert {"l1_filter", "taylor", "oracle", "poly_magnitude"} <= set(names)
    with pytest.raises(ValueError, match="unknown pruner"):
        make_pruner("no_such_pruner")
    for name in names:
        pruner = make_pruner(name)
        assert isinstance(pruner, Pruner) and pruner.name == name


@pytest.mark.integration
@pytest.mark.parametrize("name", pruner_names())
def test_candidate_meets_budget(setting, name):
    model, ctx, target, candidates = setting
    before = [(v.name, v.numpy().copy()) for v in model.weights]
    layer_types = [type(layer) for layer in model.layers]
    x = random_inputs(model, n=4, seed=0)
    out_before = model(x).numpy()

    candidate = ctx.config.criteria[name].make_candidate(model, target, ctx)
    candidates[name] = candidate
    assert isinstance(candidate, Candidate) and candidate.pruner == name

    # The input model is untouched: same layers, bit-identical weights, same outputs.
    assert [type(layer) for layer in model.layers] == layer_types
    after = [(v.name, v.numpy()) for v in model.weights]
    assert [n for n, _ in after] == [n for n, _ in before]
    for (_, a), (_, b) in zip(before, after):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model(x).numpy(), out_before)

    pruned = candidate.model
    assert pruned is not model
    assert abs(nonzero_params(pruned) - target) <= _tolerance(target)
    assert pruned.output_shape == model.output_shape
    assert np.all(np.isfinite(pruned(x).numpy()))
    if candidate.structured:
        assert dense_params(pruned) < dense_params(model)
        # No zeros in the (dense) input, so none in the physically smaller candidate.
        assert dense_params(pruned) == nonzero_params(pruned)
        assert candidate.scores is not None and candidate.graph is not None
    else:
        # Magnitude pruning keeps every shape and stores exact zeros instead.
        assert [w.shape for w in pruned.get_weights()] == [w.shape for w in model.get_weights()]
        assert dense_params(pruned) == dense_params(model)
        assert nonzero_params(pruned) <= target
        zeros = sum(int(np.sum(w == 0)) for w in pruned.get_weights())
        assert zeros >= dense_params(model) - target
        assert all(not type(la).__name__.startswith("PruneLowMagnitude")
                   for la in pruned.layers)


@pytest.mark.integration
def test_candidates_agree_with_each_other(setting):
    model, ctx, target, candidates = setting
    for name in pruner_names():
        if name not in candidates:      # e.g. when run with -k
            candidates[name] = ctx.config.criteria[name].make_candidate(model, target, ctx)
    counts = {name: nonzero_params(c.model) for name, c in candidates.items()}
    assert max(counts.values()) - min(counts.values()) <= _tolerance(target), counts
    structured = [n for n, c in candidates.items() if c.structured]
    assert "poly_magnitude" not in structured
    assert {"l1_filter", "taylor", "oracle"} <= set(structured)


@pytest.mark.integration
@pytest.mark.parametrize("name", pruner_names())
def test_pruners_time_their_phases_on_the_run_clock(setting, name):
    import contextlib
    import dataclasses
    model, ctx, target, _ = setting
    seen = []

    @contextlib.contextmanager
    def clock(phase, pruner):
        seen.append((phase, pruner))
        yield

    ctx.config.criteria[name].make_candidate(model, target,
                                             dataclasses.replace(ctx, clock=clock))
    phases = {p for p, _ in seen}
    assert {pruner for _, pruner in seen} == {name}
    expected = ({"surgery", "magnitude_finetune"} if name == "poly_magnitude"
                else {"scoring", "surgery"})
    assert phases == expected
