"""Benchmark: which factors decide the quality of epkd_tf's structured LeNet-5 students at
10x fewer parameters, one factor at a time, written to BENCHMARKS.md.

    python benchmarks/quality.py [--npz=../shared/data/mnist.npz] [--keep_runs=DIR]

Every variant runs the peer protocol (``compression_setup.py``: the same teacher, 5 steps,
2 epochs of distillation each, the same split) through the real CLI with two seeds, and
changes one thing against the one before it:

* ``before``: the settings before this study (per-layer floor a fraction of the *current*
  width, Taylor scores L2-normalised per layer, l1_filter + taylor + oracle);
* ``floor of teacher``: the floor a fraction of the teacher's widths (no compounding);
* ``taylor mean``: Taylor scores normalised by their per-layer mean (Torch-Pruning's
  normaliser) instead of their L2 norm;
* ``taylor alone``: only the Taylor criterion (no tournament);
* ``flops 0.5``: FLOPs-regularised ranking (``--flops_weight=0.5``);
* ``cosine``: the distillation rate cosine-decayed within each step.

Reported per variant: mean test accuracy of the final students (both seeds), parameters,
MACs, widths, and the change against ``before``.
"""
from __future__ import annotations

import datetime
import os
import platform
import sys

import numpy as np
import pandas as pd

from benchmarks_md import replace_section
from compression_setup import run_epkd, teacher, teacher_row
from mnist_epkd import mnist_arguments, mnist_workspace

SECTION = "quality"
RATIO = 10
SEEDS = (0, 1)
STRUCTURED = "--pruners=l1_filter,taylor,oracle"
VARIANTS = [
    ("before", [STRUCTURED, "--layer_floor_of=current", "--taylor_normalization=l2"]),
    ("floor of teacher", [STRUCTURED, "--layer_floor_of=teacher", "--taylor_normalization=l2"]),
    ("taylor mean", [STRUCTURED, "--layer_floor_of=teacher", "--taylor_normalization=mean"]),
    ("taylor alone", ["--pruners=taylor", "--layer_floor_of=teacher",
                      "--taylor_normalization=mean"]),
    ("flops 0.5", [STRUCTURED, "--layer_floor_of=teacher", "--taylor_normalization=mean",
                   "--flops_weight=0.5"]),
    ("cosine", [STRUCTURED, "--layer_floor_of=teacher", "--taylor_normalization=mean",
                "--finetune_schedule=cosine"]),
]


def main() -> int:
    args = mnist_arguments(__doc__.splitlines()[0]).parse_args()
    work, data_dir = mnist_workspace(args, "epkd_quality_")
    teacher(work, data_dir)
    rows = []
    for name, extra in VARIANTS:
        for seed in SEEDS:
            rows.append(run_epkd(work, data_dir, name.replace(" ", "_"), RATIO, seed, extra))
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    teach = teacher_row(work)
    baseline = frame[frame.name == "before"].test_accuracy.mean()
    lines = ["## Compression quality, factor by factor (`benchmarks/quality.py`)", "",
             f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} "
             f"cores, CPU only. LeNet-5 teacher ({100 * teach.test_accuracy:.2f}% test, "
             f"{int(teach.nonzero_params):,} params) compressed {RATIO}x in 5 steps of 2 "
             "distillation epochs each (the peer protocol, `benchmarks/compression_setup.py`;"
             " candidates ranked on the held-out `train[90%:]`), seeds "
             f"{', '.join(map(str, SEEDS))}. Each variant changes one thing against the row "
             "above it (see the script's docstring).", "",
             "| variant | flags | test acc (mean of seeds) | per seed | vs before | params "
             "| MACs | widths conv1, conv2, fc1 | winners (seed 0) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, extra in VARIANTS:
        group = frame[frame.name == name.replace(" ", "_")]
        mean = group.test_accuracy.mean()
        lines.append(
            f"| {name} | `{' '.join(extra)}` | {100 * mean:.2f}% | "
            f"{', '.join(f'{100 * a:.2f}' for a in group.test_accuracy)} | "
            f"{100 * (mean - baseline):+.2f} | {int(group.params.mean()):,} | "
            f"{int(group.macs.mean()):,} | {' / '.join(group.widths)} | "
            f"{group.winners.iloc[0]} |")
    lines += ["", "Seconds per run: " + ", ".join(
        f"{r.name} s{r.seed} {r.seconds:.0f}" for r in frame.itertuples()) + "."]
    replace_section(SECTION, "\n".join(lines))
    frame.to_csv(os.path.join(work, "quality.csv"), index=False)
    print(f"wrote BENCHMARKS.md section {SECTION}; runs in {work}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
