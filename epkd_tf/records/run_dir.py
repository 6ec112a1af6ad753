"""The run directory: every file name and layout lives here, every write is atomic.

Layout of ``<output_dir>``::

    flags.txt                  every flag of the run, usable with --flagfile
    progress.json              the completed stages (teacher, iteration k, the end) and
                               what each wrote (sizes and SHA-256 of its files, of every
                               table) — for resuming and verifying (``stages.py``)
    .lock                      held (fcntl.flock) by the one process writing the run
    teacher_history.csv        epoch, loss, train_accuracy, test_accuracy
    candidates.csv             one row per (iteration, pruner)
    finetune_history.csv       iteration, epoch, temperature, loss, train_accuracy, test_accuracy
    students.csv               one row per iteration: the distilled winner
    final.csv                  the run's final student and why the run stopped
    teacher.csv                the teacher measured like a student
    criteria_correlation.csv   iteration, criterion, scope, spearman
    timings.csv                phase, iteration, pruner, seconds, peak memory
    deployment.csv             one row per (model, format): files, sizes, accuracy, latency
    serving/final/1/           the final student (the smallest within the stop rules) as a
                               SavedModel (TF Serving layout: <model>/<version>/)
    serving/teacher/1/         with --export_every_student: the teacher, and
    serving/student/<k>/       the student of iteration k (newest version = latest student)
    serving/models.config      TF Serving ModelServerConfig (absolute base paths)
    serving/models.docker.config   the same for the docker mount (base paths /models/...)
    candidates/<k>/<pruner>/   every candidate as a SavedModel (with --export_candidates)
    tflite/<model>.tflite      float32; <model>_sparse, _int8_dynamic, _int8 .tflite: the
                               other TFLite formats (<model>: final; with
                               --export_every_student also teacher, student_<k>)
    keras3/<model>.keras       the model as a Keras 3 file (export format keras3)
    checkpoints/               teacher.keras, student_<k>.keras (what a resumed run reloads)
    checkpoints/partial/       teacher.*, finetune_<k>.*: the checkpoint of a training under
                               way (--checkpoint_every), removed when its stage completes
    tensorboard/               teacher/, finetune_<k>/
    report.md, plots/<name>.png    the run's report (python -m epkd_tf.report)

A run directory is three concepts, one module each: :class:`RunDir` here is the
directory itself — its paths, its lock and its atomic writes; ``run.tables`` (a
:class:`~epkd_tf.records.tables.TableStore`) reads and appends the CSV tables;
``run.stages`` (a :class:`~epkd_tf.records.stages.StageLedger`) keeps progress.json, the
record of completed stages that resuming, verifying and reloading checkpoints rely on.

Every path is built by :meth:`RunDir.path`, which refuses any that would leave the run
directory, also through a symbolic link; names that come from the user (run names, model
names) go through :func:`safe_name` first.
"""
from __future__ import annotations

import os
import shutil
from typing import Dict, List, Optional

from epkd_tf import faults
from epkd_tf.records import locking
from epkd_tf.records.stages import PARTIAL, StageLedger
from epkd_tf.records.tables import TABLES, TableStore
from epkd_tf.files import (TMP_PREFIX, atomic_directory, atomic_write, inside, read_text,
                           safe_name)
from epkd_tf.errors import DamagedRunError, RunDirError

LOCK_NAME = locking.LOCK_NAME
# Where no run directory may go: the kernel's virtual file systems.
VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


def check_output_dir(path: str, flag: str = "output_dir") -> None:
    """Refuses an output directory that no run could write: the file-system root, a path
    under a file, one too long for the file system, one in a virtual file system (/proc,
    /sys, /dev), an existing file, or one whose nearest existing directory cannot be
    written. Writes nothing.

    Args:
        path: the directory (it need not exist yet).
        flag: the flag that gave it, named in the refusal (``--<flag>=<path>``).

    Raises:
        RunDirError: naming ``--flag`` and why.
    """
    subject = f"--{flag}={path}"
    real = os.path.realpath(path)
    if os.path.dirname(real) == real:
        raise RunDirError(f"{subject} is the file system's root; give a directory of its "
                          f"own.")
    virtual = [root for root in VIRTUAL_ROOTS if inside(real, root)]
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


class RunDir:
    """One run's output directory (see the module docstring for its layout).

    Attributes:
        root: the directory, absolute.
        tables: its CSV tables (:class:`~epkd_tf.records.tables.TableStore`, with the
            columns of :attr:`table_schemas`).
        stages: its record of completed stages
            (:class:`~epkd_tf.records.stages.StageLedger`).
    """

    #: The CSV tables of this kind of directory and their documented columns (a subclass
    #: for another kind of directory, e.g. a study's, names its own).
    table_schemas: Dict[str, List[str]] = TABLES

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.tables = TableStore(self, self.table_schemas)
        self.stages = StageLedger(self)

    def path(self, *parts: str) -> str:
        """``root/parts...``; a path that would leave the run directory (``..``, an
        absolute part, a symbolic link inside the run that leads elsewhere) is refused:
        nothing is ever written outside it. Symbolic links are resolved on the real
        file system, as the write would follow them.

        Raises:
            RunDirError: the path would leave the run directory.
        """
        path = os.path.normpath(os.path.join(self.root, *parts))
        real, real_root = os.path.realpath(path), os.path.realpath(self.root)
        if not inside(path, self.root) or not inside(real, real_root):
            via = f" (through a symbolic link, to {real})" if inside(path, self.root) else ""
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

    def read_flags(self) -> Optional[str]:
        """The text of the directory's flags.txt, read the one way every reader reads it.

        Returns:
            Its text; None when the directory has no flags.txt.

        Raises:
            DamagedRunError: it is not a regular UTF-8 text file of sane size (a FIFO
                would block the reader, another encoding would end it in a traceback);
                the message names the file.
        """
        path = self.flags_file
        if not os.path.lexists(path):
            return None
        try:
            return read_text(path)
        except ValueError as err:
            raise DamagedRunError(f"{path} {err}: it is not the flags.txt epkd_tf "
                                  f"writes (UTF-8 text, one flag a line).") from None

    def write_text(self, relative: str, text: str) -> None:
        """Writes ``root/relative`` (UTF-8 text), atomically."""
        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        atomic_write(self.path(relative), write)

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Writes ``root/relative``, atomically; returns its path."""
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(data)
        atomic_write(self.path(relative), write)
        return self.path(relative)

    def write_array(self, path: str, **arrays) -> None:
        """Writes NumPy arrays atomically: one as ``.npy`` (``array=``), several as ``.npz``."""
        import numpy as np

        def write(tmp):
            with open(tmp, "wb") as f:
                if set(arrays) == {"array"}:
                    np.save(f, arrays["array"])
                else:
                    np.savez(f, **arrays)
        atomic_write(path, write)

    # -- models --------------------------------------------------------------------------
    def teacher_checkpoint(self) -> str:
        return self.path("checkpoints", "teacher.keras")

    def student_checkpoint(self, iteration: int) -> str:
        return self.path("checkpoints", f"student_{iteration}.keras")

    def partial_checkpoint(self, name: str, suffix: str) -> str:
        """``checkpoints/partial/<name>.<suffix>``: the checkpoint of training ``name``
        (``teacher``, ``finetune_<k>``) while it is unfinished (``epkd_tf.epochs``); scratch,
        removed when its stage completes."""
        return self.path("checkpoints", PARTIAL, f"{safe_name(name)}.{suffix}")

    def save_checkpoint(self, model, path: str) -> None:
        """Saves a Keras model atomically (Keras insists on the .keras suffix). Reload it
        with ``run.stages.load_checkpoint``."""
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
        for ``tflite_<suffix>`` (e.g. ``student_3_int8.tflite``).

        Raises:
            ValueError: ``fmt`` is not a TFLite format.
        """
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
        atomic_directory(path, write)
