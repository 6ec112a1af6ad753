"""Tests for the TF-MOT helpers of the poly_magnitude pruner."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers_models import mlp_model, randomize  # noqa: E402

from epkd_tf.graph import nonzero_params  # noqa: E402
from epkd_tf.pruning.magnitude import _prunable_kernels, schedule_steps, trim_to  # noqa: E402


def _mask_update_steps(total_steps, end_step, frequency, begin_step=0):
    """TF-MOT's rule. The wrapper increments its step before the mask update, so during
    ``total_steps`` training steps the schedule sees steps 1 .. total_steps."""
    return [s for s in range(1, total_steps + 1)
            if s >= begin_step and s <= end_step and (s - begin_step) % frequency == 0]


@pytest.mark.unit
@pytest.mark.parametrize("total", [1, 2, 3, 10, 469, 4690])
def test_last_mask_update_lands_on_end_step(total):
    end_step, frequency = schedule_steps(total)
    assert isinstance(end_step, int) and isinstance(frequency, int)
    assert frequency >= 1 and 1 <= end_step <= total
    updates = _mask_update_steps(total, end_step, frequency)
    assert updates, "the mask is never updated"
    assert updates[-1] == end_step
    assert len(updates) <= 10
    if total >= 12:
        assert len(updates) == 10      # the full ramp of mask updates


@pytest.mark.integration
@pytest.mark.parametrize("total", [1, 3])
def test_schedule_reaches_final_sparsity_in_tfmot(total):
    """End to end: a PolynomialDecay built from schedule_steps reaches its final sparsity."""
    sparsity = tfmot.sparsity.keras
    end_step, frequency = schedule_steps(total)
    model = mlp_model(seed=0, sizes=(8,), num_inputs=6)
    schedule = sparsity.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=end_step,
                                        frequency=frequency)
    wrapped = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    wrapped.compile(optimizer="sgd",
                    loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * total, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=4 * total).astype(np.int32)
    wrapped.fit(x, y, batch_size=4, epochs=1, verbose=0,
                callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(wrapped)
    kernel = stripped.get_layer("h1").get_weights()[0]
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)


def _distinct_model():
    """Kernels with distinct magnitudes (no ties) and a few exact zeros already."""
    model = randomize(mlp_model(seed=2, sizes=(6, 5)), seed=2)
    rng = np.random.default_rng(2)
    n_kernel = sum(model.get_layer(n).get_weights()[0].size for n in ("h1", "h2", "logits"))
    magnitudes = rng.permutation(np.arange(1, n_kernel + 1)) / n_kernel
    offset = 0
    for name in ("h1", "h2", "logits"):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        values = magnitudes[offset:offset + kernel.size] * rng.choice([-1, 1], kernel.size)
        offset += kernel.size
        values[:2] = 0.0
        layer.set_weights([values.reshape(kernel.shape).astype(np.float32), bias])
    return model


@pytest.mark.unit
@pytest.mark.parametrize("excess", [0, 1, 7, 30])
def test_trim_to_removes_smallest_excess(excess):
    model = _distinct_model()
    kernels = _prunable_kernels(model)
    assert sorted(kernels) == [("h1", 0), ("h2", 0), ("logits", 0)]
    before = {name: [w.copy() for w in model.get_layer(name).get_weights()]
              for name in ("h1", "h2", "logits")}
    target = nonzero_params(model) - excess
    trim_to(model, kernels, target)
    assert nonzero_params(model) == target
    # The zeroed weights are exactly the `excess` smallest nonzero kernel magnitudes.
    all_nonzero = np.sort(np.concatenate([np.abs(b[0][b[0] != 0]) for b in before.values()]))
    smallest = set(all_nonzero[:excess].tolist())
    for name, old in before.items():
        new = model.get_layer(name).get_weights()
        np.testing.assert_array_equal(new[1], old[1])                  # biases untouched
        changed = new[0] != old[0]
        assert np.all(new[0][changed] == 0)
        assert set(np.abs(old[0][changed]).tolist()) <= smallest
        # Nonzero weights that stayed are all larger than every removed one.
        if excess:
            kept = np.abs(new[0][new[0] != 0])
            assert np.all(kept > all_nonzero[excess - 1])
    removed = sum(int(np.sum(model.get_layer(n).get_weights()[0] != b[0]))
                  for n, b in before.items())
    assert removed == excess


@pytest.mark.unit
def test_trim_to_below_target_is_a_no_op():
    model = _distinct_model()
    before = [w.copy() for w in model.get_weights()]
    trim_to(model, _prunable_kernels(model), nonzero_params(model) + 5)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.unit
def test_trim_to_with_ties_removes_exactly_excess():
    model = mlp_model(seed=3, sizes=(4,))
    for name in ("h1", "logits"):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([np.full_like(kernel, 0.5), bias])
    total = nonzero_params(model)
    trim_to(model, _prunable_kernels(model), total - 5)
    assert nonzero_params(model) == total - 5


@pytest.mark.integration
def test_poly_magnitude_leaves_layers_tfmot_does_not_know_unwrapped():
    """TF-MOT's prune_low_magnitude refuses a whole model holding a layer outside its
    registry (Rescaling, as MobileNetV3 and EfficientNet start with; a converted
    ConvNeXt's LayerScale); the pruner wraps only the layers it knows."""
    from helpers_models import FakeData
    from epkd_tf.config import PruningConfig
    from epkd_tf.models.keras3_layers import LayerScale
    from epkd_tf.pruning import PruningContext
    from epkd_tf.settings import with_flags

    inputs = tf_keras.Input((8, 8, 1))
    x = tf_keras.layers.Rescaling(1 / 255.0)(inputs)
    x = tf_keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = LayerScale(0.5, 8)(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = randomize(tf_keras.Model(inputs, tf_keras.layers.Dense(10)(x)), seed=0)
    data = FakeData((8, 8, 1), 10, num_train=64, batch_size=32, seed=0)
    config = with_flags(PruningConfig(), magnitude_epochs=1)
    ctx = PruningContext(data, config, seed=0, batch_size=32, learning_rate=1e-3)
    target = int(0.6 * nonzero_params(model))
    candidate = config.criteria["poly_magnitude"].make_candidate(model, target, ctx)
    pruned = candidate.model
    assert nonzero_params(pruned) <= target
    assert [type(la).__name__ for la in pruned.layers] == \
        [type(la).__name__ for la in model.layers]
    assert type(pruned.get_layer(model.layers[3].name)) is LayerScale


@pytest.mark.integration
def test_poly_magnitude_fine_tune_leaves_nothing_behind(monkeypatch):
    """The TF-MOT-wrapped copy, its masks and its optimizer's slots are freed once the
    candidate is made (they outlived every iteration through the gradient aggregation of
    Keras' Adam, see epkd_tf/optimizers.py: 0.5 GB an iteration for MobileNetV2)."""
    import gc
    import weakref
    from helpers_models import FakeData
    from epkd_tf.config import PruningConfig
    from epkd_tf.pruning import PruningContext
    from epkd_tf.pruning.magnitude import PolyMagnitudePruner
    from epkd_tf.settings import with_flags

    wrapped_models = []
    wrap = PolyMagnitudePruner._wrap

    def spy(self, model, target_nonzero, ctx):
        wrapped, kernels = wrap(self, model, target_nonzero, ctx)
        wrapped_models.append(weakref.ref(wrapped))
        return wrapped, kernels

    monkeypatch.setattr(PolyMagnitudePruner, "_wrap", spy)
    model = randomize(mlp_model(), seed=0)
    data = FakeData(model.input_shape[1:], model.output_shape[-1], num_train=64,
                    batch_size=32, seed=0)
    config = with_flags(PruningConfig(), magnitude_epochs=1)
    ctx = PruningContext(data, config, seed=0, batch_size=32, learning_rate=1e-3)
    pruner = config.criteria["poly_magnitude"]

    def make_and_drop():
        candidate = pruner.make_candidate(model, int(0.5 * nonzero_params(model)), ctx)
        wrapped = wrapped_models[-1]()
        handles = [weakref.ref(v.handle) for v in wrapped.variables
                   + wrapped.optimizer.variables]
        masks = [weakref.ref(v.handle) for v in wrapped.variables if "mask" in v.name]
        del candidate, wrapped
        return handles, masks

    handles, masks = make_and_drop()
    gc.collect()
    assert masks, "no TF-MOT mask found: the test no longer looks at the wrapped copy"
    alive = [ref for ref in handles if ref() is not None]
    assert wrapped_models[-1]() is None
    assert not alive, f"{len(alive)} of {len(handles)} variables of the fine-tune outlived it"


def _recurrent_model(kind):
    if kind == "MultiHeadAttention":
        inputs = tf_keras.Input((6, 8))
        h = tf_keras.layers.MultiHeadAttention(2, 4, name="attention")(inputs, inputs)
        return tf_keras.Model(inputs, tf_keras.layers.Dense(3)(tf_keras.layers.Flatten()(h)))
    layer = getattr(tf_keras.layers, kind)(16, name="recurrent")
    return tf_keras.Sequential([tf_keras.Input((6, 8)), layer, tf_keras.layers.Dense(3)])


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN", "MultiHeadAttention"])
def test_the_kernels_of_recurrent_and_attention_layers_are_found(kind):
    """TF-MOT prunes a recurrent layer's cell kernels (input and recurrent) and an
    attention layer's projection kernels: those, and no bias, are what poly_magnitude
    prunes (it raised KeyError on LSTM/GRU/SimpleRNN)."""
    model = _recurrent_model(kind)
    found = {model.get_layer(name).weights[i].name for name, i in _prunable_kernels(model)}
    kernels = {w.name for w in model.weights if "kernel" in w.name.split("/")[-1]}
    assert found == kernels
    if kind != "MultiHeadAttention":
        assert any("recurrent_kernel" in name for name in found)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_poly_magnitude_prunes_a_recurrent_model_to_its_target(kind):
    from epkd_tf import api
    model = randomize(_recurrent_model(kind))
    x = np.random.default_rng(0).random((64, 6, 8)).astype("float32")
    y = np.arange(64) % 3
    target = nonzero_params(model) // 2
    pruned = api.prune(model, target, criterion="poly_magnitude", data=(x, y))
    assert nonzero_params(pruned) <= target
    recurrent = pruned.get_layer("recurrent").cell.recurrent_kernel.numpy()
    assert 0 < np.mean(recurrent == 0) < 1
