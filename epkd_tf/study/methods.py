"""The study's compression methods, one small class each, in a registry.

A method turns its predecessor (the teacher, or for iterative methods its own model at the
previous fraction of the grid) into a model with ``target`` nonzero parameters and says how
many training epochs that took. Budget accounting (``--epochs`` = E):

* ``scratch`` / ``distill`` — a student sized to the target, E epochs from random init
  (hard labels / Hinton distillation from the teacher).
* ``prune`` (Han et al. 2015) / ``prune_distill`` — from the previous fraction's model:
  global magnitude pruning in rounds of at most ``--prune_rate`` of the remaining weights,
  each round retrained for E / rounds epochs (at least 1) with the mask kept; retraining
  on hard labels / by distillation from the teacher.
* ``lottery`` (Frankle & Carbin 2018) — the same rounds, but before each retraining the
  surviving weights are reset to the teacher's initial values and trained for E epochs
  (the method needs full training from the reset point, so it spends E per round).
* ``epkd`` — the backbone's EPKD iterations (``EPKD.step``: every ``--epkd_pruners``
  candidate, ranked on the held-out validation split, a copy of the winner distilled from
  the teacher) with the same rounds and E / rounds epochs of distillation each; its
  ``epochs`` also count the candidates' own training (``poly_magnitude``'s
  ``--magnitude_epochs`` per round), every epoch the cell trained.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, List, Optional, Tuple

import numpy as np

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import training
from epkd_tf.distill import finetune
from epkd_tf.training import copy_model
from epkd_tf.graph import nonzero_params
from epkd_tf.registry import Registry
from epkd_tf.study import sparsity
from epkd_tf.study.students import sized_student

log = logging.getLogger("epkd_tf")


class ReseededData:
    """``data`` whose training batches are shuffled (and augmented) with ``seed``: the
    runs of one cell differ in data order as well as in initialisation."""

    def __init__(self, data, seed: int):
        self._data, self._seed = data, seed

    def train(self, shuffle: bool = True, seed=None, teacher_logits=None):
        # A seed given (an epoch's, epkd_tf.training.epoch_batches) is mixed with this
        # data's: each epoch still has its own order, and each run of the cell its own.
        if seed is not None:
            from epkd_tf.seeds import derive_seed
            seed = derive_seed(self._seed, seed)
        return self._data.train(shuffle, seed=self._seed if seed is None else seed,
                                teacher_logits=teacher_logits)

    def __getattr__(self, name):
        return getattr(self._data, name)


@dataclasses.dataclass
class StudyContext:
    """What every method may use: the config, the data of this seed, the teacher."""

    cfg: object                      # StudyConfig
    data: object                     # Data (or ReseededData)
    teacher: tf_keras.Model
    teacher_initial_weights: List[np.ndarray]
    study_dir: object                # StudyDir
    verbose: int = 0
    _teacher_logits: object = None

    def teacher_logits(self):
        """The teacher's training-set logits, computed once (None: run it per batch)."""
        if self._teacher_logits is None:
            from epkd_tf.distill.cache import teacher_logits_for
            self._teacher_logits = teacher_logits_for(self.teacher, self.data)
            if self._teacher_logits is None:
                self._teacher_logits = False
        return self._teacher_logits if self._teacher_logits is not False else None


@dataclasses.dataclass
class Step:
    """A method's output at one fraction."""

    model: tf_keras.Model
    epochs: int                      # training epochs spent since the predecessor
    rounds: int = 1                  # pruning rounds (iterations for epkd) in the step


class StudyMethod:
    """Base class: ``make`` returns the model of one cell."""

    name = ""
    #: True: the model at a fraction starts from this method's model at the previous
    #: fraction of the grid (one iterative trajectory per seed); False: from scratch.
    from_previous = False

    def make(self, ctx: StudyContext, previous: tf_keras.Model, target: int, seed: int,
             rounds_before: int) -> Step:
        """``previous``: the teacher or this method's model at the previous fraction;
        ``target``: nonzero parameters wanted; ``rounds_before``: pruning rounds this
        trajectory made before (numbering for EPKD's temperature schedule)."""
        raise NotImplementedError


#: Every study method class by name.
STUDY_METHODS: Registry[Callable[[], StudyMethod]] = Registry("study method")


def register_method(cls):
    """Class decorator: registers a :class:`StudyMethod` subclass under ``cls.name``
    (ValueError if that name is taken)."""
    return STUDY_METHODS.register(cls.name, cls)


def method_names() -> List[str]:
    """Every registered study method name, sorted."""
    return STUDY_METHODS.names()


def make_method(name: str) -> StudyMethod:
    """A new instance of the method registered as ``name``; ValueError (naming the known
    methods) for an unknown one."""
    return STUDY_METHODS.get(name)()


# ------------------------------------------------------------------------- training pieces
def train_hard(model, data, epochs: int, learning_rate: float, keep_zeros: bool,
               verbose: int = 0) -> None:
    """Cross-entropy training (Adam, cosine decay); pruned weights stay zero if asked."""
    trained = sparsity.MaskedClassifier(model) if keep_zeros else model
    training.train_classifier(trained, data, epochs, learning_rate, verbose=verbose,
                              validate=False)


def train_distilled(model, teacher, data, epochs: int, learning_rate: float, alpha: float,
                    temperature: float, keep_zeros: bool, verbose: int = 0,
                    teacher_logits=None) -> None:
    """Hinton distillation from ``teacher`` (Adam, cosine decay, T^2-scaled soft loss);
    with ``teacher_logits`` (see epkd_tf.distill.cache) the teacher is not run at all."""
    finetune.distil(model, teacher, data, epochs=epochs, learning_rate=learning_rate,
                    alpha=alpha, temperature=temperature, batch_size=data.cfg.batch_size,
                    preserve_zeros=keep_zeros, teacher_logits=teacher_logits,
                    verbose=verbose)


def per_round(epochs: int, rounds: int) -> int:
    return max(1, int(round(epochs / max(rounds, 1))))


# ------------------------------------------------------------------------- methods
class _SizedStudent(StudyMethod):
    """A student of the target size (``students.sized_student``) trained from random
    initialisation for E epochs by ``train``."""

    def train(self, ctx, model) -> None:
        raise NotImplementedError

    def make(self, ctx, previous, target, seed, rounds_before):
        spec, cfg = ctx.data.spec, ctx.cfg
        model, _ = sized_student(cfg.teacher.teacher, spec.input_shape, spec.num_classes,
                                 target)
        self.train(ctx, model)
        return Step(model, cfg.epochs)


@register_method
class Scratch(_SizedStudent):
    """A student of the target size trained on hard labels only."""

    name = "scratch"

    def train(self, ctx, model):
        train_hard(model, ctx.data, ctx.cfg.epochs, ctx.cfg.learning_rate, False, ctx.verbose)


@register_method
class Distill(_SizedStudent):
    """A student of the target size trained on the teacher's soft targets."""

    name = "distill"

    def train(self, ctx, model):
        cfg = ctx.cfg
        train_distilled(model, ctx.teacher, ctx.data, cfg.epochs, cfg.learning_rate,
                        cfg.alpha, cfg.temperature, False, ctx.verbose, ctx.teacher_logits())


class _IterativeMagnitude(StudyMethod):
    """Rounds of global magnitude pruning, each followed by retraining (``retrain``)."""

    from_previous = True

    def retrain(self, ctx, model, epochs: int) -> None:
        raise NotImplementedError

    def round_epochs(self, ctx, rounds: int) -> int:
        return per_round(ctx.cfg.epochs, rounds)

    def before_retraining(self, ctx, model) -> None:
        """Hook between pruning and retraining (the lottery ticket's reset)."""

    def make(self, ctx, previous, target, seed, rounds_before):
        model = copy_model(previous)
        targets = sparsity.round_targets(nonzero_params(model), target, ctx.cfg.prune_rate)
        epochs = self.round_epochs(ctx, len(targets))
        for t in targets:
            sparsity.prune_to(model, t)
            self.before_retraining(ctx, model)
            self.retrain(ctx, model, epochs)
        # Retraining can wake biases that were exactly zero (a few per net): trim the
        # same number of smallest kernel weights so the cell sits exactly on its target.
        sparsity.prune_to(model, target)
        return Step(model, epochs * len(targets), len(targets))


@register_method
class Prune(_IterativeMagnitude):
    """Han et al. 2015: prune small weights, retrain the sparse net; repeat."""

    name = "prune"

    def retrain(self, ctx, model, epochs):
        train_hard(model, ctx.data, epochs, ctx.cfg.learning_rate, True, ctx.verbose)


@register_method
class PruneDistill(_IterativeMagnitude):
    """Magnitude pruning whose retraining is distillation from the teacher."""

    name = "prune_distill"

    def retrain(self, ctx, model, epochs):
        cfg = ctx.cfg
        train_distilled(model, ctx.teacher, ctx.data, epochs, cfg.learning_rate, cfg.alpha,
                        cfg.temperature, True, ctx.verbose, ctx.teacher_logits())


@register_method
class Lottery(_IterativeMagnitude):
    """Frankle & Carbin 2018: iterative magnitude pruning, survivors reset to their
    initial values before each retraining."""

    name = "lottery"

    def round_epochs(self, ctx, rounds):
        return ctx.cfg.epochs

    def before_retraining(self, ctx, model):
        sparsity.rewind(model, ctx.teacher_initial_weights)

    def retrain(self, ctx, model, epochs):
        train_hard(model, ctx.data, epochs, ctx.cfg.learning_rate, True, ctx.verbose)


@register_method
class EPKDMethod(StudyMethod):
    """The backbone's EPKD iterations (``EPKD.step``: candidates of every pruner, ranked on
    the held-out validation split, a copy of the winner distilled from the original teacher
    with the falling temperature), fine-tuned like every study method: Adam at
    ``--learning_rate`` with cosine decay."""

    name = "epkd"
    from_previous = True

    def make(self, ctx, previous, target, seed, rounds_before):
        from epkd_tf.config import DistillConfig, RunConfig
        from epkd_tf.loop import EPKD
        from epkd_tf.seeds import derive_seed
        cfg = ctx.cfg
        targets = sparsity.round_targets(nonzero_params(previous), target, cfg.prune_rate)
        distill = DistillConfig(finetune_epochs=per_round(cfg.epochs, len(targets)),
                                learning_rate=cfg.learning_rate,
                                learning_rate_schedule="cosine", alpha=cfg.alpha)
        run_cfg = RunConfig(data=cfg.data, teacher=cfg.teacher, pruning=cfg.pruning,
                            distill=distill, export_formats=(), latency_runs=3)
        epkd = EPKD(run_cfg, ctx.data, verbose=ctx.verbose, teacher=ctx.teacher,
                    teacher_logits=ctx.teacher_logits())
        student, epochs = previous, 0
        for k, t in enumerate(targets):
            iteration = rounds_before + k + 1
            tf_keras.utils.set_random_seed(derive_seed(seed, iteration))
            result = epkd.step(student, iteration, t)
            student, epochs = result.student, epochs + result.epochs
        if student is previous:            # every round kept the previous model
            student = copy_model(previous)
        return Step(student, epochs, len(targets))
