"""Benchmark: where the time of an EPKD run goes, into docs/benchmarks/speed.md (issue #6).

    python benchmarks/speed.py [--npz=../shared/data/mnist.npz] [--keep_runs=DIR]

Measured side by side in one process on full MNIST (so the ratios share the machine's
noise; every figure is a median over interleaved rounds):

1. a distillation epoch (Distiller with the run's cached teacher logits, and the keras-io
   way with the teacher run on every batch) vs a plain ``fit`` epoch of the same student on
   the same data — target <= 1.10 for the cached one, which the run uses;
2. teacher-training throughput (``training.train_classifier``: the run's tf.data pipeline,
   cosine-decayed Adam) vs a bare ``tf_keras`` ``fit`` of the same model on in-memory
   arrays, both timed on a steady-state (second) epoch — target >= 0.95;
3. the default LeNet-300-100 run (``python -m epkd_tf.main``, every flag at its default)
   per phase from its ``timings.csv``, whose rows add up to the run's time (``other``:
   what no phase covered): everything that is not training or evaluation (scoring,
   surgery, export, logging, other) — target <= 15% of the run. Also reported: the same
   share of the process's wall time, which adds Python/TensorFlow start-up, loading the
   dataset and the interpreter's exit;
4. oracle scoring of LeNet-5, every unit, 2,000 examples — target under 20 s.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks_md import page, replace_section
from mnist_epkd import mnist_arguments, mnist_workspace

REPO = Path(__file__).resolve().parents[1]
SECTION = "speed"
# Rounds per comparison: on a shared 2-core machine single epochs vary by a few percent,
# so the ratios are medians over this many interleaved rounds.
ROUNDS = 7
# timings.csv phases that are training or evaluation; everything else is overhead.
TRAINING_OR_EVALUATION = {"teacher_training", "magnitude_finetune", "distillation",
                          "candidate_evaluation", "student_evaluation",
                          "teacher_logits", "deployment_evaluation"}


def load(data_dir: str):
    sys.path.insert(0, str(REPO))
    import epkd_tf  # noqa: F401
    from epkd_tf.config import DataConfig
    from epkd_tf.data import load_data
    return load_data(DataConfig(dataset="mnist", data_dir=data_dir))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def steady_epoch_samples(runs: dict) -> dict:
    """Seconds of a steady-state epoch of each run in each of ROUNDS interleaved rounds.

    ``runs[name](callback)`` trains for two epochs with ``callback`` (an EpochTimes);
    the second epoch is kept: the first also traces the step and fills caches, and timing
    the epoch alone leaves out ``fit``'s own set-up and tear-down. A first round warms up.
    """
    samples = {name: [] for name in runs}
    for round_ in range(ROUNDS + 1):
        for name, run in runs.items():
            timer = EpochTimes()
            run(timer)
            if round_:
                samples[name].append(timer.seconds[1])
    return samples


def distillation_vs_fit(data) -> dict:
    """Seconds of a steady-state epoch per round: plain fit, Distiller (cached logits),
    Distiller (teacher run on every batch), all on the same small student."""
    import tf_keras
    from epkd_tf import training
    from epkd_tf.distill import Distiller
    from epkd_tf.distill.cache import teacher_logits_for
    from epkd_tf.models import build_model
    shape, classes = data.spec.input_shape, data.spec.num_classes
    tf_keras.utils.set_random_seed(0)
    teacher = build_model("lenet300_100", shape, classes)
    training.train_classifier(teacher, data, 1, 1e-3, validate=False)
    logits = teacher_logits_for(teacher, data)
    plain = build_model("lenet300_100", shape, classes, width=0.3)
    training.compile_classifier(plain, 1e-3)
    students = {name: build_model("lenet300_100", shape, classes, width=0.3)
                for name in ("cached", "live")}
    distillers = {}
    for name, student in students.items():   # compiled as the run's distillation is
        distillers[name] = Distiller(student=student, teacher=teacher, preserve_zeros=True)
        distillers[name].compile(
            optimizer=tf_keras.optimizers.Adam(1e-3), alpha=0.1, temperature=4.0,
            metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    runs = {"fit": lambda cb: plain.fit(data.train(), epochs=2, verbose=0, callbacks=[cb]),
            "cached": lambda cb: distillers["cached"].fit(
                data.train(teacher_logits=logits), epochs=2, verbose=0, callbacks=[cb]),
            "live": lambda cb: distillers["live"].fit(data.train(), epochs=2, verbose=0,
                                                      callbacks=[cb])}
    return steady_epoch_samples(runs)


class EpochTimes:
    """A Keras callback recording the wall seconds of every epoch of one ``fit``."""

    def __new__(cls):
        import tf_keras

        class _Timer(tf_keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._start)

        return _Timer()


def teacher_training_vs_bare_fit(data) -> dict:
    """Seconds of a steady-state training epoch of LeNet-300-100 per round: the run's teacher
    training (``training.train_classifier`` without its per-epoch test evaluation) vs a
    bare compile-and-fit on numpy arrays, both trained from scratch every round."""
    import tf_keras
    from epkd_tf import training
    from epkd_tf.models import build_model
    x, y = data.numpy_train()
    shape, classes = data.spec.input_shape, data.spec.num_classes

    def ours(timer):
        training.train_classifier(build_model("lenet300_100", shape, classes), data, 2, 1e-3,
                                  callbacks=[timer], validate=False)

    def bare(timer):
        model = build_model("lenet300_100", shape, classes)
        model.compile(optimizer=tf_keras.optimizers.Adam(1e-3),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.fit(x, y, batch_size=data.cfg.batch_size, epochs=2, shuffle=True, verbose=0,
                  callbacks=[timer])

    return steady_epoch_samples({"ours": ours, "bare": bare})


def default_run(data_dir: str, out: str) -> tuple:
    """Process wall seconds and timings.csv of the default LeNet-300-100 run; a finished run
    kept in ``out`` (with its wall time in ``out.wall``) is reused."""
    wall_file = out + ".wall"
    if not (os.path.exists(os.path.join(out, "timings.csv")) and os.path.exists(wall_file)):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "epkd_tf.main", f"--data_dir={data_dir}",
                        f"--output_dir={out}", "--overwrite"], cwd=REPO, check=True)
        with open(wall_file, "w") as f:
            f.write(f"{time.perf_counter() - start}\n")
    with open(wall_file) as f:
        wall = float(f.read())
    return wall, pd.read_csv(os.path.join(out, "timings.csv"))


def oracle_lenet5(data) -> tuple:
    from epkd_tf.graph import analyze
    from epkd_tf.models import build_model
    from epkd_tf.pruning.oracle import oracle_scores
    model = build_model("lenet5", data.spec.input_shape, data.spec.num_classes)
    x, y = data.sample(2000, seed=0)
    graph = analyze(model)
    oracle_scores(graph, x[:64], y[:64])     # warm-up (tracing)
    return float(np.median([timed(lambda: oracle_scores(analyze(model), x, y))
                            for _ in range(ROUNDS)])), graph.num_groups


def main() -> int:
    parser = mnist_arguments(__doc__.splitlines()[0])
    args = parser.parse_args()
    work, data_dir = mnist_workspace(args, "epkd_speed_")
    data = load(data_dir)
    epoch_samples = distillation_vs_fit(data)
    teacher_samples = teacher_training_vs_bare_fit(data)
    epoch = {name: float(np.median(s)) for name, s in epoch_samples.items()}
    teacher = {name: float(np.median(s)) for name, s in teacher_samples.items()}

    def spread(numerator, denominator) -> str:
        ratios = np.asarray(numerator) / np.asarray(denominator)
        return f"per round {ratios.min():.2f}-{ratios.max():.2f}"

    oracle_seconds, units = oracle_lenet5(data)
    wall, timings = default_run(data_dir, os.path.join(work, "default_lenet300"))
    phases = timings.groupby("phase").seconds.sum().sort_values(ascending=False)
    run_seconds = phases.sum()                 # the rows cover the whole run
    overhead = run_seconds - phases[phases.index.isin(TRAINING_OR_EVALUATION)].sum()
    process = wall - run_seconds               # start-up (imports, dataset) and exit
    checks = [
        ("distillation epoch (cached teacher logits) / plain fit epoch <= 1.10",
         f"{epoch['cached'] / epoch['fit']:.2f} ({epoch['cached']:.2f} s vs "
         f"{epoch['fit']:.2f} s, {spread(epoch_samples['cached'], epoch_samples['fit'])}; "
         f"teacher run per batch: {epoch['live'] / epoch['fit']:.2f})",
         epoch["cached"] / epoch["fit"] <= 1.10),
        ("teacher-training throughput / bare tf_keras fit >= 0.95",
         f"{teacher['bare'] / teacher['ours']:.2f} ({teacher['ours']:.2f} s vs "
         f"{teacher['bare']:.2f} s per epoch, "
         f"{spread(teacher_samples['bare'], teacher_samples['ours'])})",
         teacher["bare"] / teacher["ours"] >= 0.95),
        ("default LeNet-300-100 run: not training or evaluation <= 15%",
         f"{100 * overhead / run_seconds:.1f}% of the run's {run_seconds:.0f} s "
         f"({100 * (overhead + process) / wall:.1f}% of the process's {wall:.0f} s wall "
         f"time, counting its {process:.1f} s of start-up and exit)",
         overhead / run_seconds <= 0.15),
        ("oracle scoring of LeNet-5 (every unit, 2,000 examples) < 20 s",
         f"{oracle_seconds:.1f} s ({units} units)", oracle_seconds < 20),
    ]
    lines = ["## Speed (`benchmarks/speed.py`)", "",
             f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} "
             f"cores, CPU only, full MNIST; epoch figures are medians of {ROUNDS} interleaved "
             "rounds after a warm-up round, each the second epoch of a two-epoch `fit` "
             "timed by a callback (the first traces the step; `fit`'s set-up and tear-down "
             "are left out). The distillation comparison uses a small student, LeNet-300-100 "
             "at width 0.3 (74K parameters), where the Distiller's extra work per step "
             "weighs most.", "",
             "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {what} | {value} | {'yes' if ok else '**no**'} |" for what, value, ok in checks]
    lines += ["", f"Default run: {run_seconds:.0f} s from its start to its last output "
              f"(`timings.csv`, whose rows add up to it), {wall:.0f} s of process wall time. "
              "Seconds per phase:", "",
              "| phase | seconds | share of the run | training or evaluation |",
              "|---|---|---|---|"]
    lines += [f"| {p} | {s:.1f} | {100 * s / run_seconds:.1f}% | "
              f"{'yes' if p in TRAINING_OR_EVALUATION else 'no'} |" for p, s in phases.items()]
    lines += [f"| (process start-up and exit: imports, loading the dataset, interpreter "
              f"teardown; not in `timings.csv`) | {process:.1f} | - | no |"]
    replace_section(SECTION, "\n".join(lines), page(__file__))
    print(f"wrote section {SECTION} of {page(__file__)}; runs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
