"""What a run writes as the algorithm goes: each stage's checkpoint (its exports with
--export_every_student) and table rows, ``progress.json`` last (the stage's commit), and
the final student's exports.

:class:`epkd_tf.loop.EPKD` decides; the recorder writes. A stage is written in one order
everywhere: the checkpoint and exports, then the rows of every table, then the timings,
then the progress mark. A run killed before the mark has written nothing that a resumed
run trusts (``RunDir.drop_unfinished`` removes it).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import pandas as pd

from epkd_tf.deploy import exports, saved_model
from epkd_tf.deploy import tflite as tflite_files
from epkd_tf.records import FINAL, SIDE_BY_SIDE_FORMATS, TABLES, RunDir
from epkd_tf.timing import Clock

log = logging.getLogger("epkd_tf")


def stage_name(iteration: int) -> str:
    """The model name of a stage's exports: ``teacher`` (0) or ``student_<k>``."""
    return "teacher" if iteration == 0 else f"student_{iteration}"


class Recorder:
    """Writes one run's stages into ``run``.

    Args:
        run: the run directory.
        cfg: the run's :class:`epkd_tf.config.RunConfig` (export formats, timing settings).
        data: the run's data (the serving signature's preprocessing, int8 calibration).
        clock: the run's clock; its phases go to ``timings.csv`` with each stage.
        calibration: returns the run's int8 calibration inputs (drawn once by the run, so
            the exports and the latency budget calibrate on the same examples).
    """

    def __init__(self, run: RunDir, cfg, data, clock: Clock,
                 calibration: Callable[[], np.ndarray]):
        self.run, self.cfg, self.data, self.clock = run, cfg, data, clock
        self.calibration = calibration

    def tensorboard(self, name: str):
        """A TensorBoard callback logging into ``tensorboard/<name>``."""
        import tf_keras
        return tf_keras.callbacks.TensorBoard(self.run.tensorboard_dir(name),
                                              write_graph=False, profile_batch=0)

    # -- one model's checkpoint and exports ----------------------------------------------
    def export(self, model, iteration: int, test_accuracy: float, candidates=()):
        """Saves the stage's checkpoint and, with --export_every_student, writes ``model``
        in every --export_formats format (with --export_candidates, the iteration's
        ``candidates`` too); its deployment.csv rows (none without exports) and the float
        TFLite bytes (None when tflite is not exported)."""
        cfg, run = self.cfg, self.run
        serving_name = "teacher" if iteration == 0 else "student"
        checkpoint = (run.teacher_checkpoint() if iteration == 0
                      else run.student_checkpoint(iteration))
        written = (pd.DataFrame(), None)
        with self.clock.phase("export", iteration, serving_name):
            run.save_checkpoint(model, checkpoint)
            if cfg.export_every_student:
                written = self.write_exports(model, stage_name(iteration), iteration,
                                             serving_name, max(iteration, 1), test_accuracy,
                                             iteration)
            if cfg.export_candidates:
                self.export_candidates(iteration, candidates)
        return written

    def write_exports(self, model, name: str, iteration: int, serving_name: str,
                      version: int, test_accuracy: float, phase_iteration: int):
        """``model`` written as ``name`` in every --export_formats format and measured
        (:func:`epkd_tf.deploy.exports.export_model`): its deployment.csv rows and float
        TFLite bytes."""
        cfg = self.cfg
        calibration = self.calibration() if "tflite_int8" in cfg.export_formats else None
        return exports.export_model(
            self.run, model, name, cfg.export_formats, serving_name=serving_name,
            version=version, iteration=iteration, data=self.data,
            latency_runs=cfg.latency_runs, threads=cfg.tflite_threads,
            test_accuracy=test_accuracy, calibration=calibration,
            int8_dense_per_channel=cfg.int8_dense_per_channel,
            measuring=lambda: self.clock.phase("deployment_evaluation", phase_iteration,
                                               serving_name))

    def export_candidates(self, iteration: int, candidates) -> None:
        """Every candidate of the iteration as a SavedModel (--export_candidates): the
        models exactly as they were evaluated for candidates.csv."""
        run, data = self.run, self.data
        raw_shape = saved_model.raw_image_shape(data)
        for c in candidates:
            run.write_directory(run.candidate_dir(iteration, c.pruner),
                                lambda tmp, m=c.model: saved_model.export_saved_model(
                                    m, tmp, data.recipe.preprocess, raw_shape,
                                    data.recipe.batchable))

    # -- stages --------------------------------------------------------------------------
    def teacher_done(self, row: dict, history: pd.DataFrame,
                     deployment: pd.DataFrame) -> None:
        """Commits the teacher stage: its training history, its row, its deployment rows."""
        run = self.run
        run.tables.append("teacher_history", history)
        run.tables.append("teacher", pd.DataFrame([row]))
        run.tables.append("deployment", deployment)
        run.tables.append("timings", self.clock.flush())
        run.stages.mark(teacher_done=True)

    def iteration_done(self, iteration: int, tables: Dict[str, pd.DataFrame]) -> None:
        """Commits iteration ``iteration``: ``tables`` (table name -> its new rows), then
        the timings, then the progress mark."""
        with self.clock.phase("logging", iteration):
            for name, rows in tables.items():
                self.run.tables.append(name, rows)
        self.run.tables.append("timings", self.clock.flush(iteration))
        self.run.stages.mark(iterations_done=iteration)

    def run_done(self) -> None:
        """Commits the last stage: the report, the timings, ``finished``."""
        from epkd_tf.records.report import write_report
        with self.clock.phase("logging"):
            write_report(self.run, budget=self.cfg.budget.budget,
                         latency_format=self.cfg.budget.latency_format)
        self.run.tables.append("timings", self.clock.flush())
        self.run.stages.mark(finished=True)

    # -- the final student ---------------------------------------------------------------
    def final(self, final: int, stopped: str, teacher_model,
              load_student: Callable[[int], object]) -> None:
        """Names the final student (``final.csv``; ``stopped``: why the run ended) and
        exports it in every --export_formats format under the name ``final``
        (``serving/final/1``, ``tflite/final*.tflite``, ``keras3/final.keras``; copies of
        its own exports with --export_every_student), with the teacher and it timed side
        by side. Part of the run's last stage: an interrupted one is dropped and done
        again on resume."""
        run = self.run
        if final == 0:
            log.warning("warning: no student is within --max_accuracy_drop of the teacher; "
                        "the final model is the teacher itself")
            row = run.tables.read("teacher").iloc[0]
        else:
            row = run.tables.read("students").set_index("iteration").loc[final]
        with self.clock.phase("export", 0, FINAL):
            if self.cfg.export_every_student:     # copies of its own exports
                rows = exports.copy_exports(run, stage_name(final), FINAL, iteration=final)
            else:
                # Only the final model is exported, here (an interrupted attempt's files
                # go first).
                exports.remove_exports(run, FINAL)
                model = teacher_model if final == 0 else load_student(final)
                rows, _ = self.write_exports(model, FINAL, final, FINAL, 1,
                                             float(row["test_accuracy"]), 0)
        if rows.empty:      # no --export_formats
            rows = pd.DataFrame(columns=TABLES["deployment"])
        with self.clock.phase("student_evaluation", final):
            latencies = self.side_by_side(final, rows, teacher_model, load_student)
        for fmt, (_, final_ms, final_p90) in latencies.items():
            at = rows["format"] == fmt
            rows.loc[at, "latency_ms_median"], rows.loc[at, "latency_ms_p90"] = \
                final_ms, final_p90
        columns = {}
        for fmt, prefix in SIDE_BY_SIDE_FORMATS.items():
            teacher_ms, final_ms, _ = latencies.get(fmt, (np.nan, np.nan, np.nan))
            columns[f"teacher_{prefix}_latency_ms"] = teacher_ms
            columns[f"{prefix}_latency_ms"] = final_ms
        run.tables.append("final", pd.DataFrame([{
            "iteration": final, "pruner": "teacher" if final == 0 else row["pruner"],
            "nonzero_params": row["nonzero_params"], "macs": row["macs"],
            "cost": row["cost"], "validation_accuracy": row["validation_accuracy"],
            "test_accuracy": row["test_accuracy"], **columns, "stopped": stopped}]))
        run.tables.append("deployment", rows)

    def side_by_side(self, final: int, final_rows: pd.DataFrame, teacher_model,
                     load_student: Callable[[int], object]) -> Dict[str, tuple]:
        """The teacher's and the final student's TFLite files timed side by side
        (interleaved rounds, --latency_runs invokes each, --tflite_threads): format ->
        (teacher median ms, final median ms, final 90th percentile ms), for every
        format of SIDE_BY_SIDE_FORMATS the final student was exported in; a teacher file
        that was not exported (the default, without --export_every_student) and float
        TFLite when it was not exported are converted here, in memory. The headline's
        speed-ups are these ratios, not ratios of medians measured minutes apart."""
        deployment = self.run.tables.read("deployment")
        files: Dict[str, list] = {}
        for fmt in SIDE_BY_SIDE_FORMATS:
            teacher = deployment[(deployment["model"] == "teacher")
                                 & (deployment["format"] == fmt)]
            student = final_rows[final_rows["format"] == fmt]
            if not len(student):
                continue
            final_file = Path(self.run.path(student["path"].iloc[0])).read_bytes()
            if len(teacher):
                teacher_file = Path(self.run.path(teacher["path"].iloc[0])).read_bytes()
            else:       # the teacher was not exported: converted here, in memory
                calibration = self.calibration() if fmt == "tflite_int8" else None
                teacher_file = tflite_files.to_tflite(
                    teacher_model, fmt, calibration,
                    dense_per_channel=self.cfg.int8_dense_per_channel)
            files[fmt] = [teacher_file, final_file]
        if "tflite" not in files:
            model: Optional[object] = teacher_model if final == 0 else load_student(final)
            files["tflite"] = [tflite_files.to_tflite(teacher_model),
                               tflite_files.to_tflite(model)]
        timed = {}
        for fmt, (teacher_file, final_file) in files.items():
            (t, _), (f, f90) = tflite_files.tflite_latency_side_by_side(
                [teacher_file, final_file], runs=self.cfg.latency_runs,
                threads=self.cfg.tflite_threads, seed=self.cfg.data.seed)
            timed[fmt] = (t, f, f90)
        return timed
