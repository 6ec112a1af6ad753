"""Benchmark: how much faster structured pruning can make a network on LiteRT at all, every
layer shrunk to the same fraction of its width; written to docs/benchmarks/speed_ceiling.md.

    python benchmarks/speed_ceiling.py [--seed=0]

The frontier (``frontier.py``) asks how fast a student gets within an accuracy budget.
This asks the question before it: what batch-1 speed-up does the runtime give for a given
cut, whatever the accuracy? For LeNet-5 (28x28), ResNet-18 (width 0.25) and MobileNetV2
(width 0.35) at 32x32, with random weights (latency does not depend on their values),
every coupled block keeps ``ceil(fraction x its width)`` channels (epkd_tf's own plan with
equal scores and ``--layer_floor=fraction``, its own surgery), for fractions 0.7 .. 0.1.
Each version's float and int8 TFLite files are timed side by side with the unpruned
network's (interleaved rounds, one thread, medians); MACs are epkd_tf's count. The
speed-up targets of issue #23 (LeNet-5 8x, ResNet-18 3x, MobileNetV2 2.5x) are read
against it: the narrowest uniform width that reaches each.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import numpy as np

from benchmarks_md import page, replace_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "speed_ceiling"
#: (name, zoo key, input shape, build keywords, the issue's float speed-up target)
NETWORKS = [("LeNet-5", "lenet5", (28, 28, 1), {}, 8.0),
            ("ResNet-18 (0.25)", "resnet18", (32, 32, 1), {"width": 0.25}, 3.0),
            ("MobileNetV2 (0.35)", "mobilenet_v2", (32, 32, 1), {"width": 0.35}, 2.5)]
FRACTIONS = (0.7, 0.5, 0.35, 0.25, 0.1)
RUNS, ROUNDS = 1000, 5


def uniform_versions(network, fractions):
    """(fraction, pruned model) for each fraction: every block of ``network`` cut to
    ``ceil(fraction x width)`` groups by epkd_tf's plan (equal scores) and surgery."""
    from epkd_tf.graph import analyze, remove_groups
    from epkd_tf.pruning import removal_order
    graph = analyze(network)
    return [(f, remove_groups(graph, removal_order(graph, np.zeros(graph.num_groups), f)))
            for f in fractions]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import epkd_tf  # noqa: F401  (Keras 2)
    import tf_keras
    from epkd_tf.deploy import tflite as metrics
    from epkd_tf.graph.count import model_macs
    from epkd_tf.models import build_model
    rows = []
    for name, key, shape, kwargs, target in NETWORKS:
        tf_keras.utils.set_random_seed(args.seed)
        network = build_model(key, shape, 10, **kwargs)
        versions = [(1.0, network)] + uniform_versions(network, FRACTIONS)
        calibration = np.random.default_rng(args.seed).random((32,) + shape, dtype=np.float32)
        times = {}
        for fmt in ("tflite", "tflite_int8"):
            files = [metrics.to_tflite(m, fmt, calibration if fmt == "tflite_int8" else None)
                     for _, m in versions]
            times[fmt] = [ms for ms, _ in metrics.tflite_latency_side_by_side(
                files, runs=RUNS, rounds=ROUNDS, seed=args.seed)]
        macs = [model_macs(m) for _, m in versions]
        for i, (fraction, _) in enumerate(versions):
            rows.append({"network": name, "target": target, "fraction": fraction,
                         "macs": macs[i], "macs_x": macs[0] / macs[i],
                         "float_ms": times["tflite"][i],
                         "float_x": times["tflite"][0] / times["tflite"][i],
                         "int8_x": times["tflite_int8"][0] / times["tflite_int8"][i]})
            print(rows[-1], flush=True)
    lines = [f"## The speed-up a uniform cut gives on LiteRT (`benchmarks/{SECTION}.py`)", "",
             f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} "
             f"cores, seed {args.seed}, random weights. Every block keeps ceil(fraction x "
             "its width) channels (epkd_tf's plan and surgery); float32 and int8 TFLite, "
             f"batch 1, one thread, each version timed side by side with the unpruned "
             f"network ({RUNS:,} invokes each in {ROUNDS} interleaved rounds, medians). "
             "MACs: epkd_tf's count.", "",
             "| network | width kept | MACs (x fewer) | float ms | float speed-up | "
             "int8 speed-up |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['fraction']:.0%} | {r['macs']:,} "
                     f"({r['macs_x']:.1f}x) | {r['float_ms']:.4f} | {r['float_x']:.2f}x | "
                     f"{r['int8_x']:.2f}x |")
    lines += ["", "The widest uniform cut that reaches each float speed-up target of "
              "issue #23 (the accuracy is not asked here):", "",
              "| network | target | widest width kept that reaches it |", "|---|---|---|"]
    for name, _, _, _, target in NETWORKS:
        reached = [r for r in rows if r["network"] == name and r["float_x"] >= target]
        best = max(reached, key=lambda r: r["fraction"]) if reached else None
        lines.append(f"| {name} | {target:g}x | " + (
            f"{best['fraction']:.0%} ({best['macs_x']:.1f}x fewer MACs, "
            f"{best['float_x']:.2f}x)" if best else "none down to "
            f"{min(FRACTIONS):.0%}") + " |")
    replace_section(SECTION, "\n".join(lines), page(__file__))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
