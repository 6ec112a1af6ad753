"""The run directory: every file name and layout lives here, every write is atomic.

Layout of ``<output_dir>``::

    flags.txt                  every flag of the run, usable with --flagfile
    progress.json              the completed stages (teacher, iteration k, the end) and
                               what each wrote (sizes and SHA-256 of its files, of every
                               table) — for resuming and verifying
    .lock                      held (fcntl.flock) by the one process writing the run
    teacher_history.csv        epoch, loss, train_accuracy, test_accuracy
    candidates.csv             one row per (iteration, pruner)
    finetune_history.csv       iteration, epoch, temperature, loss, train_accuracy, test_accuracy
    students.csv               one row per iteration: the distilled winner
    final.csv                  the run's final student and why the run stopped
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
duplicated or missing and no half-written export survives. Tables only ever grow by
appending bytes, so what a stage recorded of a table (its size and the SHA-256 of that
many bytes) stays checkable as the run goes on. Before resuming, :meth:`RunDir.prepare_resume`
checks every completed stage against its record: a damaged last stage is redone, damage
to an earlier one (which later stages build on) is refused naming the file.

Every path is built by :meth:`RunDir.path`, which refuses any that would leave the run
directory, also through a symbolic link; names that come from the user (run names, model
names) go through :func:`safe_name` first. Checkpoints are reloaded by
:meth:`RunDir.load_checkpoint` only: verified against their record, then loaded without
running code stored in them (``epkd_tf.models.user.load_user_model``).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from typing import Dict, List, Optional

import pandas as pd

from epkd_tf import faults
from epkd_tf.records import locking
from epkd_tf.config import EXPORT_FORMATS
from epkd_tf.files import safe_name  # noqa: F401  (re-exported)
from epkd_tf.errors import DamagedRunError, ModelFileError, RunDirError  # noqa: F401

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
    # student is the previous one (docs/outputs.md). kept_candidate: distillation left the
    # winner less accurate on the selection split (distilled_selection_accuracy), so the
    # iteration's student is the winning candidate as it was ranked. epochs: every
    # training epoch the iteration spent (pruning fine-tunes of the candidates and the
    # distillation). goal_met: the student meets every --target_* stop rule.
    "students": ["iteration", "pruner", "nonzero_params", "total_params", "macs", "size_mb",
                 "gzip_mb", "latency_ms", "cost", "test_accuracy_before_finetune",
                 "train_accuracy", "validation_accuracy", "test_accuracy", "temperature",
                 "kept_previous", "kept_candidate", "distilled_selection_accuracy",
                 "epochs", "goal_met"],
    # The run's final student (iteration 0: the teacher itself): the smallest in the
    # --budget measure within the stop rules; why the run stopped. Written at its end.
    # *_latency_ms: the teacher's and the final student's float / int8 TFLite files timed
    # side by side (interleaved rounds) at the end; empty for a format not exported.
    "final": ["iteration", "pruner", "nonzero_params", "macs", "cost",
              "validation_accuracy", "test_accuracy", "teacher_float_latency_ms",
              "float_latency_ms", "teacher_int8_latency_ms", "int8_latency_ms", "stopped"],
    # The teacher measured like a student (iteration 0): what the headline compares with.
    # bn_reestimated: a given teacher's BatchNormalization statistics lagged its weights
    # and the run uses (and measured) a copy with re-estimated ones (docs/algorithm.md).
    "teacher": ["iteration", "nonzero_params", "total_params", "macs", "size_mb", "gzip_mb",
                "latency_ms", "cost", "train_accuracy", "validation_accuracy",
                "test_accuracy", "goal_met", "bn_reestimated"],
    "criteria_correlation": ["iteration", "criterion", "scope", "spearman"],
    "timings": ["phase", "iteration", "pruner", "seconds"],
    # iteration: 0 for the teacher, k for student_<k>, empty for `python -m epkd_tf.export`.
    "deployment": ["model", "iteration", "format", "path", "bytes", "gzip_bytes",
                   "test_accuracy", "latency_ms_median", "latency_ms_p90"],
}

# TFLite formats whose teacher and final student are timed side by side at the end of a
# run -> the prefix of their final.csv columns (<prefix>_latency_ms).
SIDE_BY_SIDE_FORMATS = {"tflite": "float", "tflite_int8": "int8"}

# The model name the final student's exports carry (serving/final/1, tflite/final*.tflite).
FINAL = "final"

# Prefix of every temporary file or directory a write creates next to its target.
TMP_PREFIX = ".tmp-"
PROGRESS = "progress.json"
LOCK_NAME = locking.LOCK_NAME
# Where no run directory may go: the kernel's virtual file systems.
VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


def check_output_dir(path: str, flag: str = "output_dir") -> None:
    """Refuses, naming ``--flag``, an output directory that no run could write: the
    file-system root, a path under a file, one too long for the file system, one in a
    virtual file system (/proc, /sys, /dev), an existing file, or one whose nearest
    existing directory cannot be written. Raises RunDirError; writes nothing."""
    subject = f"--{flag}={path}"
    real = os.path.realpath(path)
    if os.path.dirname(real) == real:
        raise RunDirError(f"{subject} is the file system's root; give a directory of its "
                          f"own.")
    virtual = [root for root in VIRTUAL_ROOTS if _inside(real, root)]
    if virtual:
        raise RunDirError(f"{subject} lies in {virtual[0]}, a virtual file system of the "
                          f"kernel; give a directory on disk.")
    if os.path.exists(real) and not os.path.isdir(real):
        raise RunDirError(f"{subject} exists and is not a directory.")
    existing = real
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise RunDirError(f"{subject} lies under {existing}, which is a file, not a "
                          f"directory.")
    name_max = _pathconf(existing, "PC_NAME_MAX", 255)
    path_max = _pathconf(existing, "PC_PATH_MAX", 4096)
    longest = max(real.split(os.sep), key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(real)) >= path_max or len(os.fsencode(longest)) > name_max:
        raise RunDirError(f"{subject} is too long for the file system ({len(real)} "
                          f"characters, at most {path_max - 1} in all and {name_max} per "
                          f"name).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"{subject} cannot be written: {existing} is read-only or not "
                          f"writable by this user.")


def _pathconf(path: str, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


def file_digest(path: str) -> Dict[str, object]:
    """``{"bytes": size, "sha256": hex digest}`` of a regular file."""
    return _digest(path, os.path.getsize(path))


def _digest(path: str, size: int) -> Dict[str, object]:
    """Size and SHA-256 of the first ``size`` bytes of ``path``."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            sha.update(block)
            left -= len(block)
    return {"bytes": size, "sha256": sha.hexdigest()}


def _mismatch(path: str, recorded: dict, prefix: bool = False) -> Optional[str]:
    """Why ``path`` differs from what a stage recorded of it (None: it does not). With
    ``prefix`` the file may have grown since (a table later stages appended to)."""
    if not os.path.isfile(path):
        return "missing" if not os.path.lexists(path) else "not a regular file"
    size, want = os.path.getsize(path), int(recorded["bytes"])
    if size < want or (size > want and not prefix):
        return f"{size} bytes, {want} were written"
    if _digest(path, want)["sha256"] != recorded["sha256"]:
        return "its content changed (SHA-256 differs from what was written)"
    return None


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


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class RunDir:
    """One run's output directory (see the module docstring for its layout)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    #: The CSV tables of this kind of directory and their documented columns.
    tables: Dict[str, List[str]] = TABLES

    def path(self, *parts: str) -> str:
        """``root/parts...``; a path that would leave the run directory (``..``, an
        absolute part, a symbolic link inside the run that leads elsewhere) is refused:
        nothing is ever written outside it. Symbolic links are resolved on the real
        file system, as the write would follow them."""
        path = os.path.normpath(os.path.join(self.root, *parts))
        real, real_root = os.path.realpath(path), os.path.realpath(self.root)
        if not _inside(path, self.root) or not _inside(real, real_root):
            via = f" (through a symbolic link, to {real})" if _inside(path, self.root) else ""
            raise RunDirError(f"{os.path.join(*parts)!r} lies outside the run directory "
                              f"{self.root}{via}.")
        return path

    # -- one process per directory ---------------------------------------------------------
    def lock(self, what: Optional[str] = None):
        """Context manager: this process's exclusive hold on the directory for a whole
        run (:mod:`epkd_tf.records.locking`; ``what`` names it in the refusal). Creates the
        directory; removes it again if it is still empty at the end."""
        return locking.hold(self.root, what or f"--output_dir={self.root}")

    def entries(self) -> List[str]:
        """Names in the directory, without the lock file (empty if it does not exist)."""
        if not os.path.isdir(self.root):
            return []
        return sorted(n for n in os.listdir(self.root) if n != LOCK_NAME)

    def clear(self) -> None:
        """Removes everything in the directory but the lock file (``--overwrite``: the
        lock stays held while the old run goes)."""
        for name in self.entries():
            path = os.path.join(self.root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

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
        """The table's rows; DamagedRunError naming the file if it is not a whole table
        with the documented header (a cut last row, a lost header, not CSV)."""
        path = self.table_path(table)
        if not os.path.exists(path):
            return pd.DataFrame(columns=self.tables[table])
        self._check_table_text(table)
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise DamagedRunError(f"{path} is damaged: {' '.join(str(err).split())[:200]}.")

    def _check_table_text(self, table: str) -> bytes:
        """The table file's bytes, after checking its header and that it ends a line."""
        path = self.table_path(table)
        with open(path, "rb") as f:
            data = f.read()
        header = ",".join(self.tables[table]).encode()
        if data.split(b"\n", 1)[0].rstrip(b"\r") != header:
            raise DamagedRunError(f"{path} is damaged: its first line is not the header "
                                  f"{header.decode()}.")
        if not data.endswith(b"\n"):
            raise DamagedRunError(f"{path} is damaged: its last row is cut off.")
        return data

    def append(self, table: str, rows: pd.DataFrame) -> None:
        """Appends rows (columns in the documented order), atomically. The bytes already
        in the file are kept as they are (only appended to), so that the sizes and
        digests completed stages recorded stay valid."""
        rows = rows.reindex(columns=self.tables[table])
        path = self.table_path(table)
        if os.path.exists(path):
            data = self._check_table_text(table) + rows.to_csv(index=False,
                                                               header=False).encode()
        else:
            data = rows.to_csv(index=False).encode()

        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(data)
        _atomic_write(path, write)

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
    # progress.json: {"teacher_done", "iterations_done", "finished", "stages": [record...]}
    # with one record per completed stage, in order ("teacher", "iteration 1", ...,
    # "end"): {"name", "files": {relative path: digest}, "tables": {table: digest of its
    # first bytes when the stage completed}}. Runs written before records existed have no
    # "stages" and are resumed with lighter checks.
    def progress(self) -> dict:
        """The state of the run (nothing done if there is no progress.json yet);
        DamagedRunError naming progress.json if it is not one."""
        path = self.path(PROGRESS)
        if not os.path.exists(path):
            return {"teacher_done": False, "iterations_done": 0, "finished": False,
                    "stages": []}
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise DamagedRunError(f"{path} is damaged (not JSON: "
                                  f"{' '.join(str(err).split())[:120]}).") from None
        kinds = {"teacher_done": bool, "iterations_done": int, "finished": bool}
        if not (isinstance(state, dict) and all(isinstance(state.get(k), t)
                                                for k, t in kinds.items())
                and state["iterations_done"] >= 0
                and isinstance(state.get("stages", []), list)):
            raise DamagedRunError(f"{path} is damaged: not a progress record (it needs "
                                  f"teacher_done, iterations_done and finished).")
        return state

    @staticmethod
    def stage_names(state: dict) -> List[str]:
        """The completed stages ``state`` claims, in order."""
        if not state["teacher_done"]:
            return []
        names = ["teacher"] + [f"iteration {k}" for k in range(1, state["iterations_done"] + 1)]
        return names + (["end"] if state["finished"] else [])

    def _records(self, state: dict) -> Optional[List[dict]]:
        """The records of the stages ``state`` claims (None for a run written before
        records existed); DamagedRunError if it claims stages it has no records of."""
        if "stages" not in state:
            return None
        names = self.stage_names(state)
        records = state["stages"][:len(names)]
        valid = all(isinstance(r, dict) and r.get("name") == n
                    and isinstance(r.get("files"), dict) and isinstance(r.get("tables"), dict)
                    for r, n in zip(records, names))
        if len(records) < len(names) or not valid:
            raise DamagedRunError(
                f"{self.path(PROGRESS)} is damaged: it claims {len(names)} completed "
                f"stages ({', '.join(names) or 'none'}) but records what "
                f"{sum(1 for _ in records)} of them wrote.")
        return records

    def mark(self, **progress) -> None:
        """Records completed stages (``teacher_done=True``, ``iterations_done=k``,
        ``finished=True``) with what each wrote; written after the stage's files, so it
        is the commit."""
        state = self.progress()
        new = {**state, **progress}
        records = list(self._records(state) or [])
        names = self.stage_names(new)
        keep = 0
        while keep < min(len(records), len(names)) and records[keep]["name"] == names[keep]:
            keep += 1
        new["stages"] = records[:keep] + [self._snapshot(n) for n in names[keep:]]
        self.write_text(PROGRESS, json.dumps(new, indent=1))

    def _snapshot(self, name: str) -> dict:
        """What the stage ``name`` wrote, as it is now: its files and every table."""
        stage = {"teacher": 0, "end": None}.get(name)
        if stage is None and name.startswith("iteration "):
            stage = int(name.split()[1])
        files = {}
        paths = self.final_files() if name == "end" else (
            [] if stage is None else self.stage_files(stage))
        for path in paths:
            if _inside(path, self.path("tensorboard")):
                continue     # logs for TensorBoard: not results, not checked
            for file in _files_under(path):
                files[os.path.relpath(file, self.root)] = file_digest(file)
        tables = {t: file_digest(self.table_path(t)) for t in self.tables
                  if os.path.isfile(self.table_path(t))}
        return {"name": name, "files": files, "tables": tables}

    def verify(self) -> Optional[dict]:
        """The first damage of :meth:`damages`, or None when every stage checks out."""
        found = self.damages(first=True)
        return found[0] if found else None

    def damages(self, first: bool = False) -> List[dict]:
        """Every file or table of a completed stage that is not what the stage wrote, in
        stage order: ``{"index", "name" (the stage), "path" (relative), "problem",
        "table" (whether it is a table)}`` (with ``first``, the first one only). A run
        written before records existed is checked for its checkpoints only.
        DamagedRunError if progress.json itself is damaged."""
        state = self.progress()
        records = self._records(state)
        if records is None:
            return self._damages_legacy(state)
        found = []
        for index, record in enumerate(records):
            checks = [(path, digest, False) for path, digest in record["files"].items()]
            checks += [(os.path.relpath(self.table_path(t), self.root), digest, True)
                       for t, digest in record["tables"].items() if t in self.tables]
            for relative, digest, table in checks:
                if any(d["path"] == relative for d in found):
                    continue       # a table damaged for one stage is for the next too
                problem = _mismatch(self.path(relative), digest, prefix=table)
                if problem:
                    found.append({"index": index, "name": record["name"], "path": relative,
                                  "problem": problem, "table": table})
                    if first:
                        return found
        return found

    def _damages_legacy(self, state: dict) -> List[dict]:
        names = self.stage_names(state)
        for index, name in enumerate(n for n in names if n != "end"):
            path = (self.teacher_checkpoint() if name == "teacher"
                    else self.student_checkpoint(int(name.split()[1])))
            if not os.path.isfile(path):
                return [{"index": index, "name": name, "problem": "missing", "table": False,
                         "path": os.path.relpath(path, self.root)}]
        return []

    def read_completed(self, table: str) -> pd.DataFrame:
        """The table's rows of completed stages only: the bytes the last completed stage
        recorded (a run written before records existed: the rows of completed
        iterations). DamagedRunError if the file is damaged."""
        state = self.progress()
        records = self._records(state)
        if records is None or not records:
            frame = self.read(table)
            done = state["iterations_done"] if state["teacher_done"] else -1
            if "iteration" in frame.columns:
                return frame[frame["iteration"].fillna(0) <= done].reset_index(drop=True)
            return frame if done >= 0 else frame.iloc[0:0]
        recorded = records[-1]["tables"].get(table)
        if recorded is None or not os.path.exists(self.table_path(table)):
            return pd.DataFrame(columns=self.tables[table])
        data = self._check_table_text(table)[:recorded["bytes"]]
        return pd.read_csv(io.BytesIO(data))

    def prepare_resume(self, what: Optional[str] = None) -> Optional[str]:
        """Checks the run before it is resumed; returns a warning line when its last
        completed stage was damaged and will be redone, None when all is well.

        Refused (RunDirError naming the file, ``what`` naming the directory): a symbolic
        link inside the run that leads out of it, a damaged progress.json, and damage to a
        stage that later stages build on. The last completed stage is redone instead: its
        record is dropped here, and :meth:`drop_unfinished` then removes its files and
        rows like those of an interrupted stage."""
        what = what or f"--output_dir={self.root}"
        self.check_links(what)
        damage = self.verify()
        if damage is None:
            return None
        state = self.progress()
        names = self.stage_names(state)
        found = f"{damage['path']} ({damage['problem']})"
        if damage["index"] != len(names) - 1 or "stages" not in state:
            raise DamagedRunError(
                f"{what}: {found} is not what the {damage['name']} stage wrote, and the "
                f"stages after it build on it; the run cannot be resumed: rerun with "
                f"--overwrite or another --output_dir.")
        name = damage["name"]
        rolled = dict(state, finished=False)
        if name == "teacher":
            rolled["teacher_done"] = False
        elif name.startswith("iteration "):
            rolled["iterations_done"] = int(name.split()[1]) - 1
        rolled["stages"] = state["stages"][:damage["index"]]
        self.write_text(PROGRESS, json.dumps(rolled, indent=1))
        return (f"warning: {found} is not what the {name} stage wrote; that stage is "
                f"redone.")

    def check_links(self, what: Optional[str] = None) -> None:
        """RunDirError naming the first symbolic link in the run that leads out of it."""
        real_root = os.path.realpath(self.root)
        for root, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = os.path.join(root, name)
                if os.path.islink(path) and not _inside(os.path.realpath(path), real_root):
                    raise RunDirError(
                        f"{what or self.root}: {os.path.relpath(path, self.root)} is a link "
                        f"to {os.path.realpath(path)}, outside the run directory; epkd_tf "
                        f"writes only inside it (remove the link).")

    def load_checkpoint(self, path: str):
        """The model of one of the run's checkpoints: checked against what its stage
        recorded, then loaded without running code stored in it. DamagedRunError naming
        the file otherwise."""
        from epkd_tf.models.user import load_user_model
        relative = os.path.relpath(path, self.root)
        state = self.progress()
        for record in self._records(state) or []:
            if relative in record["files"]:
                problem = _mismatch(path, record["files"][relative])
                if problem:
                    raise DamagedRunError(f"{path} is damaged ({problem}); the run cannot "
                                          f"use it.")
        try:
            return load_user_model(path, None)
        except ModelFileError as err:
            raise DamagedRunError(str(err)) from None

    def drop_unfinished(self) -> None:
        """Removes what stages after the last completed one left (an interrupted run):
        their CSV rows (each table is cut back to the size the last completed stage
        recorded; tables no stage recorded lose the rows of later iterations), their
        checkpoints, exports and TensorBoard logs, and the temporaries of writes that never
        reached their rename."""
        state = self.progress()
        records = self._records(state)
        if records:
            recorded = records[-1]["tables"]
            for table in self.tables:
                path = self.table_path(table)
                if (table in recorded and os.path.isfile(path)
                        and os.path.getsize(path) > recorded[table]["bytes"]):
                    with open(path, "rb") as f:
                        data = f.read(recorded[table]["bytes"])
                    self.write_bytes(os.path.relpath(path, self.root), data)
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
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)

    def final_files(self) -> List[str]:
        """The final student's exports (written at the end of a run): checked like a
        stage's files."""
        return [self.export_path(FINAL, fmt) for fmt in EXPORT_FORMATS]

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


def _files_under(path: str) -> List[str]:
    """``path`` if it is a file, every file below it if it is a directory, sorted."""
    if os.path.isfile(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files)]
    return found
