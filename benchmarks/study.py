"""Benchmark: the MNIST compression studies on the full data, into docs/study/ and
docs/benchmarks/study.md.

    python benchmarks/study.py [--npz=../shared/data/mnist.npz] [--keep_runs=DIR]
        [--recipes=lenet300,lenet5] [--lenet5_overrides="--epochs=4 ..."]

Runs ``flags/study_mnist_lenet300.cfg`` and ``flags/study_mnist_lenet5.cfg`` (one after the
other: the machine has two cores) through the real CLI, optionally with extra flags for
LeNet-5 to fit the machine's time, copies each ``study.md`` and its plots to
``docs/study/<recipe>/`` and replaces this benchmark's section of
docs/benchmarks/study.md with the accuracy tables and the published reference points (Han et al. 2015: LeNet-300-100 keeps
its accuracy at 12x compression, 1.59% error vs 1.64%; Frankle & Carbin 2018: lottery
tickets match the original down to about 3.6% of the weights).
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks_md import page, replace_section
from mnist_epkd import mnist_arguments, mnist_workspace

REPO = Path(__file__).resolve().parents[1]
SECTION = "study"
RECIPES = {"lenet300": ("LeNet-300-100", "flags/study_mnist_lenet300.cfg"),
           "lenet5": ("LeNet-5", "flags/study_mnist_lenet5.cfg")}


def run_study(flagfile: str, extra, data_dir: str, out: str) -> float:
    start = time.perf_counter()
    if not os.path.exists(os.path.join(out, "progress.json")) or \
            '"finished": true' not in open(os.path.join(out, "progress.json")).read():
        subprocess.run([sys.executable, "-m", "epkd_tf.study", f"--flagfile={flagfile}",
                        f"--data_dir={data_dir}", f"--output_dir={out}", *extra],
                       cwd=REPO, check=True)
    return time.perf_counter() - start


def publish(key: str, out: str) -> Path:
    """Copies study.md and the plots of a study to docs/study/<key>/."""
    target = REPO / "docs" / "study" / key
    if target.exists():
        shutil.rmtree(target)
    (target / "plots").mkdir(parents=True)
    for png in Path(out, "plots").glob("*.png"):
        shutil.copy(png, target / "plots" / png.name)
    text = Path(out, "study.md").read_text()
    # The flags name the machine's scratch paths; keep only the recipe's own flags.
    lines = [l for l in text.splitlines() if not l.startswith(("--data_dir", "--output_dir"))]
    (target / "study.md").write_text("\n".join(lines) + "\n")
    for table in ("study", "comparisons"):
        shutil.copy(Path(out, f"{table}.csv"), target / f"{table}.csv")
    return target


def summary(name: str, out: str) -> list:
    study = pd.read_csv(os.path.join(out, "study.csv"))
    history = pd.read_csv(os.path.join(out, "teacher_history.csv"))
    teacher = 100 * history.test_accuracy.iloc[-1]
    mean = study.groupby(["method", "fraction_removed"]).test_accuracy.mean().unstack() * 100
    lines = [f"Teacher test accuracy {teacher:.2f}%. Mean test accuracy over "
             f"{study.seed.nunique()} seeds (points vs the teacher in brackets):", "",
             "| method | " + " | ".join(f"{100 * f:g}% removed" for f in mean.columns) + " |",
             "|---|" + "---|" * len(mean.columns)]
    order = [m for m in ["prune", "lottery", "distill", "prune_distill", "epkd", "scratch"]
             if m in mean.index]
    for method in order:
        lines.append(f"| {method} | " + " | ".join(
            f"{v:.2f} ({v - teacher:+.2f})" for v in mean.loc[method]) + " |")
    seconds = study.groupby("method").seconds.sum()
    epochs = study.groupby("method").epochs.mean()
    lines += ["", "Training epochs per cell (mean over fractions and seeds; every epoch any "
              "model of the cell trained, `epkd`'s pruning fine-tunes included): " + ", ".join(
                  f"{m} {epochs[m]:.1f}" for m in order) + ".",
              "", "Wall time per method (all cells): " + ", ".join(
                  f"{m} {seconds[m] / 60:.1f} min" for m in order) + ".", ""]
    return lines, mean, teacher


def main() -> int:
    parser = mnist_arguments(__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="lenet300,lenet5")
    parser.add_argument("--lenet300_overrides", default="")
    parser.add_argument("--lenet5_overrides", default="")
    args = parser.parse_args()
    work, data_dir = mnist_workspace(args, "epkd_study_")
    body = ["## The compression study on MNIST (`benchmarks/study.py`)", "",
            f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} "
            "cores, CPU only, full MNIST (60,000 train / 10,000 test). Full tables, "
            "comparisons (examples classified differently, L2 distances) and plots: "
            "`docs/study/<recipe>/study.md`. Every method (and the teacher) trains on 90% of "
            "the training split; the other 10% (`--validation_split=0.1`, the study's "
            "default) is where `epkd` ranks its candidates, so no method is selected on the "
            "test split it is compared on.", ""]
    checks = []
    for key in args.recipes.split(","):
        name, flagfile = RECIPES[key]
        extra = shlex.split(getattr(args, f"{key}_overrides"))
        out = os.path.join(work, f"study_{key}")
        run_study(flagfile, extra, data_dir, out)
        target = publish(key, out)
        lines, mean, teacher = summary(name, out)
        body += [f"### {name} (`{flagfile}`{' ' + ' '.join(extra) if extra else ''})", "",
                 f"Report: [`{target.relative_to(REPO)}/study.md`]"
                 f"({os.path.relpath(target, page(__file__).parent)}/study.md).", ""] + lines
        if key == "lenet300" and "prune" in mean.index:
            f = max(c for c in mean.columns if c <= 0.92)
            checks.append((f"Han et al.: LeNet-300-100 pruned to {100 * (1 - f):g}% of its "
                           f"weights keeps the teacher's accuracy (paper: 12x, 1.59% vs "
                           f"1.64% error)", f"{mean.loc['prune', f] - teacher:+.2f} points",
                           mean.loc["prune", f] >= teacher - 0.2))
        if "lottery" in mean.index:
            f = mean.columns.max()
            checks.append((f"Frankle & Carbin: {name} lottery ticket at {100 * (1 - f):g}% "
                           f"of the weights matches the original (paper: down to ~3.6%)",
                           f"{mean.loc['lottery', f] - teacher:+.2f} points",
                           mean.loc["lottery", f] >= teacher - 0.2))
    body += ["### Reference points", "", "| reference | measured | within 0.2 points |",
             "|---|---|---|"] + [f"| {w} | {v} | {'yes' if ok else '**no**'} |"
                                  for w, v, ok in checks]
    if args.lenet5_overrides and "lenet5" in args.recipes:
        body += ["", "LeNet-5 ran with the overrides shown to fit the machine's time (and "
                 "without `epkd`: EPKD on LeNet-5 is measured in the EPKD section): each "
                 "lottery round trains 4 epochs, where Frankle & Carbin train 50K "
                 "iterations (~107 epochs at batch 60) per round."]
    replace_section(SECTION, "\n".join(body), page(__file__))
    print(f"wrote section {SECTION} of {page(__file__)}; studies in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
