"""The run directory: every file name and layout lives here, every write is atomic.

Layout of ``<output_dir>``::

    flags.txt                  every flag of the run, usable with --flagfile
    progress.json              last completed stage (teacher, iteration k) — for resuming
    teacher_history.csv        epoch, loss, train_accuracy, test_accuracy
    candidates.csv             one row per (iteration, pruner)
    finetune_history.csv       iteration, epoch, temperature, loss, train_accuracy, test_accuracy
    students.csv               one row per iteration: the distilled winner
    criteria_correlation.csv   iteration, criterion, scope, spearman
    timings.csv                phase, iteration, pruner, seconds
    deployment.csv             one row per (model, format): files, sizes, accuracy, latency
    serving/teacher/1/         SavedModel (TF Serving layout: <model>/<version>/)
    serving/student/<k>/       the student of iteration k (newest version = latest student)
    serving/models.config      TF Serving ModelServerConfig (absolute base paths)
    serving/models.docker.config   the same for the docker mount (base paths /models/...)
    candidates/<k>/<pruner>/   every candidate as a SavedModel (with --export_candidates)
    tflite/<model>.tflite      float32; <model>_sparse, _int8_dynamic, _int8 .tflite: the
                               other TFLite formats (<model>: teacher or student_<k>)
    checkpoints/               teacher.keras, student_<k>.keras (what a resumed run reloads)
    tensorboard/               teacher/, finetune_<k>/

A stage's files are written first and ``progress.json`` last, so a run killed at any
moment resumes after its last completed stage; rows of a stage that did not complete are
dropped on resume, so no CSV row is duplicated or missing.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Dict, List

import pandas as pd

TABLES: Dict[str, List[str]] = {
    "teacher_history": ["epoch", "loss", "train_accuracy", "test_accuracy"],
    "candidates": ["iteration", "pruner", "nonzero_params", "total_params", "size_mb",
                   "gzip_mb", "latency_ms", "train_accuracy", "test_accuracy",
                   "weighted_score", "rank"],
    "finetune_history": ["iteration", "epoch", "temperature", "loss", "train_accuracy",
                         "test_accuracy"],
    "students": ["iteration", "pruner", "nonzero_params", "total_params", "size_mb",
                 "gzip_mb", "latency_ms", "test_accuracy_before_finetune", "train_accuracy",
                 "test_accuracy", "temperature"],
    "criteria_correlation": ["iteration", "criterion", "scope", "spearman"],
    "timings": ["phase", "iteration", "pruner", "seconds"],
    # iteration: 0 for the teacher, k for student_<k>, empty for `python -m epkd_tf.export`.
    "deployment": ["model", "iteration", "format", "path", "bytes", "gzip_bytes",
                   "test_accuracy", "latency_ms_median", "latency_ms_p90"],
}


def _atomic_write(path: str, write) -> None:
    """Calls ``write(tmp_path)`` and renames the result onto ``path``."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _atomic_dir(path: str, write) -> None:
    """Calls ``write(tmp_dir)`` and renames the finished directory onto ``path``."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    try:
        target = os.path.join(tmp, "out")
        write(target)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class RunDir:
    """One run's output directory (see the module docstring for its layout)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

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
        if table not in TABLES:
            raise KeyError(f"Unknown table {table!r}; known: {', '.join(TABLES)}.")
        return self.path(f"{table}.csv")

    def read(self, table: str) -> pd.DataFrame:
        path = self.table_path(table)
        if not os.path.exists(path):
            return pd.DataFrame(columns=TABLES[table])
        return pd.read_csv(path)

    def append(self, table: str, rows: pd.DataFrame) -> None:
        """Appends rows (columns in the documented order) by rewriting the file atomically."""
        rows = rows.reindex(columns=TABLES[table])
        existing = self.read(table)
        combined = rows if existing.empty else pd.concat([existing, rows], ignore_index=True)
        _atomic_write(self.table_path(table), lambda tmp: combined.to_csv(tmp, index=False))

    # -- models --------------------------------------------------------------------------
    def teacher_checkpoint(self) -> str:
        return self.path("checkpoints", "teacher.keras")

    def student_checkpoint(self, iteration: int) -> str:
        return self.path("checkpoints", f"student_{iteration}.keras")

    def save_checkpoint(self, model, path: str) -> None:
        """Saves a Keras model atomically (Keras insists on the .keras suffix)."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
        try:
            model.save(tmp)
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

    def tensorboard_dir(self, name: str) -> str:
        return self.path("tensorboard", name)

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
        """Removes rows of stages after the last completed one (left by an interrupted run)."""
        state = self.progress()
        done = state["iterations_done"]
        for table in TABLES:
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
