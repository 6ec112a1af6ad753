"""Frozen, validated configuration of a compression study (``python -m epkd_tf.study``).

Every field is named after the flag that sets it, so a validation error names the flag.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Tuple

from epkd_tf.config import ConfigError, DataConfig, TeacherConfig, _require

# The built-in methods (epkd_tf/study/methods.py), the default --methods.
METHODS: Tuple[str, ...] = ("prune", "lottery", "distill", "prune_distill", "epkd", "scratch")
FRACTIONS: Tuple[float, ...] = (0.4, 0.5, 0.65, 0.75, 0.8, 0.85, 0.9, 0.95)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The grid (methods x fractions_removed x seeds) and each method's training budget.

    ``epochs`` is what every method spends to make its model at one fraction from its
    predecessor (README, "The compression study", gives the exact accounting).
    """

    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    methods: Tuple[str, ...] = METHODS
    fractions_removed: Tuple[float, ...] = FRACTIONS
    seeds: int = 2
    epochs: int = 10
    learning_rate: float = 1e-3
    prune_rate: float = 0.2
    alpha: float = 0.1
    temperature: float = 4.0
    epkd_pruners: Tuple[str, ...] = ("l1_filter", "taylor", "oracle", "poly_magnitude")
    output_dir: str = ""

    def __post_init__(self):
        # Unknown names are refused against the method registry by the entry point.
        _require(len(self.methods) > 0 and all(self.methods), "methods",
                 f"name at least one method, e.g. {','.join(METHODS)}", ",".join(self.methods))
        _require(len(set(self.methods)) == len(self.methods), "methods",
                 "a method is named twice", ",".join(self.methods))
        text = ",".join(str(f) for f in self.fractions_removed)
        _require(len(self.fractions_removed) > 0, "fractions_removed",
                 "give at least one fraction, e.g. 0.5,0.9", text)
        for f in self.fractions_removed:
            _require(isinstance(f, float) and math.isfinite(f) and 0.0 < f < 1.0,
                     "fractions_removed", "every fraction must lie strictly between 0 and 1",
                     text)
        _require(list(self.fractions_removed) == sorted(set(self.fractions_removed)),
                 "fractions_removed", "fractions must be increasing and distinct", text)
        _require(isinstance(self.seeds, int) and not isinstance(self.seeds, bool)
                 and self.seeds >= 1, "seeds", "must be a positive integer (runs per cell)",
                 self.seeds)
        _require(isinstance(self.epochs, int) and not isinstance(self.epochs, bool)
                 and self.epochs >= 1, "epochs", "must be a positive integer", self.epochs)
        _require(self.learning_rate > 0 and math.isfinite(self.learning_rate),
                 "learning_rate", "must be a positive number", self.learning_rate)
        _require(0.0 < self.prune_rate < 1.0, "prune_rate",
                 "must be a fraction in (0, 1) of the remaining weights", self.prune_rate)
        _require(0.0 <= self.alpha <= 1.0, "alpha", "must lie in [0, 1]", self.alpha)
        _require(self.temperature > 0 and math.isfinite(self.temperature), "temperature",
                 "must be a positive number", self.temperature)
        _require(len(self.epkd_pruners) > 0, "epkd_pruners", "name at least one pruner",
                 ",".join(self.epkd_pruners))
        _require(bool(self.output_dir), "output_dir", "must name a directory", self.output_dir)

    def seed_values(self) -> Tuple[int, ...]:
        """The ``seed`` of each run of a cell: ``--seed``, ``--seed`` + 1, ..."""
        return tuple(self.data.seed + k for k in range(self.seeds))


def parse_fractions(text) -> Tuple[float, ...]:
    """``"0.5,0.9"`` (or a list of strings) → ``(0.5, 0.9)``; ConfigError naming the flag."""
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        return tuple(float(str(p).strip()) for p in parts if str(p).strip())
    except ValueError:
        raise ConfigError(f"--fractions_removed={','.join(map(str, parts))!r} is invalid: give "
                          f"comma-separated numbers such as 0.5,0.9.") from None
