"""Costs: parameter counts, TFLite conversion, latency and the ranking score."""
import gzip

import numpy as np
import pytest

from epkd_tf.deploy import tflite as metrics
from epkd_tf.models import build_model


@pytest.fixture(scope="module")
def lenet():
    return build_model("lenet5", (16, 16, 1), 10)


@pytest.mark.integration
def test_tflite_float_matches_keras(lenet):
    interpreter = metrics.make_interpreter(metrics.to_tflite(lenet))
    x = np.random.default_rng(0).random((1, 16, 16, 1), dtype=np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, lenet(x).numpy(), atol=1e-4)


@pytest.mark.integration
def test_costs_count_zeros_separately(lenet):
    weights = lenet.get_weights()
    weights[0][...] = 0.0                      # conv1 kernel all zero
    lenet.set_weights(weights)
    tflite = metrics.to_tflite(lenet)
    costs = metrics.measure_costs(lenet, runs=3, tflite=tflite)
    dense = sum(w.size for w in weights)
    assert costs.total_params == dense
    assert costs.nonzero_params == sum(int(np.count_nonzero(w)) for w in weights)
    assert costs.size_mb == len(tflite) / 1e6
    assert costs.gzip_mb == pytest.approx(len(gzip.compress(tflite, 6)) / 1e6)
    assert costs.latency_ms > 0


@pytest.mark.unit
def test_weighted_score():
    from epkd_tf.selection import weighted_score
    assert weighted_score(0.9, 0.8, (1, 3)) == pytest.approx((0.9 + 2.4) / 4)
    assert weighted_score(0.9, 0.8, (0, 1)) == pytest.approx(0.8)


@pytest.mark.unit
def test_multiply_accumulates_by_hand():
    from epkd_tf.budget import multiply_accumulates
    import tf_keras
    # LeNet-5 on 28x28: conv1 24·24·5·5·1·20, conv2 8·8·5·5·20·50, fc1 800·500, logits 500·10
    lenet5 = build_model("lenet5", (28, 28, 1), 10)
    assert multiply_accumulates(lenet5) == (24 * 24 * 25 * 20 + 8 * 8 * 25 * 20 * 50
                                                    + 800 * 500 + 500 * 10)
    inputs = tf_keras.Input((8, 8, 4))
    x = tf_keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(inputs)
    x = tf_keras.layers.SeparableConv2D(6, 3, padding="same")(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(5)(x))
    depthwise = 4 * 4 * 3 * 3 * 4 * 2
    separable = 4 * 4 * 3 * 3 * 8 + 4 * 4 * 8 * 6
    dense = 4 * 4 * 6 * 5                     # Dense applied at every spatial position
    assert multiply_accumulates(model) == depthwise + separable + dense


def _dense_file(units: int, inputs: int) -> bytes:
    import tf_keras
    x = tf_keras.Input((inputs,))
    return metrics.to_tflite(tf_keras.Model(x, tf_keras.layers.Dense(units)(x)))


@pytest.mark.integration
def test_side_by_side_latency_interleaves_every_model_in_each_round(monkeypatch):
    """Each round times every model in turn (so a busy stretch of the machine falls on all
    of them), ``runs // rounds`` invokes each; one (median, p90) per model, in order."""
    small, big = _dense_file(2, 4), _dense_file(512, 1024)
    order, timed = [], metrics._timed_invokes

    def spy(interpreter, runs):
        order.append((id(interpreter), runs))
        return timed(interpreter, runs)

    monkeypatch.setattr(metrics, "_timed_invokes", spy)
    result = metrics.tflite_latency_side_by_side([small, big], runs=40, rounds=4)
    assert len(result) == 2 and all(0 < median <= p90 for median, p90 in result)
    first, second = order[0][0], order[1][0]
    assert first != second
    assert order == [(first, 10), (second, 10)] * 4
    # ~0.5M multiply-accumulates against 8: the big file is timed slower.
    assert result[1][0] > result[0][0]
    assert metrics.tflite_latency_side_by_side([]) == []
    # More rounds than runs: one invoke per round.
    order.clear()
    metrics.tflite_latency_side_by_side([small], runs=2, rounds=5)
    assert [runs for _, runs in order] == [1, 1]
