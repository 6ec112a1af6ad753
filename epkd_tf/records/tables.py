"""The CSV tables of a run: their documented columns (:data:`TABLES`) and the store that
reads and writes them (:class:`TableStore`, a run directory's ``run.tables``).

A table lives in ``<run>/<name>.csv`` and only ever grows by appending bytes (each write
atomic), so the size and SHA-256 a completed stage recorded of it (``stages.py``) stays
checkable while later stages append. Every read checks the file first: its first line is
the documented header and its last row ends a line; a table that is not is refused as
damaged, naming the file. Kept apart from the directory's paths (``run_dir.py``) and from
the stage ledger (``stages.py``), which records and cuts back tables through this store.
"""
from __future__ import annotations

import io
import os
from typing import Dict, List, Optional

import pandas as pd

from epkd_tf.errors import DamagedRunError
from epkd_tf.files import atomic_write

TABLES: Dict[str, List[str]] = {
    "teacher_history": ["epoch", "loss", "train_accuracy", "test_accuracy"],
    # train_sample_accuracy: on the --eval_examples training examples that rank the
    # candidates; validation_accuracy: on --validation_split (empty without one);
    # validation_accuracy and test_accuracy on --selection_examples seeded examples of
    # each split (the whole split when it has no more).
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
    # winner less accurate on the selection split (distilled_selection_accuracy, on the
    # --selection_examples the candidates were ranked on), so the
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
    # peak_rss_mb: the process's peak resident set during the phase; peak_device_mb: GPU
    # memory TensorFlow allocated at its peak (empty on CPU); both empty for `other`.
    "timings": ["phase", "iteration", "pruner", "seconds", "peak_rss_mb", "peak_device_mb"],
    # iteration: 0 for the teacher, k for student_<k>, empty for `python -m epkd_tf.export`.
    "deployment": ["model", "iteration", "format", "path", "bytes", "gzip_bytes",
                   "test_accuracy", "latency_ms_median", "latency_ms_p90"],
}

# The headers a table had in runs written by earlier versions (oldest first): such a
# file is read with the columns it lacks empty and appended to with its own columns, so
# an old run still resumes and the bytes its completed stages recorded stay valid.
LEGACY_COLUMNS: Dict[str, List[List[str]]] = {
    "timings": [["phase", "iteration", "pruner", "seconds"]],
}

# TFLite formats whose teacher and final student are timed side by side at the end of a
# run -> the prefix of their final.csv columns (<prefix>_latency_ms).
SIDE_BY_SIDE_FORMATS = {"tflite": "float", "tflite_int8": "int8"}


class TableStore:
    """The CSV tables of one run directory: ``<root>/<name>.csv`` for every name in
    ``schemas``, with those columns in that order.

    Args:
        run: the :class:`~epkd_tf.records.run_dir.RunDir` the tables live in (its
            ``path`` builds their paths, its ``stages`` says which rows are complete).
        schemas: table name -> its documented columns (:data:`TABLES` for a run).
        legacy: table name -> the headers earlier versions wrote (:data:`LEGACY_COLUMNS`):
            accepted as well, the missing columns read as empty.
    """

    def __init__(self, run, schemas: Dict[str, List[str]],
                 legacy: Optional[Dict[str, List[List[str]]]] = None):
        self.run = run
        self.schemas = schemas
        self.legacy = LEGACY_COLUMNS if legacy is None else legacy

    def path(self, table: str) -> str:
        """Where the table lives.

        Raises:
            KeyError: ``table`` is not one of ``schemas``.
        """
        if table not in self.schemas:
            raise KeyError(f"Unknown table {table!r}; known: {', '.join(self.schemas)}.")
        return self.run.path(f"{table}.csv")

    def read(self, table: str) -> pd.DataFrame:
        """The table's rows with the documented columns (none if it does not exist; a
        column an older file lacks is empty).

        Raises:
            DamagedRunError: naming the file if it is not a whole table with the
                documented header (a cut last row, a lost header, not CSV).
            KeyError: an unknown table.
        """
        path = self.path(table)
        if not os.path.exists(path):
            return pd.DataFrame(columns=self.schemas[table])
        self._checked_bytes(table)
        try:
            return self._current(table, pd.read_csv(path))
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise DamagedRunError(f"{path} is damaged: {' '.join(str(err).split())[:200]}.")

    def _current(self, table: str, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (read from a file with the documented or a legacy header) with the
        documented columns, those it lacks empty."""
        columns = self.schemas[table]
        return frame if list(frame.columns) == columns else frame.reindex(columns=columns)

    def _checked_bytes(self, table: str) -> bytes:
        """The table file's bytes, after checking its header and that it ends a line."""
        return self._checked(table)[0]

    def _checked(self, table: str):
        """The table file's bytes and the columns of its header (the documented ones or
        a legacy header), after checking the header and that the file ends a line."""
        path = self.path(table)
        with open(path, "rb") as f:
            data = f.read()
        first = data.split(b"\n", 1)[0].rstrip(b"\r")
        for columns in [self.schemas[table], *self.legacy.get(table, [])]:
            if first == ",".join(columns).encode():
                break
        else:
            raise DamagedRunError(f"{path} is damaged: its first line is not the header "
                                  f"{','.join(self.schemas[table])}.")
        if not data.endswith(b"\n"):
            raise DamagedRunError(f"{path} is damaged: its last row is cut off.")
        return data, columns

    def append(self, table: str, rows: pd.DataFrame) -> None:
        """Appends rows (columns in the documented order), atomically. The bytes already
        in the file are kept as they are (only appended to), so that the sizes and
        digests completed stages recorded stay valid.

        Raises:
            DamagedRunError: the file already there is damaged (see :meth:`read`).
            KeyError: an unknown table.
        """
        path = self.path(table)
        if os.path.exists(path):
            # A file with a legacy header (a run written by an earlier version) is
            # appended to with its own columns: every row stays readable under its header.
            data, columns = self._checked(table)
            data += rows.reindex(columns=columns).to_csv(index=False, header=False).encode()
        else:
            data = rows.reindex(columns=self.schemas[table]).to_csv(index=False).encode()

        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(data)
        atomic_write(path, write)

    def replace(self, table: str, rows: pd.DataFrame) -> None:
        """Replaces a table's rows (columns in the documented order), atomically.

        Raises:
            KeyError: an unknown table.
        """
        rows = rows.reindex(columns=self.schemas[table])
        atomic_write(self.path(table), lambda tmp: rows.to_csv(tmp, index=False))

    def truncate(self, table: str, size: int) -> None:
        """Cuts the table file back to its first ``size`` bytes, atomically, if it is
        longer (what a completed stage recorded of it: rows appended after are dropped).

        Raises:
            KeyError: an unknown table.
        """
        path = self.path(table)
        if os.path.isfile(path) and os.path.getsize(path) > size:
            with open(path, "rb") as f:
                data = f.read(size)
            self.run.write_bytes(os.path.relpath(path, self.run.root), data)

    def read_completed(self, table: str) -> pd.DataFrame:
        """The table's rows of completed stages only: the bytes the last completed stage
        recorded in the run's stage ledger (a run written before records existed: the
        rows of completed iterations).

        Raises:
            DamagedRunError: the file or progress.json is damaged.
            KeyError: an unknown table.
        """
        ledger = self.run.stages
        state = ledger.progress()
        records = ledger.records(state)
        if records is None or not records:
            frame = self.read(table)
            done = state["iterations_done"] if state["teacher_done"] else -1
            if "iteration" in frame.columns:
                return frame[frame["iteration"].fillna(0) <= done].reset_index(drop=True)
            return frame if done >= 0 else frame.iloc[0:0]
        recorded = records[-1]["tables"].get(table)
        if recorded is None or not os.path.exists(self.path(table)):
            return pd.DataFrame(columns=self.schemas[table])
        data = self._checked_bytes(table)[:recorded["bytes"]]
        return self._current(table, pd.read_csv(io.BytesIO(data)))
