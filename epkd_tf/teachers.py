"""The first stage of a run: its teacher, trained from ``--teacher``, loaded from
``--teacher_path`` or given by the caller, then measured, exported and recorded.

A given teacher (not trained by the run) gets its BatchNormalization statistics checked:
a short-trained model's moving statistics lag its weights (momentum 0.99 keeps 72% of the
initial ones after 32 steps), so its inference function is far from what it learned, and
every student distilled from that function inherits the damage (a one-epoch residual
teacher at 90.1% gave a 56.1% student from a 94.2% candidate).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from epkd_tf import precision, selection, training
from epkd_tf.distill import batchnorm
from epkd_tf.models import build_model

log = logging.getLogger("epkd_tf")


class TeacherStage:
    """Makes and records a run's teacher.

    Args:
        cfg: the run's :class:`epkd_tf.config.RunConfig`.
        data: the run's data.
        clock: the run's clock.
        samples: the run's :class:`epkd_tf.samples.RunSamples` (BatchNorm batches).
        evaluator: the run's :class:`epkd_tf.evaluation.Evaluator`.
        recorder: the run's :class:`epkd_tf.records.recorder.Recorder`.
        verbose: Keras' verbosity while training.
    """

    def __init__(self, cfg, data, clock, samples, evaluator, recorder, verbose: int = 0):
        self.cfg, self.data, self.clock, self.verbose = cfg, data, clock, verbose
        self.samples, self.evaluator, self.recorder = samples, evaluator, recorder

    def __call__(self, run, given=None):
        """The teacher: reloaded when a resumed run already has it, else ``given`` (the
        Python API's model), --teacher_path's model or --teacher trained; measured,
        exported and recorded (``teacher.csv``, ``teacher_history.csv``)."""
        cfg = self.cfg
        if run.stages.progress()["teacher_done"]:
            log.info("Teacher: reloaded from %s", run.teacher_checkpoint())
            return run.stages.load_checkpoint(run.teacher_checkpoint())
        untrained = pd.DataFrame(columns=training.HISTORY_COLUMNS)   # not trained here
        if given is not None:
            model, history = given, untrained
            log.info("Teacher: %s, %d params, given (not trained)", model.name,
                     model.count_params())
        elif cfg.teacher.teacher_path:
            from epkd_tf.models.user import load_user_model
            model, history = load_user_model(cfg.teacher.teacher_path, "teacher_path"), untrained
            log.info("Teacher: %s, %d params, loaded from %s (not trained)", model.name,
                     model.count_params(), cfg.teacher.teacher_path)
        else:
            model, history = self.train()
        reestimated, selection_acc = False, np.nan
        if given is not None or cfg.teacher.teacher_path:
            # Computing under --precision from here on: every student inherits the
            # policy from the teacher's layer configs.
            model = precision.with_policy(model, cfg.precision)
            model, reestimated, selection_acc = self.given_statistics(model)
        test_acc, val_acc = self.evaluator.test_and_validation_accuracy(model, 0,
                                                                        selection_acc)
        deployment, tflite = self.recorder.export(model, 0, test_acc)
        row = dict(self.evaluator.measured_row(model, 0, tflite, test_acc, val_acc),
                   bn_reestimated=reestimated)
        self.recorder.teacher_done(row, history, deployment)
        log.info("Teacher done; elapsed %.0f s", self.clock.elapsed())
        return model

    def given_statistics(self, model):
        """A given teacher, whether its BatchNormalization statistics were re-estimated,
        and its selection-split accuracy (NaN when not measured: no such layers or
        batches): a copy with statistics re-estimated on the run's BatchNorm batches
        replaces it when the copy is more accurate on the selection split by more than one
        binomial standard error of the given accuracy. The re-estimated teacher is what the
        run records, exports and distils from (teacher.csv ``bn_reestimated``); the
        user's file or object is not changed."""
        batches = self.samples.bn_batches(model)
        if not batches:
            return model, False, np.nan
        with self.clock.phase("student_evaluation", 0):
            split = self.evaluator.selection_data()
            given = training.accuracy(model, split)
            copy = training.copy_model(model)
            batchnorm.recalibrate(copy, batches, len(batches))
            estimated = training.accuracy(copy, split)
        validation = selection.has_validation(self.data)
        examples = self.data.spec.num_validation if validation else self.data.spec.num_test
        noise = math.sqrt(given * (1.0 - given) / max(examples, 1))
        split_name = selection.split_name(validation)
        if estimated - given > noise:
            log.warning("warning: the teacher's BatchNormalization statistics lag its "
                        "weights: %s accuracy %.4f as given, %.4f with statistics "
                        "re-estimated on %d training batches; the run uses the re-estimated "
                        "teacher (--bn_recalibration_batches=0 keeps it as given)",
                        split_name, given, estimated, len(batches))
            return copy, True, estimated
        log.info("Teacher's BatchNormalization statistics kept: %s accuracy %.4f as given, "
                 "%.4f re-estimated", split_name, given, estimated)
        return model, False, given

    def checkpoint(self, name: str, epochs: int, learning_rate: float):
        """The :class:`epkd_tf.epochs.TrainingCheckpoint` of training ``name`` in the run
        directory (None without one): after every epoch, and inside epochs as
        --checkpoint_every asks."""
        return training_checkpoint(self.recorder, self.cfg, self.data, name, epochs,
                                   learning_rate)

    def train(self):
        """Builds --teacher and trains it; (model, per-epoch history). A NaN/Inf loss
        stops the run: every later stage needs the teacher."""
        cfg, spec = self.cfg, self.data.spec
        model = precision.with_policy(
            build_model(cfg.teacher.teacher, spec.input_shape, spec.num_classes,
                        width=cfg.teacher.width), cfg.precision)
        log.info("Teacher: %s, %d params, training %d epochs on %d examples",
                 cfg.teacher.teacher, model.count_params(), cfg.teacher.teacher_epochs,
                 spec.num_train)
        with self.clock.phase("teacher_training"):
            history = training.train_teacher(
                model, self.data, cfg.teacher.teacher_epochs, cfg.teacher.learning_rate,
                callbacks=[self.recorder.tensorboard("teacher"),
                           training.EpochLog("Teacher", cfg.teacher.teacher_epochs)],
                verbose=self.verbose, jit_compile=cfg.jit_compile,
                bn_batches=self.samples.bn_batches(model),
                checkpoint=self.checkpoint("teacher", cfg.teacher.teacher_epochs,
                                           cfg.teacher.learning_rate))
        return model, history


def training_checkpoint(recorder, cfg, data, name: str, epochs: int, learning_rate: float,
                        **identity):
    """The :class:`epkd_tf.epochs.TrainingCheckpoint` of the run's training ``name``
    (``teacher``, ``finetune_<k>``); None when nothing is recorded (no run directory).

    Args:
        recorder: the run's :class:`~epkd_tf.records.recorder.Recorder`, or None.
        cfg: the run's :class:`epkd_tf.config.RunConfig`.
        data: the run's data.
        name: the training.
        epochs: its epochs.
        learning_rate: its learning rate.
        **identity: more of what it depends on (a checkpoint of other values is not used).

    Returns:
        The checkpoint, or None.
    """
    if recorder is None:
        return None
    from epkd_tf.config import parse_checkpoint_every
    from epkd_tf.epochs import TrainingCheckpoint
    identity = dict(identity, epochs=epochs, learning_rate=learning_rate,
                    steps_per_epoch=training.steps_per_epoch(data),
                    batch_size=cfg.data.batch_size, seed=cfg.data.seed,
                    num_train=data.spec.num_train)
    return TrainingCheckpoint(recorder.run, name, identity,
                              parse_checkpoint_every(cfg.checkpoint_every))
