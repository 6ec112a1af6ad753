"""When a run stops and which student is final, judged on its recorded tables.

Every rule reads ``teacher.csv`` and ``students.csv`` rows only (never a model held in
memory), so a resumed run decides exactly as the uninterrupted one would have:

* the next target is ``keep_ratio`` × the current student's cost (with
  ``--keep_of=removable``, of its cost above the floor network's), never below a
  ``--target_*`` goal in the same measure (the last iteration lands on the goal);
* a run stops when its last student meets every ``--target_*`` goal, or lost more than
  ``--max_accuracy_drop`` points against the teacher on the selection split (with
  ``--drop_patience=k``: its last k + 1 students in a row did);
* the final student is the cheapest whose selection accuracy is within
  ``--max_accuracy_drop`` of the teacher's (any student without that rule), else the
  teacher itself.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Optional

import numpy as np
import pandas as pd

from epkd_tf import selection
from epkd_tf.budget.measures import Measure


def accuracy_difference_se(accuracy: float, n: int) -> float:
    """The standard error, in accuracy points, of the difference of two accuracies near
    ``accuracy`` measured on the same ``n`` examples: what separates a student's measured
    loss against the teacher from its true loss when the stop rules judge it.

    ``100 * sqrt(2 p (1 - p) / n)``: each accuracy is a binomial proportion with variance
    p(1-p)/n, and the difference of two with uncorrelated errors has twice that. A
    student distilled from the teacher errs on many of the same examples, which makes the
    difference less noisy, so this is the cautious figure (the one to warn with). ``p`` is
    kept at least one example away from 0 and 1, so a teacher at 100% on a small split is
    not read as noise-free.

    Args:
        accuracy: the teacher's accuracy on the split, in [0, 1] (NaN: unknown, taken as
            0.5, the largest variance).
        n: the split's number of examples (at least 1).

    Returns:
        The standard error in points (percent).
    """
    p = 0.5 if not math.isfinite(accuracy) else min(max(float(accuracy), 0.0), 1.0)
    p = min(max(p, 1 / n), 1 - 1 / n) if n > 1 else 0.5
    return 100 * math.sqrt(2 * p * (1 - p) / n)


def paired_difference_se(reference_correct, model_correct) -> float:
    """The standard error, in accuracy points, of ``model``'s accuracy minus the
    reference's, both measured on the same examples, from which examples each got right:
    the paired figure :func:`accuracy_difference_se` bounds from above.

    Only the examples exactly one of the two gets right move the difference: with ``b``
    the model alone gets right and ``c`` the reference alone, of ``n``, it is
    ``100 * sqrt(b + c - (b - c)**2 / n) / n`` (the sample variance of the per-example
    differences, which are +1, -1 or 0, over ``n``). A student distilled from the teacher
    disagrees with it on a tenth of the examples, so this is well below the cautious
    figure (docs/budgets.md, stop rules, measures both).

    Args:
        reference_correct: per example, whether the reference (the teacher) was right.
        model_correct: the same for the model, in the same order.

    Returns:
        The standard error in points (0 when they agree on every example).

    Raises:
        ValueError: if the two are empty or of different lengths.
    """
    a = np.asarray(reference_correct, dtype=bool).ravel()
    m = np.asarray(model_correct, dtype=bool).ravel()
    if a.size == 0 or a.size != m.size:
        raise ValueError(f"paired_difference_se needs two equally long, non-empty "
                         f"per-example records, got {a.size} and {m.size}")
    n = a.size
    b, c = int((m & ~a).sum()), int((a & ~m).sum())
    return 100 * math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n


#: How many standard errors the allowed drop must exceed before the run does not warn.
NOISE_STANDARD_ERRORS = 2.0


def noise_warning(max_accuracy_drop: Optional[float], n: int, accuracy: float,
                  split: str) -> Optional[str]:
    """The start-up warning when ``--max_accuracy_drop`` is within the noise of the split
    it is judged on: when NOISE_STANDARD_ERRORS standard errors of a difference of two
    accuracies (:func:`accuracy_difference_se`) exceed the allowed drop, a student can pass
    or stop the rule by which examples happen to be in the split (on 1,200 examples one
    point is 12 images). docs/budgets.md#stop-rules measures how often.

    Args:
        max_accuracy_drop: the allowed drop in points (None: no such rule, no warning).
        n: the selection split's number of examples.
        accuracy: the teacher's accuracy on it (NaN: unknown).
        split: its name (``validation`` or ``test``).

    Returns:
        The warning line, or None.
    """
    if max_accuracy_drop is None or n <= 0:
        return None
    se = accuracy_difference_se(accuracy, n)
    if NOISE_STANDARD_ERRORS * se <= max_accuracy_drop:
        return None
    near = f" near {100 * accuracy:.2f}%" if math.isfinite(accuracy) else ""
    return (f"warning: --max_accuracy_drop={max_accuracy_drop:g} is judged on the {n:,} "
            f"examples of the {split} split, where one example is {100 / n:.3g} points and "
            f"the standard error of a difference of two accuracies{near} is {se:.2f} points "
            f"({NOISE_STANDARD_ERRORS:g} standard errors: {NOISE_STANDARD_ERRORS * se:.2f} > "
            f"{max_accuracy_drop:g}): students can pass or fail the rule by noise; a larger "
            f"--validation_split judges it more firmly, and --drop_patience goes on past a "
            f"student that failed it (docs/budgets.md, stop rules).")


@dataclasses.dataclass(frozen=True)
class Goal:
    """A size the final student must reach in one measure (``--target_<measure>``)."""

    measure: str
    value: float

    def met(self, cost: float) -> bool:
        return cost <= self.value


@dataclasses.dataclass(frozen=True)
class StopRules:
    """The stop rules and the final choice of one run.

    Args:
        budget: the run's :class:`epkd_tf.config.BudgetConfig` (goals, allowed drop).
        measure: the budget's measure (the cost column of the tables is in it).
        keep_ratio: each iteration's target as a fraction of the current cost.
        validation: whether the validation split selects (else the test split).
    """

    budget: object
    measure: Measure
    keep_ratio: float
    validation: bool

    @property
    def split(self) -> str:
        return selection.split_name(self.validation)

    def next_target(self, cost: float, floor: float = 0.0) -> float:
        """``floor + keep_ratio × (cost − floor)``: ``keep_ratio`` of the cost above
        ``floor`` (0: of the whole cost; with ``--keep_of=removable``, the cost of the
        network with every layer at its floor), but never below a --target_* goal in the
        same measure (the last iteration lands on it instead of overshooting). A floor at
        or above the cost asks for the cost itself: nothing is left to remove."""
        floor = min(max(float(floor), 0.0), float(cost))
        target = floor + self.keep_ratio * (cost - floor)
        for goal in self.budget.goals():
            if goal.measure == self.measure.name:
                target = max(target, goal.value)
        return self.measure.target(target)

    def goals_met(self, costs: Dict[str, float], cost_in: Callable[[str], float]) -> bool:
        """Whether a model meets every --target_* goal. ``costs`` holds the measures
        already known (measure name -> cost; completed in place), ``cost_in(name)``
        measures one that is not."""
        for goal in self.budget.goals():
            if goal.measure not in costs:
                costs[goal.measure] = cost_in(goal.measure)
            if not goal.met(costs[goal.measure]):
                return False
        return True

    def _points_lost(self, teacher: pd.DataFrame, row) -> float:
        base = selection.selection_accuracy(teacher.iloc[0], self.validation)
        return 100 * (base - selection.selection_accuracy(row, self.validation))

    @staticmethod
    def _within(lost: float, drop: float) -> bool:
        """Whether ``lost`` points are within the allowed ``drop``. Accuracies are counts
        over a split, so a loss of exactly the allowed points (60 of 6,000 images for 1.0)
        is common; 100 × a difference of floats lands a hair either side of it, and the
        stop rule and the final choice must read it the same way."""
        return lost <= drop + 1e-9

    def noise_warning(self, teacher: pd.DataFrame, n: int) -> Optional[str]:
        """:func:`noise_warning` for this run: its allowed drop, the teacher's recorded
        accuracy on the selection split of ``n`` examples.

        Args:
            teacher: the run's ``teacher.csv`` rows (empty: accuracy unknown).
            n: the selection split's number of examples.

        Returns:
            The warning line, or None.
        """
        accuracy = selection.selection_accuracy(teacher.iloc[0], self.validation) \
            if not teacher.empty else float("nan")
        return noise_warning(self.budget.max_accuracy_drop, n, accuracy, self.split)

    def stop_reason(self, teacher: pd.DataFrame, students: pd.DataFrame) -> Optional[str]:
        """Why no further iteration should run (None: go on): every --target_* goal met
        by the last student, or the last student more than --max_accuracy_drop points
        below the teacher on the selection split, and the --drop_patience students before
        it too."""
        if students.empty:
            return None
        last = students.iloc[-1]
        if self.budget.goals() and bool(last["goal_met"]):
            return f"iteration {int(last['iteration'])}'s student meets every --target_* goal"
        drop = self.budget.max_accuracy_drop
        if drop is None:
            return None
        patience = self.budget.drop_patience
        beyond = []     # the trailing students that lost more than the drop, newest first
        for _, row in students.iloc[::-1].iterrows():
            lost = self._points_lost(teacher, row)
            if self._within(lost, drop) or len(beyond) > patience:
                break
            beyond.append((int(row["iteration"]), lost))
        if len(beyond) <= patience:
            return None
        iteration, lost = beyond[0]
        reason = (f"iteration {iteration}'s student is {lost:.2f} points below the teacher "
                  f"on the {self.split} split (--max_accuracy_drop={drop:g})")
        if patience:
            reason += (f", the {patience + 1} last students in a row lost more "
                       f"(--drop_patience={patience})")
        return reason

    def choose_final(self, teacher: pd.DataFrame, students: pd.DataFrame) -> int:
        """The iteration of the final student: the cheapest in the budget's measure (the
        later one on a tie) whose selection accuracy is within --max_accuracy_drop of the
        teacher's (any student without that rule); 0 (the teacher) when none is."""
        drop = self.budget.max_accuracy_drop
        if drop is not None and not students.empty:
            within = [self._within(self._points_lost(teacher, row), drop)
                      for _, row in students.iterrows()]
            students = students[within]
        if students.empty:
            return 0
        best = students.sort_values(["cost", "iteration"], ascending=[True, False]).iloc[0]
        return int(best["iteration"])
