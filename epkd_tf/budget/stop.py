"""When a run stops and which student is final, judged on its recorded tables.

Every rule reads ``teacher.csv`` and ``students.csv`` rows only (never a model held in
memory), so a resumed run decides exactly as the uninterrupted one would have:

* the next target is ``keep_ratio`` × the current student's cost, never below a
  ``--target_*`` goal in the same measure (the last iteration lands on the goal);
* a run stops when its last student meets every ``--target_*`` goal, or lost more than
  ``--max_accuracy_drop`` points against the teacher on the selection split;
* the final student is the cheapest whose selection accuracy is within
  ``--max_accuracy_drop`` of the teacher's (any student without that rule), else the
  teacher itself.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional

import pandas as pd

from epkd_tf import selection
from epkd_tf.budget.measures import Measure


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

    def next_target(self, cost: float) -> float:
        """``keep_ratio`` × ``cost``, but never below a --target_* goal in the same
        measure (the last iteration lands on it instead of overshooting)."""
        target = self.keep_ratio * cost
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

    def stop_reason(self, teacher: pd.DataFrame, students: pd.DataFrame) -> Optional[str]:
        """Why no further iteration should run (None: go on): every --target_* goal met
        by the last student, or the last student more than --max_accuracy_drop points
        below the teacher on the selection split."""
        if students.empty:
            return None
        last = students.iloc[-1]
        if self.budget.goals() and bool(last["goal_met"]):
            return f"iteration {int(last['iteration'])}'s student meets every --target_* goal"
        drop = self.budget.max_accuracy_drop
        if drop is not None:
            lost = self._points_lost(teacher, last)
            if not self._within(lost, drop):
                return (f"iteration {int(last['iteration'])}'s student is {lost:.2f} points "
                        f"below the teacher on the {self.split} split "
                        f"(--max_accuracy_drop={drop:g})")
        return None

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
