"""A latency model: a pruned model's batch-1 LiteRT latency predicted from its layers'
widths, each layer's latency measured on the runtime itself.

Pruning plans compare thousands of candidate widths; measuring each would take minutes.
Instead every costed layer (Dense, convolutions, depthwise and normalisation layers; the
same per-layer knowledge as MACs, ``epkd_tf.graph.rules``) is rebuilt alone at a few
widths, converted to TFLite in the run's format and timed on LiteRT with the run's
threads; a non-negative least-squares fit

    t(kept_in, kept_out) = a + b · MACs(kept_in, kept_out) + c · kept_in + d · kept_out

then predicts it at any width (non-negative coefficients: a narrower layer is never
predicted slower, which the plan's search relies on). Fits are cached per layer shape
(class, configuration without the width, input size) for the whole run. What the layers
alone do not see (the interpreter's fixed cost, pooling, fused activations, cache effects)
is one offset, calibrated per iteration so that the model predicts the current student's
measured latency exactly; candidates are then measured for real and both figures are kept
(``candidates.csv``: ``cost`` vs ``predicted_cost``).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Optional, Tuple

import numpy as np

# Widths (fractions of the layer's widths when it was first seen) timed per layer.
GRID: Tuple[Tuple[float, float], ...] = ((1.0, 1.0), (0.5, 1.0), (1.0, 0.5), (0.5, 0.5),
                                         (0.25, 0.25), (0.125, 0.125))


class LatencyModel:
    """Per-layer latency fits on LiteRT for one TFLite ``fmt`` (``tflite`` or
    ``tflite_int8``) and number of ``threads``; ``runs`` timed invokes per point."""

    def __init__(self, fmt: str = "tflite", threads: int = 1, runs: int = 30,
                 seed: int = 0):
        self.fmt, self.threads, self.runs, self.seed = fmt, threads, runs, seed
        self._fits: Dict[str, Callable[[int, int], float]] = {}
        #: Seconds spent measuring layers (timed apart by the caller if it wants).
        self.points_measured = 0

    def layer_ms(self, layer, rule, kept_in: int, kept_out: int) -> float:
        """Predicted milliseconds of ``layer`` with ``kept_in`` input channels and
        ``kept_out`` output units (producers) or channels."""
        if kept_in <= 0 or kept_out <= 0:
            return 0.0
        key = _signature(layer, rule)
        if key not in self._fits:
            self._fits[key] = self._fit(layer, rule)
        return self._fits[key](kept_in, kept_out)

    def _fit(self, layer, rule) -> Callable[[int, int], float]:
        from scipy.optimize import nnls
        cin = int(layer.input_shape[-1])
        cout = int(layer.output_shape[-1]) if rule.produces else cin
        points, times = set(), []
        for fin, fout in GRID:
            kin = max(1, int(round(cin * fin)))
            kout = max(1, int(round(cout * fout))) if rule.produces else kin
            points.add((kin, kout))
        points = sorted(points)
        rows = []
        for kin, kout in points:
            times.append(self.measure(layer, rule, kin, kout))
            rows.append(_features(layer, rule, kin, kout))
        a, b = np.array(rows, dtype=np.float64), np.array(times, dtype=np.float64)
        scale = np.maximum(np.abs(a).max(axis=0), 1e-12)
        coef, _ = nnls(a / scale, b)
        coef = coef / scale

        def predict(kin: int, kout: int, coef=coef) -> float:
            return float(np.dot(_features(layer, rule, kin, kout), coef))

        return predict

    def measure(self, layer, rule, kept_in: int, kept_out: int) -> float:
        """Median batch-1 milliseconds of ``layer`` alone at these widths on LiteRT."""
        from epkd_tf.deploy import tflite as metrics
        model = single_layer_model(layer, rule, kept_in, kept_out)
        representative = None
        if self.fmt == "tflite_int8":
            shape = (16,) + tuple(model.input_shape[1:])
            representative = np.random.default_rng(self.seed).random(shape, dtype=np.float32)
        flatbuffer = metrics.to_tflite(model, self.fmt, representative)
        self.points_measured += 1
        return metrics.tflite_latency(flatbuffer, runs=self.runs, warmup=5,
                                      threads=self.threads, seed=self.seed)[0]


def _features(layer, rule, kin: int, kout: int) -> np.ndarray:
    return np.array([1.0, float(rule.macs(layer, kin, kout)), float(kin), float(kout)])


def _signature(layer, rule) -> str:
    """What a layer's latency depends on besides its widths."""
    config = dict(layer.get_config())
    for key in ("name", "trainable", rule.width_key):
        config.pop(key, None)
    return repr((type(layer).__name__, tuple(layer.input_shape[1:-1]), sorted(
        (k, repr(v)) for k, v in config.items())))


def single_layer_model(layer, rule, kept_in: int, kept_out: int):
    """``layer``'s class and configuration alone, at ``kept_in`` input channels and
    ``kept_out`` units (producers), on an input of the layer's own spatial size; random
    weights (latency does not depend on their values)."""
    import tf_keras
    config = copy.deepcopy(layer.get_config())
    config["name"] = f"timed_{layer.name}"
    if rule.produces:
        config = rule.set_width(config, kept_out)
    inputs = tf_keras.Input(tuple(layer.input_shape[1:-1]) + (int(kept_in),))
    clone = type(layer).from_config(config)
    return tf_keras.Model(inputs, clone(inputs))


def latency_cost(graph, model: LatencyModel, measured_ms: Optional[float] = None):
    """A :class:`~epkd_tf.graph.count.LayerwiseCost` predicting ``graph.model``'s pruned
    versions' latency in ms; ``measured_ms`` (the model's measured latency) calibrates the
    offset so that the full model is predicted exactly."""
    from epkd_tf.graph.count import LayerwiseCost
    cost = LayerwiseCost(graph, model.layer_ms)
    if measured_ms is not None:
        cost.offset = float(measured_ms) - cost.full()
    return cost
