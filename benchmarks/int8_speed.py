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
   kernels alone (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``).
"""
from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks_md import page, replace_section

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


def invoke_us(model_bytes: bytes, resolver) -> float:
    """Median invoke() microseconds with ``resolver`` (LiteRT's OpResolverType)."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=model_bytes, num_threads=1,
                              experimental_op_resolver_type=resolver)
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
             f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} "
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
    replace_section(SECTION, "\n".join(lines), page(__file__))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
