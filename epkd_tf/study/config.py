"""Frozen, validated settings of a compression study (``python -m epkd_tf.study``): one
place per setting (default, help, validation), the study's flags derived from them (see
:mod:`epkd_tf.settings`)."""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from epkd_tf.config import DataConfig, PruningConfig, TeacherConfig
from epkd_tf.settings import (DISTINCT, NON_EMPTY, NOT_BLANK, POSITIVE, Check, ConfigError,
                              Settings, at_least, between, nested, one_of, setting)

__all__ = ["StudyConfig", "METHODS", "FRACTIONS", "ConfigError"]

# The built-in methods (epkd_tf/study/methods.py), the default --methods.
METHODS: Tuple[str, ...] = ("prune", "lottery", "distill", "prune_distill", "epkd", "scratch")
FRACTIONS: Tuple[float, ...] = (0.4, 0.5, 0.65, 0.75, 0.8, 0.85, 0.9, 0.95)

# Every method that selects or stops on data (epkd ranks candidates) does so on this
# held-out share of the training split, so that no method is judged on the test split it
# was selected on; every method trains on the rest, so the comparison stays fair.
STUDY_VALIDATION = "0.1"


def _method_names():
    """The registered study methods. Until the methods module is imported (it loads
    TensorFlow) nobody can have registered one of their own, so they are the built-in
    METHODS: flags are checked without loading TensorFlow."""
    import sys
    methods = sys.modules.get("epkd_tf.study.methods")
    return methods.method_names() if methods is not None else list(METHODS)


def _increasing(values) -> bool:
    return list(values) == sorted(set(values))


@dataclasses.dataclass(frozen=True)
class StudyConfig(Settings):
    """The grid (methods x fractions_removed x seeds) and each method's training budget.

    ``epochs`` is what every method spends to make its model at one fraction from its
    predecessor (docs/study.md, "Training budget", gives the exact accounting).
    """

    data: DataConfig = nested(DataConfig, default=DataConfig(validation_split=STUDY_VALIDATION))
    teacher: TeacherConfig = nested(TeacherConfig)
    methods: Tuple[str, ...] = setting(
        METHODS, f"Methods compared, from {', '.join(METHODS)}.",
        checks=[NON_EMPTY, DISTINCT, one_of(_method_names, "method")])
    fractions_removed: Tuple[float, ...] = setting(
        FRACTIONS, "Fractions of the teacher's parameters removed, increasing.",
        checks=[NON_EMPTY, Check(lambda fs: all(0.0 < f < 1.0 for f in fs),
                                 "every fraction must lie strictly between 0 and 1"),
                Check(_increasing, "fractions must be increasing and distinct")])
    seeds: int = setting(2, "Runs (seeds) per cell, so the spread is visible.",
                         checks=[between(1, 100)])
    epochs: int = setting(10, "Training budget per method and fraction (docs/study.md: how each "
                          "method spends it).", checks=[at_least(1)])
    learning_rate: float = setting(1e-3, "Adam learning rate (cosine-decayed) of every "
                                   "method's training.", checks=[POSITIVE])
    prune_rate: float = setting(0.2, "Most of the remaining weights one pruning round removes "
                                "(prune, lottery, prune_distill, epkd).",
                                checks=[between(0, 1, open_lower=True, open_upper=True)])
    alpha: float = setting(0.1, "Hard-label loss weight of distillation.",
                           checks=[between(0, 1)])
    temperature: float = setting(4.0, "Distillation temperature of distill and prune_distill "
                                 "(epkd uses the backbone's falling schedule).",
                                 checks=[POSITIVE])
    pruning: PruningConfig = nested(PruningConfig, flags={"pruners": "epkd_pruners"})
    output_dir: Optional[str] = setting(None, "Study directory (default: "
                                        "saved_models/study_<dataset>_<teacher>).",
                                        checks=[NOT_BLANK])

    def validate(self):
        if self.teacher.teacher_path:
            raise ConfigError("teacher_path", self.teacher.teacher_path,
                              "the study trains its own teacher (the lottery ticket needs "
                              "its initial weights); give --teacher")

    def seed_values(self) -> Tuple[int, ...]:
        """The ``seed`` of each run of a cell: ``--seed``, ``--seed`` + 1, ..."""
        return tuple(self.data.seed + k for k in range(self.seeds))
