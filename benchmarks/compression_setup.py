"""What the compression-quality benchmarks share: one LeNet-5 teacher on full MNIST, one
data split, and a function that runs epkd_tf to a parameter ratio through the real CLI.

The split: every method trains on ``train[:90%]`` (54,000 examples); epkd_tf ranks its
candidates on the held-out ``train[90%:]`` (``--validation_split``), so the test split is
only ever used to report; everything is reported on the full 10,000-image test split.
The teacher (LeNet-5, 8 epochs, Adam 1e-3 cosine-decayed to 1%, batch 128, seed 0) is
trained once by epkd_tf and reused by every run (``--teacher_path``) and by the peer.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TRAIN_SPLIT, VALIDATION_SPLIT = "train[:90%]", "train[90%:]"
TRAIN_EXAMPLES = 54_000
# The protocol of the peer comparison (issue #14): 5 pruning steps on a geometric schedule,
# each followed by 2 epochs of distillation from the original teacher, alpha 0.1,
# T = 50, 45, 40, 35, 30, Adam 5e-4 constant, batch 128, cached teacher logits.
STEPS, EPOCHS_PER_STEP = 5, 2
PROTOCOL = [f"--iterations={STEPS}", f"--finetune_epochs={EPOCHS_PER_STEP}", "--alpha=0.1",
            "--temperature_start=50", "--temperature_step=5", "--finetune_learning_rate=5e-4",
            "--batch_size=128", f"--train_split={TRAIN_SPLIT}",
            f"--validation_split={VALIDATION_SPLIT}", "--export_formats=tflite",
            "--latency_runs=100"]


def finished(out: str) -> bool:
    path = os.path.join(out, "progress.json")
    return os.path.exists(path) and json.load(open(path)).get("finished", False)


def teacher(work: str, data_dir: str) -> str:
    """The shared LeNet-5 teacher's .keras file (trained once, with an EPKD run of zero
    iterations' worth of work: its teacher stage)."""
    out = os.path.join(work, "teacher_run")
    path = os.path.join(out, "checkpoints", "teacher.keras")
    if not os.path.exists(path):
        subprocess.run([sys.executable, "-m", "epkd_tf.main", "--dataset=mnist",
                        f"--data_dir={data_dir}", f"--output_dir={out}", "--teacher=lenet5",
                        "--teacher_epochs=8", "--iterations=1", "--pruners=l1_filter",
                        "--finetune_epochs=0", "--seed=0", f"--train_split={TRAIN_SPLIT}",
                        f"--validation_split={VALIDATION_SPLIT}", "--export_formats=tflite",
                        "--export_every_student"],     # peers.py times tflite/teacher.tflite
                       cwd=REPO, check=True)
    return path


def teacher_row(work: str) -> pd.Series:
    return pd.read_csv(os.path.join(work, "teacher_run", "teacher.csv")).iloc[0]


def keep_ratio(ratio: float) -> float:
    """Per-step keep ratio of ``STEPS`` equal geometric steps to 1/``ratio``."""
    return (1.0 / ratio) ** (1.0 / STEPS)


def epkd_flags(data_dir: str, teacher_path: str, teacher_params: int, ratio: float,
               seed: int, extra: Sequence[str] = (), out: Optional[str] = None) -> List[str]:
    """The command line (after ``python -m epkd_tf.main``) of :func:`run_epkd`'s run: the
    protocol to ``ratio`` times fewer nonzero parameters than the teacher's
    ``teacher_params``, then ``extra`` (a later flag overrides an earlier one);
    ``--output_dir`` only when ``out`` is given (``benchmarks/quality.py`` builds the same
    run's config in Python from these flags)."""
    target = int(round(teacher_params / ratio))
    return ["--dataset=mnist", f"--data_dir={data_dir}",
            *([f"--output_dir={out}"] if out else []),
            f"--teacher_path={teacher_path}", f"--seed={seed}",
            f"--keep_ratio={keep_ratio(ratio):.6f}", f"--target_params={target}",
            *PROTOCOL, *extra]


def run_epkd(work: str, data_dir: str, name: str, ratio: float, seed: int,
             extra: Sequence[str] = ()) -> Dict:
    """epkd_tf to ``ratio`` times fewer nonzero parameters than the teacher with the
    protocol and ``extra`` flags; the final student's row and the wall time."""
    teacher_path = teacher(work, data_dir)
    out = os.path.join(work, "runs", f"{name}_x{ratio:g}_s{seed}")
    wall_file = os.path.join(out, "wall_seconds.txt")
    if not finished(out):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "epkd_tf.main",
                        *epkd_flags(data_dir, teacher_path,
                                    int(teacher_row(work).nonzero_params), ratio, seed,
                                    extra, out=out)], cwd=REPO, check=True)
        Path(wall_file).write_text(f"{time.perf_counter() - start:.1f}\n")
    students = pd.read_csv(os.path.join(out, "students.csv"))
    k = final_iteration(out)
    final = students.set_index("iteration").loc[k]
    widths = layer_widths(os.path.join(out, "checkpoints", f"student_{k}.keras"))
    return {"name": name, "ratio": ratio, "seed": seed, "params": int(final.nonzero_params),
            "macs": int(final.macs), "test_accuracy": float(final.test_accuracy),
            "validation_accuracy": float(final.validation_accuracy),
            "latency_ms": float(final.latency_ms), "widths": widths,
            "winners": ",".join(students.pruner), "seconds": float(open(wall_file).read()),
            "out": out}


def final_iteration(out: str) -> int:
    """The iteration of a finished run's final student: ``final.csv``'s, or for a run made
    before that file existed, the ``final_iteration`` its ``progress.json`` recorded."""
    path = os.path.join(out, "final.csv")
    if os.path.exists(path):
        return int(pd.read_csv(path).iteration.iloc[0])
    return int(json.load(open(os.path.join(out, "progress.json")))["final_iteration"])


def layer_widths(path: str) -> str:
    """conv1, conv2, fc1 widths of a LeNet-5 checkpoint, e.g. ``9, 19, 119``."""
    import epkd_tf  # noqa: F401  (Keras 2)
    import tf_keras
    model = tf_keras.models.load_model(path, compile=False)
    widths = []
    for layer in model.layers:
        config = layer.get_config()
        width = config.get("filters") or config.get("units")
        if width and layer is not model.layers[-1]:
            widths.append(str(width))
    return ", ".join(widths)
