"""Benchmark: why full-integer int8 TFLite files of pruned LeNets do not get faster,
written to docs/benchmarks/int8_speed.md.

    python benchmarks/int8_speed.py

Measures, on LiteRT with one thread and batch 1 (every table's files timed side by side,
interleaved rounds, medians):

1. LeNet-5 (random weights: latency does not depend on their values) and three students
   pruned to 50%, 20% and 5% of its multiply-accumulates (l1 order, MACs budget), in
   float32 and full-integer int8;
2. one Conv2D alone, int8 and float, over input channels, filters, kernel size and
   input size: which of them the int8 time follows;
3. LeNet-5's int8 file with LiteRT's default XNNPACK delegate and with the builtin
   kernels alone (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``);
4. one 5x5 Conv2D (1 -> 20 channels, 28x28) quantised per channel or per tensor, with
   int8 or float32 input and output (quantize / dequantize at the edges), and with
   XNNPACK's latest features enabled: whether any of them removes the fixed cost.
"""
from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks_md import cpu, page, replace_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "int8_speed"
RUNS, ROUNDS = 2000, 5
FRACTIONS = (0.5, 0.2, 0.05)


def side_by_side(files):
    from epkd_tf.deploy import tflite as metrics
    return [1e3 * median for median, _ in metrics.tflite_latency_side_by_side(
        files, runs=RUNS, rounds=ROUNDS)]


def calibration(shape):
    return np.random.default_rng(0).random((32, *shape), dtype=np.float32)


def lenet_students():
    """LeNet-5 and its students at FRACTIONS of its MACs."""
    from epkd_tf.graph import analyze, remove_groups
    from epkd_tf.graph.count import macs_cost
    from epkd_tf.models import build_model
    from epkd_tf.pruning import plan_removal
    import tf_keras
    tf_keras.utils.set_random_seed(0)
    teacher = build_model("lenet5", (28, 28, 1), 10)
    graph = analyze(teacher)
    cost = macs_cost(graph)
    scores = np.random.default_rng(0).random(graph.num_groups)
    students = [remove_groups(graph, plan_removal(graph, scores, f * cost.full(), 0.05,
                                                  cost=cost).removed_groups)
                for f in FRACTIONS]
    return teacher, students


def conv_alone(cin: int, filters: int, kernel: int, size: int):
    import tf_keras
    x = tf_keras.Input((size, size, cin))
    return tf_keras.Model(x, tf_keras.layers.Conv2D(filters, kernel)(x))


def invoke_us(model_bytes: bytes, resolver, **options) -> float:
    """Median invoke() microseconds with ``resolver`` (LiteRT's OpResolverType) and the
    interpreter's other ``options``."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=model_bytes, num_threads=1,
                              experimental_op_resolver_type=resolver, **options)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    for _ in range(20):
        interpreter.invoke()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times))


def conv_variant(per_tensor: bool, int8_edges: bool) -> bytes:
    """The 5x5 Conv2D 1 -> 20 on 28x28, full-integer quantised per channel (TFLite's
    default) or per tensor, with int8 or float32 input and output."""
    import tensorflow as tf
    from epkd_tf import compat
    examples = calibration((28, 28, 1))
    converter = tf.lite.TFLiteConverter.from_keras_model(conv_alone(1, 20, 5, 28))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([examples[i:i + 1]] for i in range(32))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_edges:
        converter.inference_input_type = converter.inference_output_type = tf.int8
    compat.set_per_tensor_quantization(converter, per_tensor)
    return converter.convert()


def main() -> int:
    sys.path.insert(0, str(REPO))
    import epkd_tf  # noqa: F401  (Keras 2)
    from ai_edge_litert.interpreter import OpResolverType
    from epkd_tf.budget import multiply_accumulates
    from epkd_tf.deploy import tflite as metrics
    teacher, students = lenet_students()
    models = [teacher, *students]
    rep = calibration((28, 28, 1))
    floats = side_by_side([metrics.to_tflite(m) for m in models])
    int8s = side_by_side([metrics.to_tflite(m, "tflite_int8", rep) for m in models])
    macs = [multiply_accumulates(m) for m in models]
    lines = ["## Full-integer int8 latency of pruned networks (`benchmarks/int8_speed.py`)", "",
             f"Measured {datetime.date.today()} on {cpu()}, {os.cpu_count()} "
             f"cores, LiteRT, one thread, batch 1; {RUNS:,} invokes per file in {ROUNDS} "
             "interleaved rounds (medians, microseconds). Random weights (latency does not "
             "depend on their values), calibration on uniform random inputs.", "",
             "### LeNet-5 and students pruned in MACs", "",
             "| model | MACs | float us (speed-up) | int8 us (speed-up) |", "|---|---|---|---|"]
    names = ["teacher"] + [f"{100 * f:g}% of the MACs" for f in FRACTIONS]
    for name, mac, f, q in zip(names, macs, floats, int8s):
        lines.append(f"| {name} | {mac:,} | {f:.1f} ({floats[0] / f:.2f}x) | "
                     f"{q:.1f} ({int8s[0] / q:.2f}x) |")
    lines += ["", "### One Conv2D alone", "",
              "| input | input channels | filters | kernel | float us | int8 us |",
              "|---|---|---|---|---|---|"]
    cases = ([(28, cin, f, 5) for cin in (1, 8) for f in (1, 4, 20)]
             + [(28, 1, 4, k) for k in (1, 3)] + [(size, 1, 4, 5) for size in (14, 56)])
    for size, cin, f, k in cases:
        model = conv_alone(cin, f, k, size)
        fl, q = side_by_side([metrics.to_tflite(model),
                              metrics.to_tflite(model, "tflite_int8",
                                                calibration((size, size, cin)))])
        lines.append(f"| {size}x{size} | {cin} | {f} | {k}x{k} | {fl:.1f} | {q:.1f} |")
    teacher_int8 = metrics.to_tflite(teacher, "tflite_int8", rep)
    xnnpack = invoke_us(teacher_int8, OpResolverType.AUTO)
    builtin = invoke_us(teacher_int8, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    lines += ["", "### LeNet-5 int8, by kernel library", "",
              f"XNNPACK (LiteRT's default delegate): {xnnpack:.1f} us; builtin int8 kernels "
              f"alone: {builtin:.1f} us (one after the other, not interleaved)."]
    lines += ["", "### One 5x5 Conv2D (1 -> 20, 28x28) int8, by quantisation and delegate",
              "", "| weights | input and output | XNNPACK default us | XNNPACK latest "
              "features us |", "|---|---|---|---|"]
    for per_tensor in (False, True):
        for int8_edges in (True, False):
            variant = conv_variant(per_tensor, int8_edges)
            lines.append(
                f"| {'per tensor' if per_tensor else 'per channel'} | "
                f"{'int8' if int8_edges else 'float32 (quantize/dequantize ops)'} | "
                f"{invoke_us(variant, OpResolverType.AUTO):.1f} | "
                f"{invoke_us(variant, OpResolverType.AUTO, experimental_default_delegate_latest_features=True):.1f} |")
    replace_section(SECTION, "\n".join(lines), page(__file__))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
