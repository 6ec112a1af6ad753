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
        record(result); checkpoint(student)        # every format too with --export_every_student
    export(final student); report(run)             # deployment.csv, report.md, plots/

``EPKD.step`` is the one implementation of an iteration: the run (``EPKD.__call__``), the
study's ``epkd`` method and the Python API all call it. Candidates are never changed once
made and evaluated (the winner is distilled as a copy), so every exported candidate is the
model its ``candidates.csv`` row describes. The selection split is ``--validation_split``
when set (no test example then influences any choice), else the test split (the seed's
definition, whose test accuracies of selected students are optimistic).

Each concern has its own home; this module only sequences them: the teacher stage
(``teachers.py``), the examples drawn once (``samples.py``), measuring models
(``evaluation.py``), ranking and the selection split (``selection.py``), the stop rules
and the final choice (``budget/stop.py``), distillation (``distill/finetune.py``) and
everything written to the run directory (``records/recorder.py``).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import faults, selection, training
from epkd_tf.budget import MeasureContext, StopRules, make_measure
from epkd_tf.config import RunConfig
from epkd_tf.distill import finetune
from epkd_tf.evaluation import Evaluator
from epkd_tf.errors import ApiError, NoCandidateError, NonFiniteLossError, UsageError
from epkd_tf.pruning import Candidate, PruningContext, PruningError, criteria_correlation
from epkd_tf.records import RunDir
from epkd_tf.records.recorder import Recorder
from epkd_tf.samples import RunSamples
from epkd_tf.teachers import TeacherStage, training_checkpoint
from epkd_tf.timing import Clock
from epkd_tf.training import LossGuard

log = logging.getLogger("epkd_tf")


@dataclasses.dataclass
class IterationResult:
    """What one EPKD iteration made (``EPKD.step``)."""

    iteration: int
    target: float                     # the budget cost every candidate was made to
    temperature: float
    candidates: List[Candidate]       # as made and evaluated, never changed afterwards
                                      # (keep_candidates=False: only the winner's model)
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
        return selection.table_selection(self.table)

    @property
    def winner_selection_accuracy(self) -> float:
        return selection.winner_selection_accuracy(self.table)


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
        #: The budget's measure and how it measures (docs/budgets.md).
        self.measure = make_measure(cfg.budget.budget)
        self.teacher_model = teacher
        self.clock = Clock()
        self._pruning_context: Optional[PruningContext] = None
        self.last_result: Optional[IterationResult] = None
        #: The examples the run draws once (calibration, BN batches, ranking, logits).
        self.samples = RunSamples(
            cfg, data, self.clock, teacher=lambda: self.teacher_model,
            sample=lambda n: self.pruning_context(0).sample(n),
            resumed=lambda: run is not None and run.stages.progress()["iterations_done"] > 0)
        if teacher_logits is not None:
            self.samples.use_teacher_logits(teacher_logits)
        self.measure_context = MeasureContext(
            latency_format=cfg.budget.latency_format, threads=cfg.tflite_threads,
            runs=cfg.latency_runs, seed=cfg.data.seed, reference=teacher,
            calibration_source=self.samples.calibration)
        self.has_validation = selection.has_validation(data)
        #: When to stop and which student is final, judged on the recorded tables.
        self.rules = StopRules(cfg.budget, self.measure, cfg.keep_ratio, self.has_validation)
        self.evaluator = Evaluator(cfg, data, self.clock, self.measure, self.measure_context,
                                   self.rules, self.samples.ranking_examples)
        #: Writes each stage (None for ``step`` alone, which writes nothing).
        self.recorder = (Recorder(run, cfg, data, self.clock, self.samples.calibration)
                         if run is not None else None)
        self.teacher_stage = TeacherStage(cfg, data, self.clock, self.samples,
                                          self.evaluator, self.recorder, verbose)

    # -- the algorithm -------------------------------------------------------------------
    def __call__(self) -> pd.DataFrame:
        tf_keras.utils.set_random_seed(self.cfg.data.seed)
        self.run.stages.drop_unfinished()
        teacher = self.teacher_model = self.teacher_stage(self.run, self.teacher_model)
        # Once the teacher's accuracy on the selection split is known: whether the
        # accuracy rule judges differences within that split's noise.
        spec = self.data.spec
        noise = self.rules.noise_warning(
            self.run.tables.read("teacher"),
            spec.num_validation if self.has_validation else spec.num_test)
        if noise:
            log.warning("%s", noise)
        # Every later latency is timed side by side with the teacher and scaled by its
        # recorded latency (a resumed run keeps the same scale).
        self.measure_context.reference = teacher
        self.measure_context.reference_costs[self.measure.name] = self.recorded_cost(0)
        done = self.run.stages.progress()["iterations_done"]
        student = teacher if done == 0 else self.load_student(done)
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
            # The previous iteration's candidates are not needed any more (its student is).
            result = self.last_result = None
            try:
                target = self.rules.next_target(
                    cost, self.removable_floor(student, iteration, cost))
                result = self.last_result = self.step(
                    student, iteration, target, current_cost=cost,
                    keep_candidates=self.cfg.export_candidates)
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
        final = self.rules.choose_final(self.run.tables.read("teacher"), self.run.tables.read("students"))
        self.recorder.final(final, stopped, self.teacher_model, self.load_student)
        self.recorder.run_done()
        return self.run.tables.read("students")

    def load_student(self, iteration: int) -> tf_keras.Model:
        """Iteration ``iteration``'s student, from its verified checkpoint."""
        return self.run.stages.load_checkpoint(self.run.student_checkpoint(iteration))

    # -- budgets and stop rules (epkd_tf.budget) -----------------------------------------
    def cost_of(self, model) -> float:
        """``model``'s cost in the budget's measure (measured on the runtime for latency)."""
        return self.measure.of(model, self.measure_context)

    def removable_floor(self, student, iteration: int, cost: float) -> float:
        """What ``--keep_ratio`` steps above: 0 (``--keep_of=cost``), or with
        ``--keep_of=removable`` the cost of the floor network, ``student`` with every
        layer at its floor, measured as the students are (0 without a structured pruner:
        sparsity can zero all of it). Measured, not predicted: the latency model is
        calibrated on the current widths, and far below them its offset can even make a
        prediction negative."""
        if self.cfg.keep_of != "removable" or not any(p.structured for p in self.pruners):
            return 0.0
        from epkd_tf.graph import analyze, remove_groups
        from epkd_tf.pruning.plan import floor_groups
        ctx = self.pruning_context(iteration)
        with self.clock.phase("surgery", iteration):        # the plan's own work
            graph = analyze(student)
            floor_model = remove_groups(graph, floor_groups(
                graph, ctx.config.layer_floor, ctx.config.channel_multiple,
                ctx.floor_widths()))
            floor = self.cost_of(floor_model)
        log.info("--keep_of=removable: the floor network costs %s of the student's %s",
                 self.measure.format(floor), self.measure.format(cost))
        return floor

    def recorded_cost(self, iteration: int) -> float:
        """The budget cost of the teacher (0) or of iteration ``iteration``'s student, as
        recorded when it was made (so a resumed run aims at the same targets)."""
        if iteration == 0:
            return float(self.run.tables.read("teacher").iloc[0]["cost"])
        students = self.run.tables.read("students").set_index("iteration")
        return float(students.loc[iteration, "cost"])

    def stop_reason(self) -> Optional[str]:
        """Why no further iteration should run, judged on what is recorded."""
        return self.rules.stop_reason(self.run.tables.read("teacher"), self.run.tables.read("students"))

    def choose_final(self) -> int:
        """The iteration of the final student (0: the teacher), judged on what is recorded."""
        return self.rules.choose_final(self.run.tables.read("teacher"), self.run.tables.read("students"))

    @property
    def selection_split(self) -> str:
        return selection.split_name(self.has_validation)

    def step(self, student: tf_keras.Model, iteration: int, target: float,
             current_cost: Optional[float] = None,
             keep_candidates: bool = True) -> IterationResult:
        """One iteration: every pruner that can lower the budget's measure makes a
        candidate of cost ``target`` from ``student`` (whose measured cost,
        ``current_cost``, calibrates modelled measures); they are evaluated and ranked on
        the selection split; a copy of the winner is distilled from the original teacher
        at this iteration's temperature. ``student`` and the candidates are left as they
        are. ``keep_candidates=False``: once ranked, only the winner keeps its model (the
        others' ``model`` is None in the result, their rows, scores and graphs kept), so
        the losing candidates' memory is freed before distillation (the run does this
        unless --export_candidates)."""
        if self.teacher_model is None:
            raise ApiError("EPKD.step needs the trained teacher: pass teacher= or run the "
                             "whole algorithm.")
        if current_cost is None and not self.measure.exact:
            current_cost = self.cost_of(student)
        skipped = {p.name: self.measure.why_not(p) for p in self.pruners
                   if not self.measure.lowered_by(p)}
        for name, why in skipped.items():
            log.info("Iteration %d: %s left out (%s)", iteration, name, why)
        if len(skipped) == len(self.pruners):
            raise UsageError(f"--budget={self.measure.name}: none of --pruners can lower it "
                             f"({'; '.join(skipped.values())}); add a structured pruner.")
        candidates = self.make_candidates(student, target, iteration, current_cost, skipped)
        table = self.evaluator.candidates_table(candidates, self.pruners, iteration, target,
                                                skipped)
        winner_name = table.loc[table["rank"] == 1, "pruner"].iloc[0]
        winner = next(c for c in candidates if c.pruner == winner_name)
        if not keep_candidates:
            # Fresh records without the model: nothing else refers to the losers' models.
            candidates = [c if c is winner else dataclasses.replace(c, model=None)
                          for c in candidates]
        distilled, history, nonfinite = self.distil(winner.model, iteration)
        kept_previous = nonfinite is not None
        kept_candidate, distilled_accuracy = False, np.nan
        if kept_previous:
            self.keep_previous(iteration, winner.pruner, nonfinite)
        elif len(history):
            kept_candidate, distilled_accuracy = self.distillation_regressed(
                distilled, selection.winner_selection_accuracy(table), iteration, winner.pruner)
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
        accuracy = self.evaluator.selection_accuracy(distilled, iteration)
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
            self.samples.recalibrate(candidate.model, iteration, candidate.pruner)
        return candidates

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
        guard = LossGuard(f"finetune_{iteration}")
        what = f"Iteration {iteration} distillation (T={temperature:g})"
        callbacks = [guard, training.EpochLog(what, d.finetune_epochs)]
        if self.recorder is not None:
            callbacks.append(self.recorder.tensorboard(f"finetune_{iteration}"))
        logits = self.samples.teacher_logits()
        with self.clock.phase("distillation", iteration):
            fitted = finetune.distil(
                student, self.teacher_model, self.data, epochs=d.finetune_epochs,
                learning_rate=d.learning_rate, alpha=d.alpha, temperature=temperature,
                batch_size=self.cfg.data.batch_size,
                cosine=d.learning_rate_schedule == "cosine", batchnorm=d.batchnorm,
                teacher_logits=logits, callbacks=callbacks,
                validation_data=self.data.test(), track_accuracy=True,
                jit_compile=self.cfg.jit_compile, verbose=self.verbose,
                checkpoint=training_checkpoint(
                    self.recorder, self.cfg, self.data, f"finetune_{iteration}",
                    d.finetune_epochs, d.learning_rate, temperature=temperature),
                name=f"finetune_{iteration}", what=what)
        if not guard.problem and d.batchnorm == "batch":
            # Frozen statistics are the ones the student was trained with: re-estimating
            # them would change the function distillation fitted.
            self.samples.recalibrate(student, iteration)
        frame = training.history_frame(fitted)
        frame.insert(0, "iteration", iteration)
        frame.insert(2, "temperature", temperature)
        return student, frame, guard.problem

    def record(self, result: IterationResult) -> float:
        """Writes the iteration's rows and checkpoint (and exports, with
        --export_every_student); ``progress.json`` goes last. Returns
        the student's cost in the budget's measure."""
        iteration = result.iteration
        student, winner = result.student, result.winner
        # The student's selection accuracy is known unless it is the previous student: the
        # kept-candidate rule measured the distilled copy, the ranking the candidate.
        known = (np.nan if result.kept_previous else
                     result.winner_selection_accuracy if result.kept_candidate else
                     result.distilled_selection_accuracy)
        if not self.evaluator.subset_is_whole:
            known = np.nan      # measured on --selection_examples: the row takes whole splits
        test_acc, val_acc = self.evaluator.test_and_validation_accuracy(student, iteration,
                                                                        known)
        deployment, tflite = self.recorder.export(student, iteration, test_acc,
                                                  result.candidates)
        row = self.evaluator.measured_row(student, iteration, tflite, test_acc, val_acc)
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
        self.recorder.iteration_done(iteration, {
            "candidates": result.table, "finetune_history": result.finetune_history,
            "criteria_correlation": self.correlation(result.candidates, iteration),
            "students": student_row, "deployment": deployment})
        return float(row["cost"])

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
