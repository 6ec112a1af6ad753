"""The EPKD algorithm: train a teacher, then per iteration prune, rank, distil, record.

    teacher = train(teacher)
    student = teacher
    for iteration in 1..N:
        target     = keep_ratio × nonzero_params(student)
        candidates = [pruner(student, target) for pruner in pruners]   # equal sizes
        ranked     = rank(candidates, (w_train·train_acc + w_test·test_acc) / Σw)
        student    = distil(ranked[0], original teacher, T = schedule(iteration))
                     # a NaN/Inf loss stops it: the previous student is kept (or, with
                     # --fail_on_nan, the run stops)
        record(iteration, candidates, student); export(student)   # deployment.csv
    report(run)                                                    # report.md, plots/

The teacher is trained from ``--teacher`` or loaded from ``--teacher_path``.
"""
from __future__ import annotations

import contextlib
import logging
import math
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

log = logging.getLogger("epkd_tf")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or Inf loss and the run cannot go on (the teacher's, or a
    distillation's with ``--fail_on_nan``); the message is the one line the user sees."""


class _Clock:
    """Collects (phase, iteration, pruner, seconds) rows for timings.csv.

    Phases are exclusive: a phase entered inside another is counted in its own row and
    left out of the outer one's seconds. Each flush adds an ``other`` row, the time since
    the previous flush that no phase covered (bookkeeping between the stages), so the rows
    add up to the run's whole time."""

    def __init__(self):
        self.rows: List[tuple] = []
        self.started = self._flushed = time.perf_counter()
        self._inner: List[float] = []     # per open phase: seconds spent in nested phases

    @contextlib.contextmanager
    def phase(self, phase: str, iteration: int = 0, pruner: str = ""):
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            inner = self._inner.pop()
            if self._inner:
                self._inner[-1] += seconds
            self.rows.append((phase, iteration, pruner, seconds - inner))

    def flush(self, iteration: int = 0) -> pd.DataFrame:
        """The rows since the last flush, then ``other`` (labelled ``iteration``)."""
        now = time.perf_counter()
        rows, self.rows = self.rows, []
        covered = sum(row[3] for row in rows)
        rows.append(("other", iteration, "", max(0.0, now - self._flushed - covered)))
        self._flushed = now
        return pd.DataFrame(rows, columns=["phase", "iteration", "pruner", "seconds"])

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def rank_candidates(table: pd.DataFrame, weights) -> pd.DataFrame:
    """Adds ``weighted_score`` and ``rank`` (1 = best) to a candidates table.

    Ties keep the order of --pruners, so the ranking is deterministic.
    """
    table = table.copy()
    table["weighted_score"] = [metrics.weighted_score(tr, te, weights)
                               for tr, te in zip(table["train_accuracy"], table["test_accuracy"])]
    order = np.lexsort((np.arange(len(table)), -table["weighted_score"].to_numpy()))
    ranks = np.empty(len(table), dtype=int)
    ranks[order] = np.arange(1, len(table) + 1)
    table["rank"] = ranks
    return table


def _tensorboard(run: RunDir, name: str):
    return tf_keras.callbacks.TensorBoard(run.tensorboard_dir(name), write_graph=False,
                                          profile_batch=0)


class LossGuard(tf_keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or Inf (as Keras'
    ``TerminateOnNaN``) and remembers where in ``problem``; the end of every epoch is the
    fault-injection point ``<name>_epoch_<n>`` (see ``faults.py``)."""

    def __init__(self, name: str):
        super().__init__()
        self._supports_tf_logs = True     # fetch the loss alone, not every metric per batch
        self.name = name
        self.problem: Optional[str] = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    # Reading the loss forces the host to wait for the step: every batch, that doubled the
    # time of a LeNet step. A non-finite loss stays non-finite, so checking every
    # CHECK_EVERY batches (and at each epoch's end) finds it a few batches later at most.
    CHECK_EVERY = 50

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.CHECK_EVERY == 0:
            self._check((logs or {}).get("loss"), f"batch {batch + 1}")

    def _check(self, loss, where: str) -> None:
        if self.problem is not None or loss is None:
            return
        value = float(loss)
        if not math.isfinite(value):
            self.problem = f"loss {value} at epoch {self._epoch + 1}, {where}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._check((logs or {}).get("loss"), "end of the epoch")
        faults.reached(f"{self.name}_epoch_{epoch + 1}")


class EPKD:
    """One EPKD run over ``cfg`` on loaded ``data``, writing into ``run``."""

    def __init__(self, cfg: RunConfig, data, run: RunDir, verbose: int = 0):
        self.cfg, self.data, self.run, self.verbose = cfg, data, run, verbose
        self.pruners = cfg.pruning.make_pruners()
        self.schedule = cfg.distill.schedule()
        self.clock = _Clock()
        self._calibration = None
        # Where the last distil() hit a NaN/Inf loss (None: it did not).
        self.nonfinite: Optional[str] = None

    # -- the algorithm -------------------------------------------------------------------
    def __call__(self) -> pd.DataFrame:
        tf_keras.utils.set_random_seed(self.cfg.data.seed)
        self.run.drop_unfinished()
        teacher = self.teacher_model = self.teacher()
        done = self.run.progress()["iterations_done"]
        student = (teacher if done == 0 else
                   self.run.load_checkpoint(self.run.student_checkpoint(done)))
        self.iterations_started = time.perf_counter()
        for iteration in range(done + 1, self.cfg.iterations + 1):
            tf_keras.utils.set_random_seed(self.cfg.data.seed + iteration)
            target = int(round(self.cfg.keep_ratio * nonzero_params(student)))
            candidates = self.make_candidates(student, target, iteration)
            table = self.evaluate(candidates, iteration)
            best = candidates[int(np.argmin(table["rank"].to_numpy()))]
            distilled = self.distil(best.model, teacher, iteration)
            kept_previous = self.nonfinite is not None
            if kept_previous:
                student = self.keep_previous(iteration, best.pruner)
            else:
                student = distilled
            self.record(iteration, best, table, candidates, student,
                        kept_previous=kept_previous)
            faults.reached(f"iteration_{iteration}_done")
            self.report_progress(iteration, done)
        from epkd_tf.report import write_report
        with self.clock.phase("logging"):
            log.info("Report: %s", write_report(self.run))
        self.run.append("timings", self.clock.flush())
        self.run.mark(finished=True)
        return self.run.read("students")

    def keep_previous(self, iteration: int, pruner: str) -> tf_keras.Model:
        """After a NaN/Inf distillation loss: the previous student (the teacher before
        iteration 1), reloaded from its checkpoint; with --fail_on_nan the run stops."""
        what = (f"iteration {iteration}: the distillation of the {pruner} candidate hit a "
                f"non-finite {self.nonfinite}")
        if self.cfg.fail_on_nan:
            raise NonFiniteLossError(f"{what}; stopped (--fail_on_nan). Lower "
                                     f"--finetune_learning_rate (now "
                                     f"{self.cfg.distill.learning_rate:g}).")
        log.warning("warning: %s; fine-tune stopped, iteration %d keeps the previous "
                    "student", what, iteration)
        path = (self.run.teacher_checkpoint() if iteration == 1
                else self.run.student_checkpoint(iteration - 1))
        return self.run.load_checkpoint(path)

    # -- stages --------------------------------------------------------------------------
    def teacher(self) -> tf_keras.Model:
        """Trains the teacher, or loads it from --teacher_path (or reloads it when
        resuming), and exports it."""
        run, cfg = self.run, self.cfg
        if run.progress()["teacher_done"]:
            log.info("Teacher: reloaded from %s", run.teacher_checkpoint())
            return run.load_checkpoint(run.teacher_checkpoint())
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
        guard = LossGuard("teacher")
        with self.clock.phase("teacher_training"):
            history = training.train_classifier(
                model, self.data, cfg.teacher.teacher_epochs, cfg.teacher.learning_rate,
                callbacks=[_tensorboard(self.run, "teacher"), guard], verbose=self.verbose,
                jit_compile=cfg.jit_compile)
        for row in history.itertuples():
            log.info("Teacher epoch %d: loss %.4f, train acc %.4f, test acc %.4f",
                     row.epoch, row.loss, row.train_accuracy, row.test_accuracy)
        if guard.problem:
            raise NonFiniteLossError(f"teacher training hit a non-finite {guard.problem}; "
                                     f"lower --teacher_learning_rate (now "
                                     f"{cfg.teacher.learning_rate:g}).")
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

    def make_candidates(self, student, target: int, iteration: int) -> List[Candidate]:
        cfg = self.cfg
        ctx = PruningContext(self.data, cfg.pruning, seed=cfg.data.seed,
                             batch_size=cfg.data.batch_size,
                             learning_rate=cfg.distill.learning_rate,
                             clock=lambda phase, pruner: self.clock.phase(phase, iteration,
                                                                          pruner))
        self._pruning_context = ctx     # its seeded samples serve evaluate() too
        return [pruner.make_candidate(student, target, ctx) for pruner in self.pruners]

    def evaluate(self, candidates: List[Candidate], iteration: int) -> pd.DataFrame:
        """Accuracy, size and latency of every candidate, ranked."""
        rows = []
        ranking_data = self.ranking_examples()
        for c in candidates:
            with self.clock.phase("candidate_evaluation", iteration, c.pruner):
                train_acc = training.accuracy(c.model, ranking_data)
                test_acc = training.accuracy(c.model, self.data.test())
                costs = metrics.measure_costs(c.model, runs=self.cfg.latency_runs)
            rows.append({"iteration": iteration, "pruner": c.pruner,
                         **costs.__dict__, "train_accuracy": train_acc,
                         "test_accuracy": test_acc})
        table = rank_candidates(pd.DataFrame(rows), self.cfg.rank_weights)
        for row in table.sort_values("rank").itertuples():
            log.info("Iteration %d candidate #%d %-14s nonzero %d, train %.4f, test %.4f, "
                     "score %.4f", iteration, row.rank, row.pruner, row.nonzero_params,
                     row.train_accuracy, row.test_accuracy, row.weighted_score)
        return table

    def ranking_examples(self):
        """The training examples whose accuracy ranks the candidates: --eval_examples of
        them (the same seeded subset every iteration, shared with any criterion that draws
        as many), or the whole split."""
        n = self.cfg.eval_examples
        if n == 0 or n >= self.data.spec.num_train:
            return self.data.train_eval()
        ctx = getattr(self, "_pruning_context", None)
        x, y = ctx.sample(n) if ctx is not None else self.data.sample(n, self.cfg.data.seed)
        import tensorflow as tf
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(self.cfg.data.batch_size)

    def teacher_logits(self, teacher):
        """The teacher's logits on the training split, computed once per run (None when
        the training data is augmented: then the teacher runs on every batch)."""
        if not hasattr(self, "_teacher_logits"):
            from epkd_tf.distill.cache import teacher_logits_for
            # One teacher_logits row per run (computed in iteration 1): a resumed run
            # computes the cache again, and that time counts as `other` (README,
            # Reproducibility).
            resumed = self.run.progress()["iterations_done"] > 0
            with contextlib.nullcontext() if resumed else self.clock.phase("teacher_logits"):
                self._teacher_logits = teacher_logits_for(teacher, self.data)
        return self._teacher_logits

    def distil(self, model, teacher, iteration: int) -> tf_keras.Model:
        """Fine-tunes the winner by distillation from the original teacher."""
        d = self.cfg.distill
        temperature = self.schedule(iteration)
        distiller = Distiller(student=model, teacher=teacher, preserve_zeros=True)
        distiller.compile(optimizer=tf_keras.optimizers.Adam(d.learning_rate),
                          metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                          alpha=d.alpha, temperature=temperature,
                          jit_compile=self.cfg.jit_compile)
        self._finetune_history = pd.DataFrame(columns=["iteration", "epoch", "temperature"])
        self.nonfinite = None
        if d.finetune_epochs:
            guard = LossGuard(f"finetune_{iteration}")
            logits = self.teacher_logits(teacher)
            batches = (self.data.train(teacher_logits=logits) if logits is not None
                       else self.data.train())
            with self.clock.phase("distillation", iteration):
                history = distiller.fit(
                    batches, validation_data=self.data.test(),
                    epochs=d.finetune_epochs, verbose=self.verbose,
                    callbacks=[_tensorboard(self.run, f"finetune_{iteration}"), guard])
            self.nonfinite = guard.problem
            frame = training.history_frame(history)
            frame.insert(0, "iteration", iteration)
            frame.insert(2, "temperature", temperature)
            self._finetune_history = frame
        return model

    def record(self, iteration, best: Candidate, table, candidates, student,
               kept_previous: bool = False) -> None:
        """Writes the iteration's rows and exports; ``progress.json`` goes last.
        ``kept_previous``: ``student`` is the previous one (the winner's distillation
        failed)."""
        run, cfg = self.run, self.cfg
        with self.clock.phase("student_evaluation", iteration):
            train_acc = training.accuracy(student, self.data.train_eval())
            test_acc = training.accuracy(student, self.data.test())
        with self.clock.phase("export", iteration, "student"):
            run.save_checkpoint(student, run.student_checkpoint(iteration))
            deployment, tflite = self.deploy(student, f"student_{iteration}", "student",
                                             iteration, iteration=iteration,
                                             test_accuracy=test_acc)
            if cfg.export_candidates:
                raw_shape = deploy.raw_image_shape(self.data)
                for c in candidates:
                    run.write_directory(run.candidate_dir(iteration, c.pruner),
                                        lambda tmp, m=c.model: deploy.export_saved_model(
                                            m, tmp, self.data.recipe.preprocess, raw_shape,
                                            self.data.recipe.batchable))
        with self.clock.phase("student_evaluation", iteration):
            costs = metrics.measure_costs(student, runs=cfg.latency_runs, tflite=tflite)
        before = float(table.loc[table["pruner"] == best.pruner, "test_accuracy"].iloc[0])
        temperature = self.schedule(iteration)
        student_row = pd.DataFrame([{
            "iteration": iteration, "pruner": best.pruner, **costs.__dict__,
            "test_accuracy_before_finetune": before, "train_accuracy": train_acc,
            "test_accuracy": test_acc, "temperature": temperature,
            "kept_previous": kept_previous}])
        if kept_previous:
            log.info("Iteration %d student: the previous one kept (nonzero %d, test %.4f)",
                     iteration, costs.nonzero_params, test_acc)
        else:
            log.info("Iteration %d student (%s, T=%g): nonzero %d, test %.4f -> %.4f after "
                     "distillation", iteration, best.pruner, temperature,
                     costs.nonzero_params, before, test_acc)
        with self.clock.phase("logging", iteration):
            run.append("candidates", table)
            run.append("finetune_history", self._finetune_history)
            run.append("criteria_correlation", self.correlation(candidates, iteration))
            run.append("students", student_row)
            run.append("deployment", deployment)
        run.append("timings", self.clock.flush(iteration))
        run.mark(iterations_done=iteration)

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
