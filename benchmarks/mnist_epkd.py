"""Benchmark: the MNIST EPKD recipes on the full data, written to
docs/benchmarks/mnist_epkd.md.

    python benchmarks/mnist_epkd.py [--npz=../shared/data/mnist.npz] [--keep_runs=DIR]

Runs ``flags/mnist_lenet300.cfg`` and ``flags/mnist_lenet5.cfg`` one after the other (never
side by side: the machine has two cores) through the real CLI, then reads only the CSVs of
each run and replaces this benchmark's section of docs/benchmarks/mnist_epkd.md with:
teacher accuracy; per iteration the winning pruner, nonzero params, test accuracy before and after
distillation; wall time per phase; and the targets of issue #2 with met / not met.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks_md import page, replace_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "mnist_epkd"
RECIPES = [("LeNet-300-100", "flags/mnist_lenet300.cfg", 98.0),
           ("LeNet-5", "flags/mnist_lenet5.cfg", 99.0)]
MAX_DROP_POINTS = 0.3
MAX_RUN_SECONDS = 600


def mnist_arguments(description: str) -> argparse.ArgumentParser:
    """The MNIST benchmarks' command line: ``--npz`` and ``--keep_runs``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--npz", default=str(REPO.parent / "shared" / "data" / "mnist.npz"))
    parser.add_argument("--keep_runs", default=None, help="keep run directories here")
    return parser


def mnist_workspace(args, prefix: str) -> tuple:
    """``(work directory, TFDS data dir with MNIST)`` for parsed ``args``: the kept-runs
    directory or a new temporary one; exits with status 2 when ``--npz`` is missing."""
    if not os.path.exists(args.npz):
        print(f"error: MNIST not found at {args.npz}; pass --npz=PATH", file=sys.stderr)
        sys.exit(2)
    work = args.keep_runs or tempfile.mkdtemp(prefix=prefix)
    return work, mnist_data_dir(args.npz, work)


def mnist_data_dir(npz: str, work: str) -> str:
    """``work/tfds`` holding MNIST as TFDS ``mnist`` (imported once with epkd_tf.data)."""
    data_dir = os.path.join(work, "tfds")
    if not os.path.exists(os.path.join(data_dir, "mnist")):
        subprocess.run([sys.executable, "-m", "epkd_tf.data", f"--import_npz={npz}",
                        "--name=mnist", f"--data_dir={data_dir}"], cwd=REPO, check=True)
    return data_dir


def run_recipe(flagfile: str, data_dir: str, out: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "epkd_tf.main", f"--flagfile={flagfile}",
                    f"--data_dir={data_dir}", f"--output_dir={out}"], cwd=REPO, check=True)
    return time.perf_counter() - start


def teacher_nonzero_params(out: str) -> int:
    import numpy as np
    from epkd_tf.records import RunDir
    run = RunDir(out)
    model = run.stages.load_checkpoint(run.teacher_checkpoint())
    return int(sum(np.count_nonzero(w) for w in model.get_weights()))


def summarise(name: str, out: str, wall: float, target_teacher: float) -> tuple:
    teacher = pd.read_csv(os.path.join(out, "teacher_history.csv"))
    students = pd.read_csv(os.path.join(out, "students.csv"))
    timings = pd.read_csv(os.path.join(out, "timings.csv"))
    teacher_acc = 100 * teacher.test_accuracy.iloc[-1]
    final = students.iloc[-1]
    teacher_params = teacher_nonzero_params(out)
    final_acc = 100 * final.test_accuracy
    lines = [f"### {name}", "",
             f"Teacher test accuracy after {len(teacher)} epochs: **{teacher_acc:.2f}%** "
             f"(target >= {target_teacher}%). Whole run: **{wall:.0f} s** wall.", "",
             "| iteration | winner | nonzero params | % of teacher | T | test before distil. "
             "| test after | TFLite MB | gzip MB | latency ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in students.itertuples():
        lines.append(f"| {r.iteration} | {r.pruner} | {r.nonzero_params:,} | "
                     f"{100 * r.nonzero_params / teacher_params:.1f} | {r.temperature:g} | "
                     f"{100 * r.test_accuracy_before_finetune:.2f} | "
                     f"{100 * r.test_accuracy:.2f} | {r.size_mb:.3f} | {r.gzip_mb:.3f} | "
                     f"{r.latency_ms:.3f} |")
    phases = timings.groupby("phase").seconds.sum().sort_values(ascending=False)
    lines += ["", "Wall time per phase (s): " + ", ".join(
        f"{phase} {sec:.1f}" for phase, sec in phases.items()) + "."]
    drop = teacher_acc - final_acc
    checks = [
        (f"{name} teacher >= {target_teacher}%", teacher_acc >= target_teacher,
         f"{teacher_acc:.2f}%"),
        (f"{name} final student within {MAX_DROP_POINTS} points of its teacher",
         drop <= MAX_DROP_POINTS,
         f"{final_acc:.2f}% at {100 * final.nonzero_params / teacher_params:.1f}% of the "
         f"params ({abs(drop):.2f} points {'below' if drop >= 0 else 'above'} it)"),
        (f"{name} run under {MAX_RUN_SECONDS} s", wall < MAX_RUN_SECONDS, f"{wall:.0f} s"),
    ]
    return "\n".join(lines), checks


def main() -> int:
    args = mnist_arguments(__doc__.splitlines()[0]).parse_args()
    work, data_dir = mnist_workspace(args, "epkd_bench_")
    sections, checks = [], []
    for name, flagfile, target in RECIPES:
        out = os.path.join(work, Path(flagfile).stem)
        wall = run_recipe(flagfile, data_dir, out)
        text, recipe_checks = summarise(name, out, wall, target)
        sections.append(text)
        checks += recipe_checks
    header = [
        "## EPKD on full MNIST (`benchmarks/mnist_epkd.py`)", "",
        f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores, "
        "CPU only, one recipe at a time, with `python -m epkd_tf.main --flagfile=...`. "
        "Test accuracy is on the full 10,000-image test split; latency is the batch-1 "
        "median of the float32 TFLite file on one thread ([outputs](../outputs.md)).", "",
        "| target | result | met |", "|---|---|---|"]
    header += [f"| {what} | {value} | {'yes' if ok else '**no**'} |" for what, ok, value in checks]
    replace_section(SECTION, "\n".join(header + [""] + sections), page(__file__))
    print(f"wrote section {SECTION} of {page(__file__)}; runs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
