"""Benchmark: what structured pruning buys on every zoo model, written to
docs/benchmarks/zoo_pruning.md.

    python benchmarks/zoo_pruning.py [--models=resnet18,vgg16] [--runs=30]

For each registered teacher at CIFAR-10 input size (32x32x3, 10 classes, random weights —
cost does not depend on them): parameters, multiply-accumulates and float32 TFLite batch-1
latency (LiteRT, one thread, median of --runs after warm-up) of the teacher and of its
versions with 50% and 80% of the parameters removed by ``l1_filter`` scores with the
default per-layer floor; and the time the dependency analysis and the surgery take.
Teacher and pruned versions are timed side by side, interleaved round-robin, so machine
noise hits them alike; the ratios are the figures to read.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import epkd_tf  # noqa: E402,F401  (Keras 2 before TensorFlow)
from epkd_tf.budget import multiply_accumulates  # noqa: E402
from epkd_tf.deploy import tflite as metrics  # noqa: E402
from epkd_tf.graph import ParamCounter, analyze, nonzero_params, remove_groups  # noqa: E402
from epkd_tf.models import build_model, model_names  # noqa: E402
from epkd_tf.pruning import plan_removal, unit_to_group_mean  # noqa: E402
from epkd_tf.pruning.l1 import mean_abs_weight_per_unit  # noqa: E402

from benchmarks_md import page, replace_section  # noqa: E402

SECTION = "zoo_pruning"
REMOVED = (0.5, 0.8)
SHAPE, CLASSES = (32, 32, 3), 10


def interleaved_latency(blobs, runs: int, rounds: int = 5):
    """Median batch-1 latency of each TFLite blob, measured side by side in alternating
    rounds."""
    timed = metrics.tflite_latency_side_by_side(blobs, runs=max(rounds, runs), rounds=rounds,
                                                warmup=5)
    return [median for median, _ in timed]


def bench_model(name: str, runs: int) -> dict:
    teacher = build_model(name, SHAPE, CLASSES)
    rng = np.random.default_rng(0)
    teacher.set_weights([w + 0.01 * rng.standard_normal(w.shape).astype(w.dtype)
                         for w in teacher.get_weights()])
    start = time.perf_counter()
    graph = analyze(teacher)
    analysis_s = time.perf_counter() - start
    counter = ParamCounter(graph)
    scores = unit_to_group_mean(graph, mean_abs_weight_per_unit(graph))
    models, surgery_s = [teacher], []
    for removed in REMOVED:
        target = int(round((1 - removed) * nonzero_params(teacher)))
        start = time.perf_counter()
        plan = plan_removal(graph, scores, target, 0.1, counter)
        models.append(remove_groups(graph, plan.removed_groups))
        surgery_s.append(time.perf_counter() - start)
    blobs = [metrics.to_tflite(m) for m in models]
    latency = interleaved_latency(blobs, runs)
    return {"name": name, "params": [m.count_params() for m in models],
            "macs": [multiply_accumulates(m) for m in models],
            "latency": latency, "analysis_s": analysis_s, "surgery_s": surgery_s}


def render(results) -> str:
    lines = [
        "## Structured pruning of the teacher zoo (`benchmarks/zoo_pruning.py`)", "",
        f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores, "
        "CPU only. Input 32x32x3, 10 classes, width 1.0; pruned by `l1_filter` scores "
        "(global ranking, floor 10% per layer) to 50% and 80% fewer parameters. Latency: "
        "float32 TFLite, batch 1, one thread, LiteRT, median; teacher and pruned versions "
        "measured in alternating rounds. Speed-up = teacher latency / pruned latency; "
        "MAC ratio = teacher MACs / pruned MACs. Targets: a model with half the MACs runs "
        ">= 1.7x faster; analysis + surgery of ResNet-50 under 10 s.", "",
        "| model | params (M) teacher / -50% / -80% | MMACs teacher / -50% / -80% "
        "| latency ms teacher / -50% / -80% | MAC ratio -50% / -80% "
        "| speed-up -50% / -80% | analysis s | surgery s -50% / -80% |",
        "|---|---|---|---|---|---|---|---|"]
    for r in results:
        p, m, t = r["params"], r["macs"], r["latency"]
        lines.append(
            f"| {r['name']} | {p[0] / 1e6:.2f} / {p[1] / 1e6:.2f} / {p[2] / 1e6:.2f} "
            f"| {m[0] / 1e6:.1f} / {m[1] / 1e6:.1f} / {m[2] / 1e6:.1f} "
            f"| {t[0]:.2f} / {t[1]:.2f} / {t[2]:.2f} "
            f"| {m[0] / m[1]:.2f} / {m[0] / m[2]:.2f} "
            f"| {t[0] / t[1]:.2f} / {t[0] / t[2]:.2f} "
            f"| {r['analysis_s']:.2f} | {r['surgery_s'][0]:.2f} / {r['surgery_s'][1]:.2f} |")
    checks = []
    for r in results:
        m, t = r["macs"], r["latency"]
        for i, removed in enumerate(REMOVED, start=1):
            mac_ratio, speedup = m[0] / m[i], t[0] / t[i]
            # "latency falls at least in proportion to MACs": speed-up >= 0.85 x MAC ratio
            # (1.7x for a model with half the MACs).
            checks.append(f"{r['name']} -{int(removed * 100)}%: speed-up {speedup:.2f}x for "
                          f"{mac_ratio:.2f}x fewer MACs — "
                          f"{'met' if speedup >= 0.85 * mac_ratio else '**not met**'}")
        if r["name"] == "resnet50":
            total = r["analysis_s"] + max(r["surgery_s"])
            checks.append(f"resnet50 analysis + surgery {total:.1f} s (target < 10 s) — "
                          f"{'met' if total < 10 else '**not met**'}")
    return "\n".join(lines + ["", "Targets:", ""] + [f"- {c}" for c in checks])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(model_names()))
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    results = []
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        start = time.perf_counter()
        results.append(bench_model(name, args.runs))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    replace_section(SECTION, render(results), page(__file__))
    print(f"wrote section {SECTION} of {page(__file__)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
