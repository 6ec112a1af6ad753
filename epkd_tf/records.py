"""The run directory: every file name and layout lives here, every write is atomic.

Layout of ``<output_dir>``::

    flags.txt                  every flag of the run, usable with --flagfile
    progress.json              last completed stage (teacher, iteration k) — for resuming
    teacher_history.csv        epoch, loss, train_accuracy, test_accuracy
    candidates.csv             one row per (iteration, pruner)
    finetune_history.csv       iteration, epoch, temperature, loss, train_accuracy, test_accuracy
    students.csv               one row per iteration: the distilled winner (final: the
                               run's final student)
    teacher.csv                the teacher measured like a student
    criteria_correlation.csv   iteration, criterion, scope, spearman
    timings.csv                phase, iteration, pruner, seconds
    deployment.csv             one row per (model, format): files, sizes, accuracy, latency
    serving/teacher/1/         SavedModel (TF Serving layout: <model>/<version>/)
    serving/student/<k>/       the student of iteration k (newest version = latest student)
    serving/final/1/           the final student (the smallest within the stop rules)
    serving/models.config      TF Serving ModelServerConfig (absolute base paths)
    serving/models.docker.config   the same for the docker mount (base paths /models/...)
    candidates/<k>/<pruner>/   every candidate as a SavedModel (with --export_candidates)
    tflite/<model>.tflite      float32; <model>_sparse, _int8_dynamic, _int8 .tflite: the
                               other TFLite formats (<model>: teacher or student_<k>)
    keras3/<model>.keras       the model as a Keras 3 file (export format keras3)
    checkpoints/               teacher.keras, student_<k>.keras (what a resumed run reloads)
    tensorboard/               teacher/, finetune_<k>/
    report.md, plots/<name>.png    the run's report (python -m epkd_tf.report)

A stage's files are written first and ``progress.json`` last, so a run killed at any
moment resumes after its last completed stage; rows and files of a stage that did not
complete (and temporaries of interrupted writes) are dropped on resume, so no CSV row is
duplicated or missing and no half-written export survives.

Every path is built by :meth:`RunDir.path`, which refuses any that would leave the run
directory; names that come from the user (run names, model names) go through
:func:`safe_name` first.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
from typing import Dict, List

import pandas as pd

from epkd_tf import faults
from epkd_tf.config import EXPORT_FORMATS

TABLES: Dict[str, List[str]] = {
    "teacher_history": ["epoch", "loss", "train_accuracy", "test_accuracy"],
    # train_sample_accuracy: on the --eval_examples training examples that rank the
    # candidates; validation_accuracy: on --validation_split (empty without one).
    # skipped: why a pruner made no candidate for this budget (empty: it did); cost: the
    # candidate's measured cost in the --budget measure, predicted_cost: the pruning plan's
    # prediction of it, target_cost: what every candidate of the iteration was made to.
    "candidates": ["iteration", "pruner", "skipped", "nonzero_params", "total_params", "macs",
                   "size_mb", "gzip_mb", "latency_ms", "cost", "predicted_cost",
                   "target_cost", "train_sample_accuracy", "validation_accuracy",
                   "test_accuracy", "weighted_score", "rank"],
    "finetune_history": ["iteration", "epoch", "temperature", "loss", "train_accuracy",
                         "test_accuracy"],
    # kept_previous: the winner's distillation hit a NaN/Inf loss, so the iteration's
    # student is the previous one (README, Outputs). epochs: every training epoch the
    # iteration spent (pruning fine-tunes of the candidates and the distillation).
    # goal_met: meets every --target_* stop rule; final: the run's final student.
    "students": ["iteration", "pruner", "nonzero_params", "total_params", "macs", "size_mb",
                 "gzip_mb", "latency_ms", "cost", "test_accuracy_before_finetune",
                 "train_accuracy", "validation_accuracy", "test_accuracy", "temperature",
                 "kept_previous", "epochs", "goal_met", "final"],
    # The teacher measured like a student (iteration 0): what the headline compares with.
    "teacher": ["iteration", "nonzero_params", "total_params", "macs", "size_mb", "gzip_mb",
                "latency_ms", "cost", "train_accuracy", "validation_accuracy",
                "test_accuracy", "goal_met"],
    "criteria_correlation": ["iteration", "criterion", "scope", "spearman"],
    "timings": ["phase", "iteration", "pruner", "seconds"],
    # iteration: 0 for the teacher, k for student_<k>, empty for `python -m epkd_tf.export`.
    "deployment": ["model", "iteration", "format", "path", "bytes", "gzip_bytes",
                   "test_accuracy", "latency_ms_median", "latency_ms_p90"],
}

# Prefix of every temporary file or directory a write creates next to its target.
TMP_PREFIX = ".tmp-"


def safe_name(text: str, fallback: str = "run") -> str:
    """``text`` as one harmless path component: runs of anything but letters, digits,
    ``_ . -`` become ``-``, leading dots go (no ``..``, hidden or temporary names);
    ``fallback`` if nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).lstrip(".")
    return name or fallback


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: str, write) -> None:
    """Calls ``write(tmp_path)`` and renames the result onto ``path``."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would,
        # so that e.g. a TF Serving container running as another user can read it.
        os.chmod(tmp, 0o666 & ~_umask())
        faults.reached(faults.write_point(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _atomic_dir(path: str, write) -> None:
    """Calls ``write(tmp_dir)`` and renames the finished directory onto ``path``."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=TMP_PREFIX)
    try:
        target = os.path.join(tmp, "out")
        write(target)
        faults.reached(faults.write_point(path))
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class RunDir:
    """One run's output directory (see the module docstring for its layout)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    #: The CSV tables of this kind of directory and their documented columns.
    tables: Dict[str, List[str]] = TABLES

    def path(self, *parts: str) -> str:
        """``root/parts...``; a path that would leave the run directory (``..``, an
        absolute part) is refused: nothing is ever written outside it."""
        path = os.path.normpath(os.path.join(self.root, *parts))
        if path != self.root and not path.startswith(self.root + os.sep):
            raise ValueError(f"{os.path.join(*parts)!r} lies outside the run directory "
                             f"{self.root}.")
        return path

    # -- plain files ---------------------------------------------------------------------
    @property
    def flags_file(self) -> str:
        return self.path("flags.txt")

    def write_text(self, relative: str, text: str) -> None:
        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        _atomic_write(self.path(relative), write)

    def write_bytes(self, relative: str, data: bytes) -> str:
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(data)
        _atomic_write(self.path(relative), write)
        return self.path(relative)

    # -- tables --------------------------------------------------------------------------
    def table_path(self, table: str) -> str:
        if table not in self.tables:
            raise KeyError(f"Unknown table {table!r}; known: {', '.join(self.tables)}.")
        return self.path(f"{table}.csv")

    def read(self, table: str) -> pd.DataFrame:
        path = self.table_path(table)
        if not os.path.exists(path):
            return pd.DataFrame(columns=self.tables[table])
        return pd.read_csv(path)

    def append(self, table: str, rows: pd.DataFrame) -> None:
        """Appends rows (columns in the documented order) by rewriting the file atomically."""
        rows = rows.reindex(columns=self.tables[table])
        existing = self.read(table)
        combined = rows if existing.empty else pd.concat([existing, rows], ignore_index=True)
        _atomic_write(self.table_path(table), lambda tmp: combined.to_csv(tmp, index=False))

    def replace(self, table: str, rows: pd.DataFrame) -> None:
        """Replaces a table's rows (columns in the documented order), atomically."""
        rows = rows.reindex(columns=self.tables[table])
        _atomic_write(self.table_path(table), lambda tmp: rows.to_csv(tmp, index=False))

    def write_array(self, path: str, **arrays) -> None:
        """Writes NumPy arrays atomically: one as ``.npy`` (``array=``), several as ``.npz``."""
        import numpy as np

        def write(tmp):
            with open(tmp, "wb") as f:
                if set(arrays) == {"array"}:
                    np.save(f, arrays["array"])
                else:
                    np.savez(f, **arrays)
        _atomic_write(path, write)

    # -- models --------------------------------------------------------------------------
    def teacher_checkpoint(self) -> str:
        return self.path("checkpoints", "teacher.keras")

    def student_checkpoint(self, iteration: int) -> str:
        return self.path("checkpoints", f"student_{iteration}.keras")

    def save_checkpoint(self, model, path: str) -> None:
        """Saves a Keras model atomically (Keras insists on the .keras suffix)."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), TMP_PREFIX + os.path.basename(path))
        try:
            model.save(tmp)
            faults.reached(faults.write_point(path))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def serving_dir(self, model_name: str, version: int) -> str:
        return self.path("serving", model_name, str(version))

    def candidate_dir(self, iteration: int, pruner: str) -> str:
        return self.path("candidates", str(iteration), pruner)

    def tflite_path(self, name: str, fmt: str = "tflite") -> str:
        """``tflite/<name>.tflite`` for the float format, ``tflite/<name>_<suffix>.tflite``
        for ``tflite_<suffix>`` (e.g. ``student_3_int8.tflite``)."""
        if fmt != "tflite" and not fmt.startswith("tflite_"):
            raise ValueError(f"{fmt!r} is not a TFLite format.")
        return self.path("tflite", f"{name}{fmt[len('tflite'):]}.tflite")

    def export_path(self, name: str, fmt: str, version: int = 1) -> str:
        """Where model ``name``'s export in format ``fmt`` lives: ``serving/<name>/<version>``
        for saved_model, ``keras3/<name>.keras``, ``tflite/<name>*.tflite``."""
        if fmt == "saved_model":
            return self.serving_dir(name, version)
        if fmt == "keras3":
            return self.keras3_path(name)
        return self.tflite_path(name, fmt)

    def keras3_path(self, name: str) -> str:
        """``keras3/<name>.keras``: the model as a Keras 3 file (export format ``keras3``)."""
        return self.path("keras3", f"{name}.keras")

    def tensorboard_dir(self, name: str) -> str:
        return self.path("tensorboard", name)

    # -- report --------------------------------------------------------------------------
    @property
    def report_file(self) -> str:
        return self.path("report.md")

    def plot_path(self, name: str) -> str:
        return self.path("plots", f"{safe_name(name)}.png")

    def write_directory(self, path: str, write) -> None:
        """Writes a directory (e.g. a SavedModel) atomically: ``write(tmp_dir)`` then rename."""
        _atomic_dir(path, write)

    # -- progress ------------------------------------------------------------------------
    def progress(self) -> dict:
        path = self.path("progress.json")
        if not os.path.exists(path):
            return {"teacher_done": False, "iterations_done": 0, "finished": False}
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def mark(self, **progress) -> None:
        """Records a completed stage; written after the stage's files, so it is the commit."""
        state = {**self.progress(), **progress}
        self.write_text("progress.json", json.dumps(state, indent=2))

    def drop_unfinished(self) -> None:
        """Removes what stages after the last completed one left (an interrupted run):
        their CSV rows, their checkpoints, exports and TensorBoard logs, and the
        temporaries of writes that never reached their rename."""
        state = self.progress()
        done = state["iterations_done"]
        for table in self.tables:
            if not os.path.exists(self.table_path(table)):
                continue
            df = self.read(table)
            keep = df
            if "iteration" in df.columns:
                keep = df[df["iteration"].fillna(0) <= done]
            if not state["teacher_done"]:
                # Nothing is complete before the teacher: this also drops rows without an
                # iteration (teacher_history) and the teacher's own (iteration 0) rows.
                keep = df.iloc[0:0]
            if len(keep) != len(df):
                _atomic_write(self.table_path(table), lambda tmp, k=keep: k.to_csv(tmp, index=False))
        done = done if state["teacher_done"] else -1     # stage 0 is the teacher
        leftovers = [p for stage in sorted(self._stages_on_disk() | {0}) if stage > done
                     for p in self.stage_files(stage)]
        for root, dirs, files in os.walk(self.root):
            leftovers += [os.path.join(root, n) for n in dirs + files
                          if n.startswith(TMP_PREFIX)]
            dirs[:] = [d for d in dirs if not d.startswith(TMP_PREFIX)]
        for path in leftovers:
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)

    def stage_files(self, stage: int) -> List[str]:
        """Checkpoint, exports and TensorBoard logs of a stage (0: the teacher, k: the
        student of iteration k) — what ``drop_unfinished`` removes of an unfinished one."""
        name = "teacher" if stage == 0 else f"student_{stage}"
        paths = [self.teacher_checkpoint() if stage == 0 else self.student_checkpoint(stage),
                 self.serving_dir("teacher", 1) if stage == 0 else self.serving_dir("student", stage),
                 self.tensorboard_dir("teacher" if stage == 0 else f"finetune_{stage}")]
        paths += [self.tflite_path(name, fmt) for fmt in EXPORT_FORMATS if fmt.startswith("tflite")]
        paths.append(self.keras3_path(name))
        if stage:
            paths.append(self.path("candidates", str(stage)))
        return paths

    def _stages_on_disk(self) -> set:
        """Iteration numbers any checkpoint, export or log on disk belongs to."""
        stages = set()
        for folder, regex in ((("checkpoints",), r"student_(\d+)\.keras"),
                              (("serving", "student"), r"(\d+)"),
                              (("candidates",), r"(\d+)"),
                              (("tensorboard",), r"finetune_(\d+)"),
                              (("tflite",), r"student_(\d+)(?:_[a-z0-9]+)*\.tflite"),
                              (("keras3",), r"student_(\d+)\.keras")):
            path = self.path(*folder)
            for entry in os.listdir(path) if os.path.isdir(path) else []:
                match = re.fullmatch(regex, entry)
                if match:
                    stages.add(int(match.group(1)))
        return stages
