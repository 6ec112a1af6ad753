"""What a model costs: parameters, file size and batch-1 CPU latency (TFLite, LiteRT).

Definitions used in every CSV of a run (also in README.md):

* ``nonzero_params`` — weights that are not exactly zero (what a sparse format stores);
* ``total_params`` — every weight of the Keras model, zeros included;
* ``size_mb`` — bytes of the float32 TFLite flatbuffer / 1e6 (the file a device ships;
  zeros of magnitude-pruned models still take space there — see ``gzip_mb``);
* ``gzip_mb`` — the same file gzip-compressed (level 9) / 1e6, where zeros do compress;
* ``latency_ms`` — median wall time of one ``invoke()`` of that TFLite file on one input
  (batch 1) with the LiteRT interpreter on one CPU thread, over ``runs`` timed runs after
  ``warmup`` untimed ones.
"""
from __future__ import annotations

import dataclasses
import gzip
import time

import numpy as np
import tensorflow as tf

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf.graph import dense_params, nonzero_params


def make_interpreter(model_bytes: bytes, num_threads: int = 1):
    """A LiteRT interpreter (``ai-edge-litert``); ``tf.lite.Interpreter`` only if it is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the dependency is declared in setup.py
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def to_tflite(model: tf_keras.Model) -> bytes:
    """Float32 TFLite flatbuffer of ``model`` (batch dimension left dynamic)."""
    spec = tf.TensorSpec([None] + list(model.input_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def serve(x):
        return model(x, training=False)

    # The converter needs an object that tracks the variables. Given the Keras model it
    # first saves the whole model as a SavedModel (tracing every layer); a bare module that
    # holds only the weights gives the same flatbuffer 4-5x faster on deep networks.
    holder = tf.Module()
    holder.variables_to_convert = list(model.weights)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], holder)
    return converter.convert()


def tflite_latency_ms(model_bytes: bytes, runs: int = 50, warmup: int = 10,
                      num_threads: int = 1, seed: int = 0) -> float:
    """Median batch-1 ``invoke()`` time in milliseconds (see module docstring)."""
    interpreter = make_interpreter(model_bytes, num_threads)
    detail = interpreter.get_input_details()[0]
    shape = [1] + [int(d) for d in detail["shape"][1:]]
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    interpreter.set_tensor(detail["index"], x)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


@dataclasses.dataclass(frozen=True)
class Costs:
    nonzero_params: int
    total_params: int
    size_mb: float
    gzip_mb: float
    latency_ms: float


def measure_costs(model: tf_keras.Model, runs: int = 50, tflite: bytes = None) -> Costs:
    """Parameters, TFLite size and latency of ``model``."""
    tflite = tflite if tflite is not None else to_tflite(model)
    return Costs(nonzero_params=nonzero_params(model), total_params=dense_params(model),
                 size_mb=len(tflite) / 1e6, gzip_mb=len(gzip.compress(tflite, 9)) / 1e6,
                 latency_ms=tflite_latency_ms(tflite, runs=runs))


def multiply_accumulates(model: tf_keras.Model) -> int:
    """Multiply-accumulates of one forward pass on one example (FLOPs ≈ 2 × MACs).

    Counts the layers that dominate inference: Dense (per position it is applied at),
    ConvND, DepthwiseConv2D and SeparableConv2D. Element-wise layers, pooling and
    normalisation are left out.
    """
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D",
                        "SeparableConv2D"):
            continue
        out_shape = layer.output_shape
        positions = int(np.prod(out_shape[1:-1], dtype=np.int64))   # spatial (1 for Dense)
        weights = {w.name.split("/")[-1].split(":")[0]: w for w in layer.weights}
        if kind == "SeparableConv2D":
            depthwise = weights["depthwise_kernel"].shape
            pointwise = weights["pointwise_kernel"].shape
            total += positions * int(np.prod(depthwise)) + positions * int(np.prod(pointwise))
        else:
            kernel = weights.get("depthwise_kernel", weights.get("kernel"))
            total += positions * int(np.prod(kernel.shape))
    return int(total)


def weighted_score(train_accuracy: float, test_accuracy: float, weights) -> float:
    """(w_train · train + w_test · test) / (w_train + w_test); the candidates' ranking key."""
    w_train, w_test = weights
    return (w_train * train_accuracy + w_test * test_accuracy) / (w_train + w_test)
