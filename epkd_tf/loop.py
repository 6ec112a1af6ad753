"""The EPKD algorithm: train a teacher, then per iteration prune, rank, distil, record.

    teacher = train(teacher)
    student = teacher
    for iteration in 1..N:
        result  = step(student, iteration, target = keep_ratio × nonzero_params(student))
        #   candidates = [pruner(student, target) for pruner in pruners]   # equal sizes
        #   ranked     = rank(candidates, (w_train·train_acc + w_sel·selection_acc) / Σw)
        #   student    = distil(copy of ranked[0], original teacher, T = schedule(iteration))
        #                # a NaN/Inf loss: the previous student is kept (--fail_on_nan: stop)
        #                # less accurate on the selection split than ranked[0]: ranked[0] goes on
        student = result.student
        record(result); export(student)                                # deployment.csv
    report(run)                                                        # report.md, plots/

``EPKD.step`` is the one implementation of an iteration: the run (``EPKD.__call__``), the
study's ``epkd`` method and the Python API all call it. Candidates are never changed once
made and evaluated (the winner is distilled as a copy), so every exported candidate is the
model its ``candidates.csv`` row describes. The selection split is ``--validation_split``
when set (no test example then influences any choice), else the test split (the seed's
definition, whose test accuracies of selected students are optimistic).

The teacher is trained from ``--teacher`` or loaded from ``--teacher_path``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import faults, training
from epkd_tf.budget import MeasureContext, make_measure, multiply_accumulates
from epkd_tf.config import RunConfig
from epkd_tf.deploy import exports as deploy
from epkd_tf.deploy import tflite as tflite_files
from epkd_tf.distill import Distiller, batchnorm
from epkd_tf.errors import NoCandidateError, NonFiniteLossError  # noqa: F401  (re-exported)
from epkd_tf.models import build_model
from epkd_tf.pruning import Candidate, PruningContext, PruningError, criteria_correlation
from epkd_tf.records import SIDE_BY_SIDE_FORMATS, RunDir
from epkd_tf.timing import Clock
from epkd_tf.training import LossGuard

log = logging.getLogger("epkd_tf")



def weighted_score(train_accuracy: float, test_accuracy: float, weights) -> float:
    """(w_train · train + w_test · test) / (w_train + w_test); the candidates' ranking key."""
    w_train, w_test = weights
    return (w_train * train_accuracy + w_test * test_accuracy) / (w_train + w_test)


def rank_candidates(table: pd.DataFrame, weights,
                    selection: str = "test_accuracy") -> pd.DataFrame:
    """Adds ``weighted_score`` and ``rank`` (1 = best) to a candidates table:
    ``(w_train · train_sample_accuracy + w_sel · selection) / (w_train + w_sel)``, where
    ``selection`` names the column of the selection split (``validation_accuracy`` or
    ``test_accuracy``). Ties keep the order of --pruners, so the ranking is deterministic.
    """
    table = table.copy()
    train = table["train_sample_accuracy" if "train_sample_accuracy" in table
                  else "train_accuracy"]
    table["weighted_score"] = [weighted_score(tr, se, weights)
                               for tr, se in zip(train, table[selection])]
    # Candidates a pruner could not make for this budget (``skipped``) are not ranked.
    ranked = (table["skipped"].isna() | (table["skipped"] == "")).to_numpy() \
        if "skipped" in table else np.ones(len(table), dtype=bool)
    scores = np.where(ranked, table["weighted_score"].to_numpy(dtype=float), -np.inf)
    order = np.lexsort((np.arange(len(table)), -scores))
    ranks = np.full(len(table), np.nan)
    ranks[order[:int(ranked.sum())]] = np.arange(1, int(ranked.sum()) + 1)
    table["rank"] = ranks if not ranked.all() else ranks.astype(int)
    return table


def _tensorboard(run: RunDir, name: str):
    return tf_keras.callbacks.TensorBoard(run.tensorboard_dir(name), write_graph=False,
                                          profile_batch=0)


@dataclasses.dataclass
class IterationResult:
    """What one EPKD iteration made (``EPKD.step``)."""

    iteration: int
    target: float                     # the budget cost every candidate was made to
    temperature: float
    candidates: List[Candidate]       # as made and evaluated, never changed afterwards
    table: pd.DataFrame               # their candidates.csv rows, ranked
    winner: Candidate
    student: tf_keras.Model           # a distilled copy of the winner, the winner itself
                                      # (kept_candidate) or the previous one (kept_previous)
    kept_previous: bool               # the winner's distillation hit a NaN/Inf loss
    nonfinite: Optional[str]          # where it did
    finetune_history: pd.DataFrame
    epochs: int                       # every epoch any candidate or the student trained
    skipped: Dict[str, str] = dataclasses.field(default_factory=dict)  # pruner -> why
    # Distillation left the winner less accurate on the selection split, so the winner
    # as ranked goes on; the distilled copy's selection accuracy (NaN when not measured).
    kept_candidate: bool = False
    distilled_selection_accuracy: float = np.nan

    @property
    def selection_column(self) -> str:
        return table_selection(self.table)

    @property
    def winner_selection_accuracy(self) -> float:
        return winner_selection_accuracy(self.table)


def table_selection(table: pd.DataFrame) -> str:
    """The column of a candidates table that holds the selection split's accuracy."""
    return ("validation_accuracy" if table["validation_accuracy"].notna().any()
            else "test_accuracy")


def winner_selection_accuracy(table: pd.DataFrame) -> float:
    """The winning (rank 1) candidate's selection-split accuracy, as ranked."""
    return float(table.loc[table["rank"] == 1, table_selection(table)].iloc[0])


class EPKD:
    """EPKD over ``cfg`` on loaded ``data``.

    ``run`` is the run directory the whole run (``__call__``) writes; ``step`` alone needs
    none (the study and the Python API use it without files). ``teacher`` (and its cached
    ``teacher_logits``) may be given when the caller already holds the trained teacher.
    """

    def __init__(self, cfg: RunConfig, data, run: Optional[RunDir] = None,
                 verbose: int = 0, teacher: Optional[tf_keras.Model] = None,
                 teacher_logits=None):
        self.cfg, self.data, self.run, self.verbose = cfg, data, run, verbose
        self.pruners = cfg.pruning.make_pruners()
        self.schedule = cfg.distill.schedule()
        #: The budget's measure and how it measures (README, Budgets).
        self.measure = make_measure(cfg.budget.budget)
        self.measure_context = MeasureContext(
            latency_format=cfg.budget.latency_format, threads=cfg.tflite_threads,
            runs=cfg.latency_runs, seed=cfg.data.seed, reference=teacher)
        self.clock = Clock()
        self.teacher_model = teacher
        self._teacher_logits = teacher_logits
        self._calibration = None
        self._bn_batches = None
        self._pruning_context: Optional[PruningContext] = None
        self.last_result: Optional[IterationResult] = None

    # -- the algorithm -------------------------------------------------------------------
    def __call__(self) -> pd.DataFrame:
        tf_keras.utils.set_random_seed(self.cfg.data.seed)
        self.run.stages.drop_unfinished()
        teacher = self.teacher_model = self.teacher()
        # Every later latency is timed side by side with the teacher and scaled by its
        # recorded latency (a resumed run keeps the same scale).
        self.measure_context.reference = teacher
        self.measure_context.reference_costs[self.measure.name] = self.recorded_cost(0)
        done = self.run.stages.progress()["iterations_done"]
        student = (teacher if done == 0 else
                   self.run.stages.load_checkpoint(self.run.student_checkpoint(done)))
        cost = self.recorded_cost(done)
        self.iterations_started = time.perf_counter()
        stopped = f"--iterations={self.cfg.iterations} reached"
        for iteration in range(done + 1, self.cfg.iterations + 1):
            reason = self.stop_reason()
            if reason:
                log.info("Stopping before iteration %d: %s", iteration, reason)
                stopped = reason
                break
            tf_keras.utils.set_random_seed(self.cfg.data.seed + iteration)
            try:
                result = self.last_result = self.step(student, iteration,
                                                      self.next_target(cost),
                                                      current_cost=cost)
            except NoCandidateError as err:
                # The per-layer floors are reached: the natural end of a run whose
                # --iterations is an upper bound (nothing of the iteration was written,
                # so a resumed run stops here too).
                stopped = f"iteration {iteration}: {err}"
                log.warning("Stopping at iteration %d: %s", iteration, err)
                break
            student = result.student
            cost = self.record(result)
            faults.reached(f"iteration_{iteration}_done")
            self.report_progress(iteration, done)
        stopped = self.stop_reason() or stopped
        self.finalize(stopped)
        from epkd_tf.records.report import write_report
        with self.clock.phase("logging"):
            write_report(self.run)
        self.run.tables.append("timings", self.clock.flush())
        self.run.stages.mark(finished=True)
        return self.run.tables.read("students")

    # -- budgets and stop rules ----------------------------------------------------------
    def cost_of(self, model) -> float:
        """``model``'s cost in the budget's measure (measured on the runtime for latency)."""
        if self.measure.name == "latency" and self.cfg.budget.latency_format == "tflite_int8":
            self.measure_context.calibration = self.calibration()
        return self.measure.of(model, self.measure_context)

    def next_target(self, cost: float) -> float:
        """``keep_ratio`` × the current student's cost, but never below a --target_* goal in
        the same measure (the last iteration lands on it instead of overshooting)."""
        target = self.cfg.keep_ratio * cost
        for goal in self.cfg.budget.goals():
            if goal.measure == self.measure.name:
                target = max(target, goal.value)
        return int(round(target)) if self.measure.name == "params" else float(target)

    def recorded_cost(self, iteration: int) -> float:
        """The budget cost of the teacher (0) or of iteration ``iteration``'s student, as
        recorded when it was made (so a resumed run aims at the same targets)."""
        if iteration == 0:
            return float(self.run.tables.read("teacher").iloc[0]["cost"])
        students = self.run.tables.read("students").set_index("iteration")
        return float(students.loc[iteration, "cost"])

    def selection_accuracy(self, row) -> float:
        """A teacher.csv / students.csv row's accuracy on the selection split."""
        if self.has_validation:
            return float(row["validation_accuracy"])
        return float(row["test_accuracy"])

    def stop_reason(self) -> Optional[str]:
        """Why no further iteration should run, judged on what is recorded (the same
        decision when resumed): every --target_* goal met, or the last student more than
        --max_accuracy_drop points below the teacher on the selection split."""
        students = self.run.tables.read("students")
        if students.empty:
            return None
        last = students.iloc[-1]
        if self.cfg.budget.goals() and bool(last["goal_met"]):
            return f"iteration {int(last['iteration'])}'s student meets every --target_* goal"
        drop = self.cfg.budget.max_accuracy_drop
        if drop is not None:
            teacher = self.selection_accuracy(self.run.tables.read("teacher").iloc[0])
            lost = 100 * (teacher - self.selection_accuracy(last))
            if lost > drop:
                return (f"iteration {int(last['iteration'])}'s student is {lost:.2f} points "
                        f"below the teacher on the {self.selection_split} split "
                        f"(--max_accuracy_drop={drop:g})")
        return None

    @property
    def selection_split(self) -> str:
        return "validation" if self.has_validation else "test"

    def goals_met(self, model, costs: Dict[str, float]) -> bool:
        """Whether ``model`` meets every --target_* goal (``costs``: measures known)."""
        for goal in self.cfg.budget.goals():
            if goal.measure not in costs:
                costs[goal.measure] = make_measure(goal.measure).of(model, self.measure_context)
            if not goal.met(costs[goal.measure]):
                return False
        return True

    def choose_final(self) -> int:
        """The iteration of the final student: the smallest in the budget's measure whose
        selection accuracy is within --max_accuracy_drop of the teacher's (any student
        without that rule); 0 (the teacher) when none is."""
        students = self.run.tables.read("students")
        if students.empty:
            return 0
        drop = self.cfg.budget.max_accuracy_drop
        if drop is not None:
            teacher = self.selection_accuracy(self.run.tables.read("teacher").iloc[0])
            within = [100 * (teacher - self.selection_accuracy(row)) <= drop + 1e-9
                      for _, row in students.iterrows()]
            students = students[within]
        if students.empty:
            return 0
        best = students.sort_values(["cost", "iteration"], ascending=[True, False]).iloc[0]
        return int(best["iteration"])

    def finalize(self, stopped: str) -> None:
        """Names the final student (``final.csv``, ``stopped``: why the run ended) and
        exports it under the name ``final`` (``serving/final/1``, ``tflite/final*.tflite``,
        copies of its own exports). Part of the run's last stage: an interrupted one is
        dropped and done again on resume."""
        from epkd_tf.records import FINAL
        final = self.choose_final()
        with self.clock.phase("export", 0, FINAL):
            rows = deploy.copy_exports(self.run, "teacher" if final == 0 else
                                       f"student_{final}", FINAL, iteration=final)
        if final == 0:
            log.warning("warning: no student is within --max_accuracy_drop of the teacher; "
                        "the final model is the teacher itself")
            row = self.run.tables.read("teacher").iloc[0]
        else:
            row = self.run.tables.read("students").set_index("iteration").loc[final]
        with self.clock.phase("student_evaluation", final):
            latencies = self.side_by_side(final, rows)
        for fmt, (_, final_ms, final_p90) in latencies.items():
            at = rows["format"] == fmt
            rows.loc[at, "latency_ms_median"], rows.loc[at, "latency_ms_p90"] = final_ms, \
                final_p90
        columns = {}
        for fmt, prefix in SIDE_BY_SIDE_FORMATS.items():
            teacher_ms, final_ms, _ = latencies.get(fmt, (np.nan, np.nan, np.nan))
            columns[f"teacher_{prefix}_latency_ms"] = teacher_ms
            columns[f"{prefix}_latency_ms"] = final_ms
        self.run.tables.append("final", pd.DataFrame([{
            "iteration": final, "pruner": "teacher" if final == 0 else row["pruner"],
            "nonzero_params": row["nonzero_params"], "macs": row["macs"],
            "cost": row["cost"], "validation_accuracy": row["validation_accuracy"],
            "test_accuracy": row["test_accuracy"], **columns, "stopped": stopped}]))
        self.run.tables.append("deployment", rows)

    def side_by_side(self, final: int, final_rows: pd.DataFrame) -> Dict[str, tuple]:
        """The teacher's and the final student's TFLite files timed side by side
        (interleaved rounds, --latency_runs invokes each, --tflite_threads): format ->
        (teacher median ms, final median ms, final 90th percentile ms), for every
        exported format of SIDE_BY_SIDE_FORMATS; float TFLite is converted here when it
        was not exported. The headline's speed-ups are these ratios, not ratios of
        medians measured minutes apart."""
        deployment = self.run.tables.read("deployment")
        files = {}
        for fmt in SIDE_BY_SIDE_FORMATS:
            teacher = deployment[(deployment["model"] == "teacher")
                                 & (deployment["format"] == fmt)]
            student = final_rows[final_rows["format"] == fmt]
            if len(teacher) and len(student):
                files[fmt] = [Path(self.run.path(path)).read_bytes()
                              for path in (teacher["path"].iloc[0], student["path"].iloc[0])]
        if "tflite" not in files:
            model = (self.teacher_model if final == 0 else
                     self.run.stages.load_checkpoint(self.run.student_checkpoint(final)))
            files["tflite"] = [tflite_files.to_tflite(self.teacher_model), tflite_files.to_tflite(model)]
        timed = {}
        for fmt, (teacher_file, final_file) in files.items():
            (t, _), (f, f90) = tflite_files.tflite_latency_side_by_side(
                [teacher_file, final_file], runs=self.cfg.latency_runs,
                threads=self.cfg.tflite_threads, seed=self.cfg.data.seed)
            timed[fmt] = (t, f, f90)
        return timed

    def step(self, student: tf_keras.Model, iteration: int, target: float,
             current_cost: Optional[float] = None) -> IterationResult:
        """One iteration: every pruner that can lower the budget's measure makes a
        candidate of cost ``target`` from ``student`` (whose measured cost,
        ``current_cost``, calibrates modelled measures); they are evaluated and ranked on
        the selection split; a copy of the winner is distilled from the original teacher
        at this iteration's temperature. ``student`` and the candidates are left as they
        are."""
        if self.teacher_model is None:
            raise ValueError("EPKD.step needs the trained teacher: pass teacher= or run the "
                             "whole algorithm.")
        if current_cost is None and not self.measure.exact:
            current_cost = self.cost_of(student)
        skipped = {p.name: self.measure.why_not(p) for p in self.pruners
                   if not self.measure.lowered_by(p)}
        for name, why in skipped.items():
            log.info("Iteration %d: %s left out (%s)", iteration, name, why)
        if len(skipped) == len(self.pruners):
            raise ValueError(f"--budget={self.measure.name}: none of --pruners can lower it "
                             f"({'; '.join(skipped.values())}); add a structured pruner.")
        candidates = self.make_candidates(student, target, iteration, current_cost, skipped)
        table = self.evaluate(candidates, iteration, target, skipped)
        winner_name = table.loc[table["rank"] == 1, "pruner"].iloc[0]
        winner = next(c for c in candidates if c.pruner == winner_name)
        distilled, history, nonfinite = self.distil(winner.model, iteration)
        kept_previous = nonfinite is not None
        kept_candidate, distilled_accuracy = False, np.nan
        if kept_previous:
            self.keep_previous(iteration, winner.pruner, nonfinite)
        elif len(history):
            kept_candidate, distilled_accuracy = self.distillation_regressed(
                distilled, winner_selection_accuracy(table), iteration, winner.pruner)
        return IterationResult(
            iteration=iteration, target=target, temperature=self.schedule(iteration),
            candidates=candidates, table=table, winner=winner,
            student=(student if kept_previous else winner.model if kept_candidate
                     else distilled),
            kept_previous=kept_previous, nonfinite=nonfinite, finetune_history=history,
            epochs=sum(c.epochs for c in candidates) + len(history), skipped=skipped,
            kept_candidate=kept_candidate, distilled_selection_accuracy=distilled_accuracy)

    def distillation_regressed(self, distilled, winner_accuracy: float, iteration: int,
                               pruner: str):
        """The rule for a distillation that made things worse: the distilled copy is
        evaluated on the selection split, and when it is less accurate there than the
        winning candidate was when ranked, the candidate as ranked goes on as the
        iteration's student and the run says so. Returns (kept the candidate, the
        distilled copy's selection accuracy)."""
        with self.clock.phase("student_evaluation", iteration):
            accuracy = training.accuracy(distilled, self.selection_data())
        if accuracy >= winner_accuracy:
            return False, accuracy
        log.warning("warning: iteration %d: distillation left the %s candidate less accurate "
                    "on the %s split (%.4f -> %.4f); the candidate goes on undistilled "
                    "(students.csv kept_candidate)", iteration, pruner,
                    self.selection_split, winner_accuracy, accuracy)
        return True, accuracy

    def keep_previous(self, iteration: int, pruner: str, nonfinite: str) -> None:
        """After a NaN/Inf distillation loss the iteration keeps the previous student (the
        teacher before iteration 1); with --fail_on_nan the run stops instead."""
        what = (f"iteration {iteration}: the distillation of the {pruner} candidate hit a "
                f"non-finite {nonfinite}")
        if self.cfg.fail_on_nan:
            raise NonFiniteLossError(f"{what}; stopped (--fail_on_nan). Lower "
                                     f"--finetune_learning_rate (now "
                                     f"{self.cfg.distill.learning_rate:g}).")
        log.warning("warning: %s; fine-tune stopped, iteration %d keeps the previous "
                    "student", what, iteration)

    # -- stages --------------------------------------------------------------------------
    def teacher(self) -> tf_keras.Model:
        """Trains the teacher, or loads it from --teacher_path (or reloads it when
        resuming), and exports it."""
        run, cfg = self.run, self.cfg
        if run.stages.progress()["teacher_done"]:
            log.info("Teacher: reloaded from %s", run.teacher_checkpoint())
            return run.stages.load_checkpoint(run.teacher_checkpoint())
        given = self.teacher_model is not None or bool(cfg.teacher.teacher_path)
        if self.teacher_model is not None:      # given by the caller (the Python API)
            model = self.teacher_model
            history = pd.DataFrame(columns=training.HISTORY_COLUMNS)   # not trained here
            log.info("Teacher: %s, %d params, given (not trained)", model.name,
                     model.count_params())
        elif cfg.teacher.teacher_path:
            from epkd_tf.models.user import load_user_model
            model = load_user_model(cfg.teacher.teacher_path, "teacher_path")
            history = pd.DataFrame(columns=training.HISTORY_COLUMNS)   # not trained here
            log.info("Teacher: %s, %d params, loaded from %s (not trained)", model.name,
                     model.count_params(), cfg.teacher.teacher_path)
        else:
            model, history = self.train_teacher()
        reestimated, selection = False, np.nan
        if given:
            model, reestimated, selection = self.given_teacher_statistics(model)
        test_acc, val_acc = self.test_and_validation_accuracy(model, 0, selection)
        with self.clock.phase("export", 0, "teacher"):
            run.save_checkpoint(model, run.teacher_checkpoint())
            deployment, tflite = self.deploy(model, "teacher", "teacher", 1, iteration=0,
                                             test_accuracy=test_acc)
        row = dict(self.measured_row(model, 0, tflite, test_acc, val_acc),
                   bn_reestimated=reestimated)
        run.tables.append("teacher_history", history)
        run.tables.append("teacher", pd.DataFrame([row]))
        run.tables.append("deployment", deployment)
        run.tables.append("timings", self.clock.flush())
        run.stages.mark(teacher_done=True)
        log.info("Teacher done; elapsed %.0f s", self.clock.elapsed())
        return model

    def given_teacher_statistics(self, model):
        """A given teacher (not trained by the run), whether its BatchNormalization
        statistics were re-estimated, and its selection-split accuracy (NaN when not
        measured: no such layers or batches): a copy with statistics re-estimated on
        :meth:`bn_batches` replaces it when the copy is more accurate on the selection
        split by more than one binomial standard error of the given accuracy.

        A short-trained model's moving statistics lag its weights (momentum 0.99 keeps 72%
        of the initial ones after 32 steps), so its inference function is far from what it
        learned; every student distilled from that function inherits the damage (a
        one-epoch residual teacher at 90.1% gave a 56.1% student from a 94.2% candidate).
        The re-estimated teacher is what the run records, exports and distils from
        (teacher.csv ``bn_reestimated``); the user's file or object is not changed."""
        batches = self.bn_batches(model)
        if not batches:
            return model, False, np.nan
        with self.clock.phase("student_evaluation", 0):
            split = self.selection_data()
            given = training.accuracy(model, split)
            copy = training.copy_model(model)
            batchnorm.recalibrate(copy, batches, len(batches))
            estimated = training.accuracy(copy, split)
        examples = (self.data.spec.num_validation if self.has_validation
                    else self.data.spec.num_test)
        noise = math.sqrt(given * (1.0 - given) / max(examples, 1))
        if estimated - given > noise:
            log.warning("warning: the teacher's BatchNormalization statistics lag its "
                        "weights: %s accuracy %.4f as given, %.4f with statistics "
                        "re-estimated on %d training batches; the run uses the re-estimated "
                        "teacher (--bn_recalibration_batches=0 keeps it as given)",
                        self.selection_split, given, estimated, len(batches))
            return copy, True, estimated
        log.info("Teacher's BatchNormalization statistics kept: %s accuracy %.4f as given, "
                 "%.4f re-estimated", self.selection_split, given, estimated)
        return model, False, given

    def train_teacher(self):
        """Builds --teacher and trains it; (model, per-epoch history). A NaN/Inf loss
        stops the run: every later stage needs the teacher."""
        cfg, spec = self.cfg, self.data.spec
        model = build_model(cfg.teacher.teacher, spec.input_shape, spec.num_classes,
                            width=cfg.teacher.width)
        log.info("Teacher: %s, %d params, training %d epochs on %d examples",
                 cfg.teacher.teacher, model.count_params(), cfg.teacher.teacher_epochs,
                 spec.num_train)
        with self.clock.phase("teacher_training"):
            history = training.train_teacher(
                model, self.data, cfg.teacher.teacher_epochs, cfg.teacher.learning_rate,
                callbacks=[_tensorboard(self.run, "teacher"),
                           training.EpochLog("Teacher", cfg.teacher.teacher_epochs)],
                verbose=self.verbose, jit_compile=cfg.jit_compile,
                bn_batches=self.bn_batches(model))
        return model, history

    def calibration(self):
        """The run's int8 calibration inputs (seeded training examples), drawn once."""
        if self._calibration is None:
            self._calibration = deploy.calibration_examples(self.data, self.cfg.data.seed)
        return self._calibration

    def bn_batches(self, teacher: Optional[tf_keras.Model] = None) -> List:
        """The run's --bn_recalibration_batches batches of seeded training examples, drawn
        once ([] when the teacher, ``teacher`` or the run's, has no BatchNormalization
        layer: nothing pruned from it has one either)."""
        if self._bn_batches is None:
            wanted = self.cfg.bn_recalibration_batches
            teacher = teacher if teacher is not None else self.teacher_model
            has_bn = teacher is not None and batchnorm.batchnorm_layers(teacher)
            self._bn_batches = (batchnorm.sample_batches(self.data, wanted,
                                                         seed=self.cfg.data.seed)
                                if has_bn else [])
        return self._bn_batches

    def recalibrate(self, model) -> None:
        """Re-estimates ``model``'s BatchNormalization statistics on :meth:`bn_batches`."""
        batches = self.bn_batches()
        batchnorm.recalibrate(model, batches, len(batches))

    def deploy(self, model, name: str, serving_name: str, version: int, iteration: int,
               test_accuracy=None):
        """Writes ``model`` in every --export_formats format; its deployment.csv rows and
        the float TFLite bytes (None when tflite is not exported)."""
        cfg = self.cfg
        if "tflite_int8" in cfg.export_formats:
            self.calibration()
        return deploy.export_model(self.run, model, name, cfg.export_formats,
                                   serving_name=serving_name, version=version,
                                   iteration=iteration, data=self.data,
                                   latency_runs=cfg.latency_runs, threads=cfg.tflite_threads,
                                   test_accuracy=test_accuracy, calibration=self._calibration,
                                   int8_dense_per_channel=cfg.int8_dense_per_channel,
                                   measuring=lambda: self.clock.phase(
                                       "deployment_evaluation", iteration, serving_name))

    def pruning_context(self, iteration: int) -> PruningContext:
        """What the criteria see: the data, the shared plan settings, the seeded samples
        (one cache for the whole run), the fine-tune rate and the run's clock."""
        cfg = self.cfg
        if self._pruning_context is None:
            self._pruning_context = PruningContext(
                self.data, cfg.pruning, seed=cfg.data.seed, batch_size=cfg.data.batch_size,
                learning_rate=cfg.distill.learning_rate, measure=self.measure,
                measure_context=self.measure_context, teacher_widths=self.teacher_widths())
        return dataclasses.replace(
            self._pruning_context,
            clock=lambda phase, pruner: self.clock.phase(phase, iteration, pruner),
            progress=f"Iteration {iteration}")

    def teacher_widths(self) -> Optional[Dict[str, int]]:
        """The original teacher's layer widths (the per-layer floor's reference), when a
        structured pruner will need them."""
        from epkd_tf.pruning import StructuredPruner
        if not any(isinstance(p, StructuredPruner) for p in self.pruners):
            return None
        from epkd_tf.pruning.base import producer_widths
        return producer_widths(self.teacher_model)

    def make_candidates(self, student, target: float, iteration: int,
                        current_cost: Optional[float] = None,
                        skipped: Optional[Dict[str, str]] = None) -> List[Candidate]:
        """Every pruner not in ``skipped`` makes its candidate of cost ``target``; a pruner
        that cannot reach it (its per-layer floors) is added to ``skipped`` with the
        reason, and when none can, :class:`NoCandidateError` is raised."""
        ctx = dataclasses.replace(self.pruning_context(iteration), current_cost=current_cost)
        skipped = {} if skipped is None else skipped
        candidates = []
        for pruner in self.pruners:
            if pruner.name in skipped:
                continue
            try:
                candidates.append(pruner.make_candidate(student, target, ctx))
            except PruningError as err:
                skipped[pruner.name] = str(err)
                log.info("Iteration %d: %s left out (%s)", iteration, pruner.name, err)
        if not candidates:
            raise NoCandidateError(f"no pruner can reach {self.measure.format(target)} "
                                   f"({'; '.join(sorted(set(skipped.values())))})")
        for candidate in candidates:
            # Removing units upstream changes what every later normalisation layer sees.
            self.recalibrate(candidate.model)
        return candidates

    def evaluate(self, candidates: List[Candidate], iteration: int, target: float = np.nan,
                 skipped: Optional[Dict[str, str]] = None) -> pd.DataFrame:
        """Accuracy, size, MACs, latency and budget cost of every candidate, ranked on the
        selection split; a row per pruner left out of the iteration (``skipped``: why)."""
        rows = []
        ranking_data = self.ranking_examples()
        validation = self.data.validation() if self.has_validation else None
        made = {c.pruner: c for c in candidates}
        for pruner in self.pruners:
            if pruner.name not in made:
                rows.append({"iteration": iteration, "pruner": pruner.name,
                             "skipped": (skipped or {}).get(pruner.name, "not made"),
                             "target_cost": target})
                continue
            c = made[pruner.name]
            with self.clock.phase("candidate_evaluation", iteration, c.pruner):
                train_acc = training.accuracy(c.model, ranking_data)
                val_acc = (training.accuracy(c.model, validation) if validation is not None
                           else np.nan)
                test_acc = training.accuracy(c.model, self.data.test())
                costs = tflite_files.measure_costs(c.model, runs=self.cfg.latency_runs)
                cost = self.candidate_cost(c, costs)
            rows.append({"iteration": iteration, "pruner": c.pruner, "skipped": "",
                         **costs.__dict__, "macs": multiply_accumulates(c.model),
                         "cost": cost, "predicted_cost": c.predicted_cost,
                         "target_cost": target, "train_sample_accuracy": train_acc,
                         "validation_accuracy": val_acc, "test_accuracy": test_acc})
        selection = "validation_accuracy" if validation is not None else "test_accuracy"
        table = rank_candidates(pd.DataFrame(rows), self.cfg.rank_weights, selection)
        for row in table.sort_values("rank").itertuples():
            if row.skipped:
                continue
            log.info("Iteration %d candidate #%d %-14s %s (target %s), train sample %.4f, "
                     "%s %.4f, score %.4f", iteration, row.rank, row.pruner,
                     self.measure.format(row.cost), self.measure.format(target),
                     row.train_sample_accuracy, selection.split("_")[0],
                     getattr(row, selection), row.weighted_score)
        return table

    def candidate_cost(self, candidate: Candidate, costs: tflite_files.Costs) -> float:
        """A candidate's measured cost in the budget's measure (latency: timed again, side
        by side with the teacher; ``costs.latency_ms`` is the candidate timed alone)."""
        if self.measure.name == "params":
            return float(costs.nonzero_params)
        if self.measure.name == "size":
            return costs.size_mb * 1e6
        return self.cost_of(candidate.model)

    @property
    def has_validation(self) -> bool:
        return bool(getattr(self.data, "has_validation", False))

    def selection_data(self):
        """The batched selection split: --validation_split when set, else the test split."""
        return self.data.validation() if self.has_validation else self.data.test()

    def ranking_examples(self):
        """The training examples whose accuracy ranks the candidates: --eval_examples of
        them (the same seeded subset every iteration, shared with any criterion that draws
        as many), or the whole split."""
        n = self.cfg.eval_examples
        if n == 0 or n >= self.data.spec.num_train:
            return self.data.train_eval()
        x, y = self.pruning_context(0).sample(n)
        import tensorflow as tf
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(self.cfg.data.batch_size)

    def teacher_logits(self):
        """The teacher's logits on the training split, computed once per run (None when
        the training data is augmented: then the teacher runs on every batch)."""
        if self._teacher_logits is None:
            from epkd_tf.distill.cache import teacher_logits_for
            # One teacher_logits row per run (computed in iteration 1): a resumed run
            # computes the cache again, and that time counts as `other` (README,
            # Reproducibility).
            resumed = self.run is not None and self.run.stages.progress()["iterations_done"] > 0
            with contextlib.nullcontext() if resumed else self.clock.phase("teacher_logits"):
                logits = teacher_logits_for(self.teacher_model, self.data)
            self._teacher_logits = False if logits is None else logits
        return None if self._teacher_logits is False else self._teacher_logits

    def distil(self, model, iteration: int):
        """Fine-tunes a copy of ``model`` (the winner, which stays as it was evaluated) by
        distillation from the original teacher; (the copy, its per-epoch history, where a
        NaN/Inf loss stopped it or None)."""
        d = self.cfg.distill
        temperature = self.schedule(iteration)
        history = pd.DataFrame(columns=["iteration", "epoch", "temperature"])
        student = training.copy_model(model)
        if not d.finetune_epochs:
            return student, history, None
        distiller = Distiller(student=student, teacher=self.teacher_model,
                              preserve_zeros=True, batchnorm=d.batchnorm)
        steps = -(-self.data.spec.num_train // self.cfg.data.batch_size)
        rate = (training.cosine_learning_rate(d.learning_rate, d.finetune_epochs, steps)
                if d.learning_rate_schedule == "cosine" else d.learning_rate)
        distiller.compile(optimizer=tf_keras.optimizers.Adam(rate),
                          metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                          alpha=d.alpha, temperature=temperature,
                          jit_compile=self.cfg.jit_compile)
        guard = LossGuard(f"finetune_{iteration}")
        callbacks = [guard, training.EpochLog(f"Iteration {iteration} distillation (T={temperature:g})",
                                              d.finetune_epochs)]
        if self.run is not None:
            callbacks.append(_tensorboard(self.run, f"finetune_{iteration}"))
        logits = self.teacher_logits()
        batches = (self.data.train(teacher_logits=logits) if logits is not None
                   else self.data.train())
        with self.clock.phase("distillation", iteration):
            fitted = distiller.fit(batches, validation_data=self.data.test(),
                                   epochs=d.finetune_epochs, verbose=self.verbose,
                                   callbacks=callbacks)
        if not guard.problem and d.batchnorm == "batch":
            # Frozen statistics are the ones the student was trained with: re-estimating
            # them would change the function distillation fitted.
            self.recalibrate(student)
        frame = training.history_frame(fitted)
        frame.insert(0, "iteration", iteration)
        frame.insert(2, "temperature", temperature)
        return student, frame, guard.problem

    def test_and_validation_accuracy(self, model, iteration: int, selection=np.nan):
        """``model``'s test and validation accuracies (NaN without a validation split);
        ``selection``, its accuracy on the selection split when already measured (NaN:
        not), is reused instead of evaluating that split again."""
        known = not np.isnan(selection)
        with self.clock.phase("student_evaluation", iteration):
            if self.has_validation:
                val_acc = selection if known else training.accuracy(model,
                                                                    self.data.validation())
                return training.accuracy(model, self.data.test()), val_acc
            return (selection if known else training.accuracy(model, self.data.test()),
                    np.nan)

    def measured_row(self, model, iteration: int, tflite: Optional[bytes],
                     test_acc: float, val_acc: float) -> dict:
        """What teacher.csv and students.csv record of a model: sizes, MACs, its cost in the
        budget's measure, its accuracies (whole training split; the validation split's
        ``val_acc``, NaN without one; the test split's ``test_acc``) and whether it meets
        every --target_* goal."""
        with self.clock.phase("student_evaluation", iteration):
            train_acc = training.accuracy(model, self.data.train_eval())
            costs = tflite_files.measure_costs(model, runs=self.cfg.latency_runs, tflite=tflite)
            measured = {"params": float(costs.nonzero_params), "size": costs.size_mb * 1e6,
                        "macs": float(multiply_accumulates(model))}
            if self.measure.name not in measured:
                measured[self.measure.name] = self.cost_of(model)
            goal_met = self.goals_met(model, measured)
        return {"iteration": iteration, **costs.__dict__, "macs": int(measured["macs"]),
                "cost": measured[self.measure.name], "train_accuracy": train_acc,
                "validation_accuracy": val_acc, "test_accuracy": test_acc,
                "goal_met": goal_met}

    def record(self, result: IterationResult) -> float:
        """Writes the iteration's rows and exports; ``progress.json`` goes last. Returns
        the student's cost in the budget's measure."""
        run, cfg, iteration = self.run, self.cfg, result.iteration
        student, winner = result.student, result.winner
        # The student's selection accuracy is known unless it is the previous student: the
        # kept-candidate rule measured the distilled copy, the ranking the candidate.
        selection = (np.nan if result.kept_previous else
                     result.winner_selection_accuracy if result.kept_candidate else
                     result.distilled_selection_accuracy)
        test_acc, val_acc = self.test_and_validation_accuracy(student, iteration, selection)
        with self.clock.phase("export", iteration, "student"):
            run.save_checkpoint(student, run.student_checkpoint(iteration))
            deployment, tflite = self.deploy(student, f"student_{iteration}", "student",
                                             iteration, iteration=iteration,
                                             test_accuracy=test_acc)
            if cfg.export_candidates:
                self.export_candidates(result)
        row = self.measured_row(student, iteration, tflite, test_acc, val_acc)
        before = float(result.table.loc[result.table["pruner"] == winner.pruner,
                                        "test_accuracy"].iloc[0])
        student_row = pd.DataFrame([{
            **row, "pruner": winner.pruner, "test_accuracy_before_finetune": before,
            "temperature": result.temperature, "kept_previous": result.kept_previous,
            "kept_candidate": result.kept_candidate,
            "distilled_selection_accuracy": result.distilled_selection_accuracy,
            "epochs": result.epochs}])
        if result.kept_previous:
            log.info("Iteration %d student: the previous one kept (%s, test %.4f)",
                     iteration, self.measure.format(row["cost"]), test_acc)
        elif result.kept_candidate:
            log.info("Iteration %d student: the %s candidate, undistilled (%s, test %.4f)",
                     iteration, winner.pruner, self.measure.format(row["cost"]), test_acc)
        else:
            log.info("Iteration %d student (%s, T=%g): %s, test %.4f -> %.4f after "
                     "distillation", iteration, winner.pruner, result.temperature,
                     self.measure.format(row["cost"]), before, test_acc)
        with self.clock.phase("logging", iteration):
            run.tables.append("candidates", result.table)
            run.tables.append("finetune_history", result.finetune_history)
            run.tables.append("criteria_correlation",
                              self.correlation(result.candidates, iteration))
            run.tables.append("students", student_row)
            run.tables.append("deployment", deployment)
        run.tables.append("timings", self.clock.flush(iteration))
        run.stages.mark(iterations_done=iteration)
        return float(row["cost"])

    def export_candidates(self, result: IterationResult) -> None:
        """Every candidate of the iteration as a SavedModel (--export_candidates): the
        models exactly as they were evaluated for candidates.csv."""
        run = self.run
        raw_shape = deploy.raw_image_shape(self.data)
        for c in result.candidates:
            run.write_directory(run.candidate_dir(result.iteration, c.pruner),
                                lambda tmp, m=c.model: deploy.export_saved_model(
                                    m, tmp, self.data.recipe.preprocess, raw_shape,
                                    self.data.recipe.batchable))

    def correlation(self, candidates: List[Candidate], iteration: int) -> pd.DataFrame:
        """Spearman of every structured criterion with the reference criterion, if it ran."""
        scored = {c.pruner: c for c in candidates if c.scores is not None}
        reference = [p.name for p in self.pruners if p.reference and p.name in scored]
        if not reference or len(scored) < 2:
            return pd.DataFrame(columns=["iteration", "criterion", "scope", "spearman"])
        graph = scored[reference[0]].graph
        frame = criteria_correlation(graph, {n: c.scores for n, c in scored.items()},
                                     reference[0])
        frame.insert(0, "iteration", iteration)
        return frame

    def report_progress(self, iteration: int, resumed_from: int) -> None:
        done_now = iteration - resumed_from
        per_iteration = (time.perf_counter() - self.iterations_started) / max(done_now, 1)
        remaining = (self.cfg.iterations - iteration) * per_iteration
        log.info("Iteration %d/%d done; elapsed %.0f s, ETA %.0f s", iteration,
                 self.cfg.iterations, self.clock.elapsed(), remaining)


def run_epkd(cfg: RunConfig, data, run: RunDir, verbose: int = 0) -> pd.DataFrame:
    """Runs (or resumes) EPKD and returns the students table."""
    return EPKD(cfg, data, run, verbose)()
