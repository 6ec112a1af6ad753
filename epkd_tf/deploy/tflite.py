"""What a model costs: parameters, file size and batch-1 CPU latency (TFLite, LiteRT).

Definitions used in every CSV of a run (also in docs/outputs.md):

* ``nonzero_params`` — weights that are not exactly zero (what a sparse format stores);
* ``total_params`` — every weight of the Keras model, zeros included;
* ``size_mb`` — bytes of the float32 TFLite flatbuffer / 1e6 (the file a device ships;
  zeros of magnitude-pruned models still take space there — see ``gzip_mb``);
* ``gzip_mb`` — the same file gzip-compressed (``GZIP_LEVEL``, gzip's default 6) / 1e6,
  where zeros do compress;
* ``latency_ms`` — median wall time of one ``invoke()`` of that TFLite file on one input
  (batch 1) with the LiteRT interpreter on one CPU thread, over ``runs`` timed runs after
  ``warmup`` untimed ones.

``deployment.csv`` (deploy.py) measures every TFLite format with :func:`tflite_latency`:
median and 90th percentile, same method, on ``--tflite_threads`` threads.
"""
from __future__ import annotations

import dataclasses
import gzip
import time
from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import compat, precision
from epkd_tf.activations import chunk_examples
from epkd_tf.graph import dense_params, nonzero_params

# gzip's own default level (``gzip FILE``, ``tar czf``; zlib's default, which TF-MOT's
# pruning guide uses to measure pruned models). Level 9 makes 90%-sparse magnitude-pruned
# files ~9% smaller (dense ones <1%) but takes ~14x longer on them (long runs of zeros),
# which made compressing the exports a visible share of a run.
GZIP_LEVEL = 6


#: Examples per int8 calibration batch, and the most their intermediate tensors may take.
CALIBRATION_BATCH = 32
CALIBRATION_MEMORY = 512 * 2 ** 20


def gzip_bytes(data: bytes) -> int:
    """Size of ``data`` gzip-compressed at ``GZIP_LEVEL``."""
    return len(gzip.compress(data, GZIP_LEVEL))


def make_interpreter(model_bytes: bytes, num_threads: int = 1):
    """A LiteRT interpreter (``ai-edge-litert``); ``tf.lite.Interpreter`` only if it is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the dependency is declared in setup.py
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


# TFLite formats (deployment.csv) -> converter optimisations. tflite_int8 additionally
# needs representative data and has int8 input and output tensors (see to_tflite).
TFLITE_FORMATS = ("tflite", "tflite_sparse", "tflite_int8_dynamic", "tflite_int8")


def to_tflite(model: tf_keras.Model, fmt: str = "tflite", representative=None,
              dense_per_channel: bool = False) -> bytes:
    """TFLite flatbuffer of ``model`` (batch dimension left dynamic) in format ``fmt``:

    * ``tflite`` — float32;
    * ``tflite_sparse`` — float32 with ``Optimize.EXPERIMENTAL_SPARSITY``: weight tensors
      with enough exact zeros are stored in TFLite's sparse (CSR-like) encoding;
    * ``tflite_int8_dynamic`` — dynamic-range quantisation (``Optimize.DEFAULT``): int8
      weights, float32 activations, input and output;
    * ``tflite_int8`` — full-integer int8 (weights and activations, builtin int8 kernels
      only) calibrated on ``representative`` (float32 model inputs, first axis = examples);
      its input and output tensors are int8 too, as int8-only accelerators need: feed
      ``round(x / scale + zero_point)`` and dequantise the logits, see ``quantize_input``.
      Dense (fully connected) weights get one scale per tensor unless ``dense_per_channel``:
      per-channel scales cost 12 bytes per output unit (float scale + int64 zero point),
      about 20% of a small compressed student's int8 file, for accuracy within 0.2 points
      on the MNIST students (docs/benchmarks/deployment.md). Convolutions stay per channel.
    """
    if fmt not in TFLITE_FORMATS:
        raise ValueError(f"Unknown TFLite format {fmt!r}; choose from {', '.join(TFLITE_FORMATS)}.")
    if fmt == "tflite_int8" and representative is None:
        raise ValueError("tflite_int8 needs representative data to calibrate on.")
    # LiteRT's builtin kernels are float32 (or int8 from float32): a mixed-precision
    # model converts as its float32 copy.
    model = precision.float32_copy(model)
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
    if fmt == "tflite_sparse":
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    elif fmt == "tflite_int8_dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt == "tflite_int8":
        examples = np.asarray(representative, dtype=np.float32)
        # Batches calibrate like single examples (min/max are taken over all values) at a
        # fraction of the interpreter calls; the calibrator keeps every intermediate
        # tensor of its batch, so a batch holds at most CALIBRATION_MEMORY of them (a
        # 224 px ResNet-50's batch of 32 would hold 4.6 GB).
        batch = min(CALIBRATION_BATCH, chunk_examples(model, CALIBRATION_MEMORY))

        def calibration_batches():
            for start in range(0, len(examples), batch):
                yield [examples[start:start + batch]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration_batches
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        compat.set_dense_per_channel_quantization(converter, dense_per_channel)
    return converter.convert()


def _recurrent_layers(model) -> List[tf_keras.layers.Layer]:
    """The recurrent layers of ``model`` (an RNN, LSTM, GRU... also inside a
    Bidirectional or TimeDistributed wrapper or a nested model), in layer order."""
    found = []
    for layer in model.layers:
        inner = getattr(layer, "layer", None) or getattr(layer, "forward_layer", None)
        if isinstance(layer, tf_keras.Model):
            found += _recurrent_layers(layer)
        elif isinstance(layer, tf_keras.layers.RNN) or isinstance(inner, tf_keras.layers.RNN):
            found.append(layer)
    return found


def check_tflite_convertible(model: tf_keras.Model, subject: str) -> None:
    """Refuses, before a run, a model the float TFLite converter cannot convert: every run
    converts its teacher and students (latencies, the side-by-side timing, TFLite
    exports). Only a model with a recurrent layer is converted here (a recurrent layer
    that is not unrolled leaves tensor-list ops the builtin kernels lack); the layers of
    every other model convert, so the check costs nothing for them.

    Args:
        model: the teacher.
        subject: how the refusal names it (e.g. ``--teacher_path=t.keras``).

    Raises:
        ModelFileError: naming the first recurrent layer and the converter's reason.
    """
    from epkd_tf.errors import ModelFileError
    recurrent = _recurrent_layers(model)
    if not recurrent:
        return
    try:
        to_tflite(model)
    except Exception as err:    # the converter's own errors are many and unstable
        layer = recurrent[0]
        reason = next((line.split("error: ", 1)[1] for line in str(err).splitlines()
                       if "error: " in line), type(err).__name__)
        raise ModelFileError(
            f"{subject}: layer {layer.name!r} ({type(layer).__name__}) cannot be converted "
            f"to TFLite ({reason[:160]}), which every run needs (latencies, the "
            f"tflite exports): rebuild it with unroll=True or use another teacher.") from None


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """``x`` (float32 model input) as the interpreter input ``detail`` expects it: unchanged
    for float inputs, ``clip(round(x / scale + zero_point))`` for integer ones."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32, copy=False)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """An interpreter output as float32 (``(y - zero_point) * scale`` for integer outputs)."""
    if np.dtype(detail["dtype"]) == np.float32:
        return y
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale


def _resize_batch(interpreter, batch: int) -> None:
    detail = interpreter.get_input_details()[0]
    if int(detail["shape"][0]) != batch:
        interpreter.resize_tensor_input(detail["index"], [batch] + list(detail["shape"][1:]))
        interpreter.allocate_tensors()


def tflite_predict(interpreter, x: np.ndarray) -> np.ndarray:
    """Float32 logits of ``interpreter`` on a float32 batch ``x`` (resizing its input to the
    batch; quantising / dequantising an int8 model's input and output)."""
    _resize_batch(interpreter, len(x))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], quantize_input(x, inp))
    interpreter.invoke()
    return dequantize_output(interpreter.get_tensor(out["index"]), out)


def _latency_interpreter(model_bytes: bytes, threads: int, seed: int):
    """An interpreter of batch 1 with one seeded random input (of its input dtype) set."""
    interpreter = make_interpreter(model_bytes, threads)
    _resize_batch(interpreter, 1)
    detail = interpreter.get_input_details()[0]
    shape = [int(d) for d in detail["shape"]]
    x = quantize_input(np.random.default_rng(seed).random(shape, dtype=np.float32), detail)
    interpreter.set_tensor(detail["index"], x)
    return interpreter


def _timed_invokes(interpreter, runs: int) -> list:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return times


def tflite_latency(model_bytes: bytes, runs: int = 50, warmup: int = 10, threads: int = 1,
                   seed: int = 0) -> Tuple[float, float]:
    """Median and 90th percentile of batch-1 ``invoke()`` wall time in milliseconds.

    One random input (of the model's input dtype) is set once; ``warmup`` untimed calls
    (first-call allocation, XNNPACK weight packing) precede ``runs`` timed ones, each timed
    with ``time.perf_counter`` around ``invoke()`` alone, on ``threads`` CPU threads.
    """
    # One model in one round: the side-by-side timing with nothing beside it.
    return tflite_latency_side_by_side([model_bytes], runs=runs, rounds=1, warmup=warmup,
                                       threads=threads, seed=seed)[0]


def tflite_latency_side_by_side(models: Sequence[bytes], runs: int = 50, rounds: int = 5,
                                warmup: int = 10, threads: int = 1,
                                seed: int = 0) -> List[Tuple[float, float]]:
    """(median, 90th percentile) batch-1 ms of each TFLite model, timed side by side.

    Each model gets its own interpreter and ``warmup`` untimed calls; then ``rounds``
    rounds each time ``runs // rounds`` invokes of every model in turn, so that a slower or
    busier stretch of the machine (another process, frequency scaling) falls on all of
    them alike. Ratios of these medians are what speed-ups should be computed from: two
    medians measured minutes apart on a shared machine can differ by tens of percent for
    the same file (seen on microsecond-scale LeNets).
    """
    if not models:
        return []
    rounds = max(1, min(int(rounds), int(runs)))
    interpreters = [_latency_interpreter(m, threads, seed) for m in models]
    for interpreter in interpreters:
        for _ in range(warmup):
            interpreter.invoke()
    samples: List[list] = [[] for _ in models]
    per_round = max(1, int(runs) // rounds)
    for _ in range(rounds):
        for interpreter, times in zip(interpreters, samples):
            times.extend(_timed_invokes(interpreter, per_round))
    return [(float(np.median(t) * 1e3), float(np.percentile(t, 90) * 1e3)) for t in samples]


def tflite_latency_ms(model_bytes: bytes, runs: int = 50, warmup: int = 10,
                      num_threads: int = 1, seed: int = 0) -> float:
    """Median batch-1 ``invoke()`` time in milliseconds (see module docstring)."""
    return tflite_latency(model_bytes, runs, warmup, num_threads, seed)[0]


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
                 size_mb=len(tflite) / 1e6, gzip_mb=gzip_bytes(tflite) / 1e6,
                 latency_ms=tflite_latency_ms(tflite, runs=runs))
