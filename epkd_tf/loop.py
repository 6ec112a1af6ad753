"""The EPKD algorithm: train a teacher, then per iteration prune, rank, distil, record.

    teacher = train(teacher)
    student = teacher
    for iteration in 1..N:
        result  = step(student, iteration, target = keep_ratio × nonzero_params(student))
        #   candidates = [pruner(student, target) for pruner in pruners]   # equal sizes
        #   ranked     = rank(candidates, (w_train·train_acc + w_sel·selection_acc) / Σw)
        #   student    = distil(copy of ranked[0], original teacher, T = schedule(iteration))
        #                # a NaN/Inf loss: the previous student is kept (--fail_on_nan: stop)
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

import dataclasses
import logging
import time
from typing import List, Optional

import numpy as np
import pandas as pd

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import deploy, faults, metrics, training
from epkd_tf.config import RunConfig
from epkd_tf.distill import Distiller
from epkd_tf.graph import nonzero_params
from epkd_tf.models import build_model
from epkd_tf.pruning import Candidate, PruningContext, criteria_correlation
from epkd_tf.records import RunDir
from epkd_tf.timing import Clock
from epkd_tf.training import LossGuard, NonFiniteLossError  # noqa: F401  (re-exported)

log = logging.getLogger("epkd_tf")

# Kept for callers of the former private name.
_Clock = Clock


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
    table["weighted_score"] = [metrics.weighted_score(tr, se, weights)
                               for tr, se in zip(train, table[selection])]
    order = np.lexsort((np.arange(len(table)), -table["weighted_score"].to_numpy()))
    ranks = np.empty(len(table), dtype=int)
    ranks[order] = np.arange(1, len(table) + 1)
    table["rank"] = ranks
    return table


def _tensorboard(run: RunDir, name: str):
    return tf_keras.callbacks.TensorBoard(run.tensorboard_dir(name), write_graph=False,
                                          profile_batch=0)


@dataclasses.dataclass
class IterationResult:
    """What one EPKD iteration made (``EPKD.step``)."""

    iteration: int
    target: int                       # nonzero parameters every candidate was made to
    temperature: float
    candidates: List[Candidate]       # as made and evaluated, never changed afterwards
    table: pd.DataFrame               # their candidates.csv rows, ranked
    winner: Candidate
    student: tf_keras.Model           # a distilled copy of the winner, or the previous one
    kept_previous: bool               # the winner's distillation hit a NaN/Inf loss
    nonfinite: Optional[str]          # where it did
    finetune_history: pd.DataFrame
    epochs: int                       # every epoch any candidate or the student trained

    @property
    def selection_column(self) -> str:
        return ("validation_accuracy" if self.table["validation_accuracy"].notna().any()
                else "test_accuracy")


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
        self.clock = Clock()
        self.teacher_model = teacher
        self._teacher_logits = teacher_logits
        self._calibration = None
        self._pruning_context: Optional[PruningContext] = None
        self.last_result: Optional[IterationResult] = None

    # -- the algorithm -------------------------------------------------------------------
    def __call__(self) -> pd.DataFrame:
        tf_keras.utils.set_random_seed(self.cfg.data.seed)
        self.run.drop_unfinished()
        teacher = self.teacher_model = self.teacher()
        done = self.run.progress()["iterations_done"]
        student = (teacher if done == 0 else
                   tf_keras.models.load_model(self.run.student_checkpoint(done), compile=False))
        self.iterations_started = time.perf_counter()
        for iteration in range(done + 1, self.cfg.iterations + 1):
            tf_keras.utils.set_random_seed(self.cfg.data.seed + iteration)
            target = int(round(self.cfg.keep_ratio * nonzero_params(student)))
            result = self.last_result = self.step(student, iteration, target)
            student = result.student
            self.record(result)
            faults.reached(f"iteration_{iteration}_done")
            self.report_progress(iteration, done)
        from epkd_tf.report import write_report
        with self.clock.phase("logging"):
            log.info("Report: %s", write_report(self.run))
        self.run.append("timings", self.clock.flush())
        self.run.mark(finished=True)
        return self.run.read("students")

    def step(self, student: tf_keras.Model, iteration: int, target: int) -> IterationResult:
        """One iteration: every pruner makes a candidate of ``target`` nonzero parameters
        from ``student``; they are evaluated and ranked on the selection split; a copy of
        the winner is distilled from the original teacher at this iteration's temperature.
        ``student`` and the candidates are left as they are."""
        if self.teacher_model is None:
            raise ValueError("EPKD.step needs the trained teacher: pass teacher= or run the "
                             "whole algorithm.")
        candidates = self.make_candidates(student, target, iteration)
        table = self.evaluate(candidates, iteration)
        winner = candidates[int(np.argmin(table["rank"].to_numpy()))]
        distilled, history, nonfinite = self.distil(winner.model, iteration)
        kept_previous = nonfinite is not None
        if kept_previous:
            self.keep_previous(iteration, winner.pruner, nonfinite)
        return IterationResult(
            iteration=iteration, target=target, temperature=self.schedule(iteration),
            candidates=candidates, table=table, winner=winner,
            student=student if kept_previous else distilled, kept_previous=kept_previous,
            nonfinite=nonfinite, finetune_history=history,
            epochs=sum(c.epochs for c in candidates) + len(history))

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
        if run.progress()["teacher_done"]:
            log.info("Teacher: reloaded from %s", run.teacher_checkpoint())
            return tf_keras.models.load_model(run.teacher_checkpoint(), compile=False)
        if cfg.teacher.teacher_path:
            from epkd_tf.models.user import load_user_model
            model = load_user_model(cfg.teacher.teacher_path, "teacher_path")
            history = pd.DataFrame(columns=training.HISTORY_COLUMNS)   # not trained here
            log.info("Teacher: %s, %d params, loaded from %s (not trained)", model.name,
                     model.count_params(), cfg.teacher.teacher_path)
        else:
            model, history = self.train_teacher()
        with self.clock.phase("export", 0, "teacher"):
            run.save_checkpoint(model, run.teacher_checkpoint())
            deployment, _ = self.deploy(model, "teacher", "teacher", 1, iteration=0)
        run.append("teacher_history", history)
        run.append("deployment", deployment)
        run.append("timings", self.clock.flush())
        run.mark(teacher_done=True)
        log.info("Teacher done; elapsed %.0f s", self.clock.elapsed())
        return model

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
                callbacks=[_tensorboard(self.run, "teacher")], verbose=self.verbose,
                jit_compile=cfg.jit_compile)
        for row in history.itertuples():
            log.info("Teacher epoch %d: loss %.4f, train acc %.4f, test acc %.4f",
                     row.epoch, row.loss, row.train_accuracy, row.test_accuracy)
        return model, history

    def deploy(self, model, name: str, serving_name: str, version: int, iteration: int,
               test_accuracy=None):
        """Writes ``model`` in every --export_formats format; its deployment.csv rows and
        the float TFLite bytes (None when tflite is not exported)."""
        cfg = self.cfg
        if "tflite_int8" in cfg.export_formats and self._calibration is None:
            self._calibration = deploy.calibration_examples(self.data, cfg.data.seed)
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
                learning_rate=cfg.distill.learning_rate)
        return dataclasses.replace(
            self._pruning_context,
            clock=lambda phase, pruner: self.clock.phase(phase, iteration, pruner))

    def make_candidates(self, student, target: int, iteration: int) -> List[Candidate]:
        ctx = self.pruning_context(iteration)
        return [pruner.make_candidate(student, target, ctx) for pruner in self.pruners]

    def evaluate(self, candidates: List[Candidate], iteration: int) -> pd.DataFrame:
        """Accuracy, size and latency of every candidate, ranked on the selection split."""
        rows = []
        ranking_data = self.ranking_examples()
        validation = self.data.validation() if self.has_validation else None
        for c in candidates:
            with self.clock.phase("candidate_evaluation", iteration, c.pruner):
                train_acc = training.accuracy(c.model, ranking_data)
                val_acc = (training.accuracy(c.model, validation) if validation is not None
                           else np.nan)
                test_acc = training.accuracy(c.model, self.data.test())
                costs = metrics.measure_costs(c.model, runs=self.cfg.latency_runs)
            rows.append({"iteration": iteration, "pruner": c.pruner,
                         **costs.__dict__, "train_sample_accuracy": train_acc,
                         "validation_accuracy": val_acc, "test_accuracy": test_acc})
        selection = "validation_accuracy" if validation is not None else "test_accuracy"
        table = rank_candidates(pd.DataFrame(rows), self.cfg.rank_weights, selection)
        for row in table.sort_values("rank").itertuples():
            log.info("Iteration %d candidate #%d %-14s nonzero %d, train sample %.4f, %s "
                     "%.4f, score %.4f", iteration, row.rank, row.pruner, row.nonzero_params,
                     row.train_sample_accuracy, selection.split("_")[0],
                     getattr(row, selection), row.weighted_score)
        return table

    @property
    def has_validation(self) -> bool:
        return bool(getattr(self.data, "has_validation", False))

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
            with self.clock.phase("teacher_logits"):
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
                              preserve_zeros=True)
        steps = -(-self.data.spec.num_train // self.cfg.data.batch_size)
        rate = (training.cosine_learning_rate(d.learning_rate, d.finetune_epochs, steps)
                if d.learning_rate_schedule == "cosine" else d.learning_rate)
        distiller.compile(optimizer=tf_keras.optimizers.Adam(rate),
                          metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                          alpha=d.alpha, temperature=temperature,
                          jit_compile=self.cfg.jit_compile)
        guard = LossGuard(f"finetune_{iteration}")
        callbacks = [guard]
        if self.run is not None:
            callbacks.append(_tensorboard(self.run, f"finetune_{iteration}"))
        logits = self.teacher_logits()
        batches = (self.data.train(teacher_logits=logits) if logits is not None
                   else self.data.train())
        with self.clock.phase("distillation", iteration):
            fitted = distiller.fit(batches, validation_data=self.data.test(),
                                   epochs=d.finetune_epochs, verbose=self.verbose,
                                   callbacks=callbacks)
        frame = training.history_frame(fitted)
        frame.insert(0, "iteration", iteration)
        frame.insert(2, "temperature", temperature)
        return student, frame, guard.problem

    def record(self, result: IterationResult) -> None:
        """Writes the iteration's rows and exports; ``progress.json`` goes last."""
        run, cfg, iteration = self.run, self.cfg, result.iteration
        student, winner = result.student, result.winner
        with self.clock.phase("student_evaluation", iteration):
            train_acc = training.accuracy(student, self.data.train_eval())
            test_acc = training.accuracy(student, self.data.test())
        with self.clock.phase("export", iteration, "student"):
            run.save_checkpoint(student, run.student_checkpoint(iteration))
            deployment, tflite = self.deploy(student, f"student_{iteration}", "student",
                                             iteration, iteration=iteration,
                                             test_accuracy=test_acc)
            if cfg.export_candidates:
                self.export_candidates(result)
        with self.clock.phase("student_evaluation", iteration):
            costs = metrics.measure_costs(student, runs=cfg.latency_runs, tflite=tflite)
        before = float(result.table.loc[result.table["pruner"] == winner.pruner,
                                        "test_accuracy"].iloc[0])
        student_row = pd.DataFrame([{
            "iteration": iteration, "pruner": winner.pruner, **costs.__dict__,
            "test_accuracy_before_finetune": before, "train_accuracy": train_acc,
            "test_accuracy": test_acc, "temperature": result.temperature,
            "kept_previous": result.kept_previous, "epochs": result.epochs}])
        if result.kept_previous:
            log.info("Iteration %d student: the previous one kept (nonzero %d, test %.4f)",
                     iteration, costs.nonzero_params, test_acc)
        else:
            log.info("Iteration %d student (%s, T=%g): nonzero %d, test %.4f -> %.4f after "
                     "distillation", iteration, winner.pruner, result.temperature,
                     costs.nonzero_params, before, test_acc)
        with self.clock.phase("logging", iteration):
            run.append("candidates", result.table)
            run.append("finetune_history", result.finetune_history)
            run.append("criteria_correlation", self.correlation(result.candidates, iteration))
            run.append("students", student_row)
            run.append("deployment", deployment)
        run.append("timings", self.clock.flush(iteration))
        run.mark(iterations_done=iteration)

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
