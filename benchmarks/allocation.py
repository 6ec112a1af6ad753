"""Benchmark: which units to remove at equal cost, ``--allocation=importance`` against
``--allocation=cost``, one-shot on a trained LeNet-5 on Fashion-MNIST, written to
docs/benchmarks/allocation.md.

    python benchmarks/allocation.py [--teacher=PATH.keras] [--seeds=0,1]
        [--fashion_dir=/usr/share/datasets/fashion-mnist]

The teacher (LeNet-5, 8 epochs, Adam 1e-3, batch 128, seed 0; or ``--teacher``) is pruned
with ``epkd_tf.prune`` by each structured criterion (``l1_filter``, ``taylor``) to 50% and
25% of its multiply-accumulates (``budget="macs"``) under each allocation, then fine-tuned
for one epoch (Adam 5e-4, batch 128, seeded); reported: test accuracy before and after the
fine-tune (mean over seeds), the layer widths, parameters, and the float TFLite batch-1
speed-up, every student of a fraction timed side by side with the teacher. A controlled
comparison at equal MACs: no iteration, no distillation, no stop rule (the frontier
benchmark, ``benchmarks/frontier.py``, runs the whole EPKD).

A third allocation, ``cost_ranks``, is registered by this script alone: the ``cost``
allocation as it was before 2026-12-07 (importance *ranks* divided by the saving relative
to the mean saving of the kept groups), measured beside the knapsack on raw scores that
replaced it.
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
from frontier import IDX, read_idx

REPO = Path(__file__).resolve().parents[1]
SECTION = "allocation"
FRACTIONS = (0.5, 0.25)
CRITERIA = ("l1_filter", "taylor")
ALLOCATIONS = ("importance", "cost", "cost_ranks")


def fashion_mnist(directory: str):
    arrays = {key: read_idx(os.path.join(directory, name)) for key, name in IDX.items()}
    scale = lambda x: (x[..., None] / 255.0).astype("float32")  # noqa: E731
    return ((scale(arrays["x_train"]), arrays["y_train"].astype("int64")),
            (scale(arrays["x_test"]), arrays["y_test"].astype("int64")))


def register_cost_ranks() -> None:
    """Registers ``cost_ranks``, the former cost allocation, for this benchmark only."""
    from epkd_tf.pruning import allocation as registry

    if "cost_ranks" in registry.allocation_names():
        return

    @registry.register_allocation("cost_ranks")
    class CostOfRanks(registry.Allocation):
        dynamic = True

        def key(self, graph, scores, unit_keep, cost):
            saving = np.maximum(registry.marginal_costs(graph, cost, unit_keep), 0.0)
            positive = saving[saving > 0]
            relative = saving / (positive.mean() if len(positive) else 1.0)
            key = np.full(graph.num_groups, np.inf)
            np.divide(registry.importance_ranks(scores), relative, out=key,
                      where=relative > 0)
            return key


def train_teacher(train):
    import tf_keras
    from epkd_tf.models import build_model
    tf_keras.utils.set_random_seed(0)
    model = build_model("lenet5", (28, 28, 1), 10)
    model.compile(tf_keras.optimizers.Adam(1e-3),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*train, epochs=8, batch_size=128, verbose=0)
    return model


def accuracy(model, test) -> float:
    logits = model.predict(test[0], batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == test[1]))


def fine_tune(model, train, seed: int):
    import tf_keras
    tf_keras.utils.set_random_seed(seed)
    model.compile(tf_keras.optimizers.Adam(5e-4),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*train, epochs=1, batch_size=128, verbose=0)
    return model


def copy_of(model):
    import tf_keras
    clone = tf_keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def widths(model) -> str:
    return "-".join(str(getattr(layer, "filters", None) or layer.units)
                    for layer in model.layers if hasattr(layer, "filters")
                    or hasattr(layer, "units"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--fashion_dir", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not os.path.exists(os.path.join(args.fashion_dir, IDX["x_train"])):
        sys.exit(f"error: Fashion-MNIST not found in {args.fashion_dir}; apt-get install "
                 "dataset-fashion-mnist, or pass --fashion_dir")
    sys.path.insert(0, str(REPO))
    import epkd_tf
    from epkd_tf.budget import multiply_accumulates
    from epkd_tf.deploy import tflite as metrics
    from epkd_tf.graph import nonzero_params
    register_cost_ranks()
    train, test = fashion_mnist(args.fashion_dir)
    teacher = epkd_tf.load_model(args.teacher) if args.teacher else train_teacher(train)
    teacher_acc, teacher_macs = accuracy(teacher, test), multiply_accumulates(teacher)
    rows = []
    for fraction in FRACTIONS:
        made = []
        for criterion in CRITERIA:
            for allocation in ALLOCATIONS:
                student = epkd_tf.prune(teacher, fraction * teacher_macs, criterion=criterion,
                                        budget="macs", allocation=allocation,
                                        data=train if criterion != "l1_filter" else None)
                before = accuracy(student, test)
                after = [accuracy(fine_tune(copy_of(student), train, seed), test)
                         for seed in seeds]
                made.append(student)
                rows.append({"fraction": fraction, "criterion": criterion,
                             "allocation": allocation, "widths": widths(student),
                             "macs": multiply_accumulates(student),
                             "params": nonzero_params(student), "before": before,
                             "after": float(np.mean(after)), "after_min": min(after),
                             "after_max": max(after)})
                print(rows[-1], flush=True)
        timed = metrics.tflite_latency_side_by_side(
            [metrics.to_tflite(teacher)] + [metrics.to_tflite(m) for m in made],
            runs=1000, rounds=5)
        for row, (ms, _) in zip(rows[-len(made):], timed[1:]):
            row["speedup"] = timed[0][0] / ms
    lines = ["## One-shot, equal MACs: importance against cost allocation "
             "(`benchmarks/allocation.py`)", "",
             f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} "
             f"cores, CPU only. LeNet-5 on Fashion-MNIST, teacher {100 * teacher_acc:.2f}% "
             f"test, {teacher_macs:,} MACs, {nonzero_params(teacher):,} parameters. Each row: "
             "`epkd_tf.prune(teacher, fraction x MACs, budget=\"macs\", criterion, "
             "allocation)` (`cost_ranks`: the `cost` allocation before 2026-12-07, importance "
             "ranks per relative saving, registered by the script), then one fine-tune "
             "epoch (Adam 5e-4, batch 128) per seed "
             f"({', '.join(map(str, seeds))}; mean, min..max). Speed-up: float TFLite, batch "
             "1, one thread, every student of a fraction timed side by side with the "
             "teacher (1,000 invokes each, 5 interleaved rounds, medians).", "",
             "| MACs kept | criterion | allocation | widths (conv1-conv2-fc1-logits) | MACs | "
             "params | test acc pruned | after 1 epoch | float speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {100 * r['fraction']:g}% | {r['criterion']} | {r['allocation']} | "
                     f"{r['widths']} | {r['macs']:,} | {r['params']:,} | "
                     f"{100 * r['before']:.2f}% | {100 * r['after']:.2f}% "
                     f"({100 * r['after_min']:.2f}..{100 * r['after_max']:.2f}) | "
                     f"{r['speedup']:.2f}x |")
    replace_section(SECTION, "\n".join(lines), page(__file__))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
