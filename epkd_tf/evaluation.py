"""How a run measures its models: the candidates' table (accuracies, size, MACs,
latency, budget cost, rank) and the rows ``teacher.csv`` and ``students.csv`` record.

Every figure is measured on the split the table names: ``train_sample_accuracy`` on the
ranking examples (``--eval_examples`` seeded training examples, or the whole split),
``validation_accuracy`` on ``--validation_split``'s examples (NaN without one),
``test_accuracy`` on the test split; the selection split's column ranks (see
:mod:`epkd_tf.selection`). Candidates are evaluated on a fixed seeded subset of at most
``--selection_examples`` examples of each split (so a candidate costs the same on a
50,000-image split as on a 10,000-image one); the teacher's and the students' rows are
measured on the whole splits.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional

import numpy as np
import pandas as pd

from epkd_tf import selection, training
from epkd_tf.budget import make_measure, multiply_accumulates
from epkd_tf.deploy import tflite as tflite_files

log = logging.getLogger("epkd_tf")


class Evaluator:
    """Measures models for one run.

    Args:
        cfg: the run's :class:`epkd_tf.config.RunConfig` (ranking weights, timing runs).
        data: the run's data.
        clock: the run's clock (evaluations count as ``candidate_evaluation`` or
            ``student_evaluation``).
        measure: the budget's measure; ``measure_context`` how it measures.
        rules: the run's :class:`epkd_tf.budget.StopRules` (whether goals are met).
        ranking_examples: returns the batched ranking examples (drawn once by the run).
    """

    def __init__(self, cfg, data, clock, measure, measure_context, rules,
                 ranking_examples: Callable):
        self.cfg, self.data, self.clock = cfg, data, clock
        self.measure, self.measure_context, self.rules = measure, measure_context, rules
        self.ranking_examples = ranking_examples
        self.validation = selection.has_validation(data)
        self._subsets: Dict[str, object] = {}

    def selection_data(self):
        """The batched selection split: --validation_split when set, else the test split."""
        return self.data.validation() if self.validation else self.data.test()

    def subset(self, role: str):
        """The batched ``--selection_examples`` seeded examples of ``role`` (validation or
        test) that candidates are evaluated on (the whole split when it has no more)."""
        if role not in self._subsets:
            n = self.cfg.selection_examples
            make = getattr(self.data, "evaluation_subset", None)
            self._subsets[role] = (
                make(role, n, self.cfg.data.seed) if make is not None
                else self.data.validation() if role == "validation" else self.data.test())
        return self._subsets[role]

    @property
    def subset_is_whole(self) -> bool:
        """Whether the selection split's evaluation subset is the whole split (then its
        accuracies are the whole split's and may be reused for a student's row)."""
        spec = self.data.spec
        count = spec.num_validation if self.validation else spec.num_test
        n = self.cfg.selection_examples
        return n == 0 or n >= count

    def selection_accuracy(self, model, iteration: int) -> float:
        """``model``'s accuracy on the selection split's evaluation subset, the examples
        the candidates were ranked on (a student evaluation)."""
        with self.clock.phase("student_evaluation", iteration):
            return training.accuracy(
                model, self.subset("validation" if self.validation else "test"))

    def candidates_table(self, candidates, pruners, iteration: int, target: float = np.nan,
                         skipped: Optional[Dict[str, str]] = None) -> pd.DataFrame:
        """Accuracy, size, MACs, latency and budget cost of every candidate, ranked on the
        selection split; a row per pruner of ``pruners`` left out of the iteration
        (``skipped``: why)."""
        rows: List[dict] = []
        with self.clock.phase("candidate_evaluation", iteration):
            ranking_data = self.ranking_examples()      # drawn once, in iteration 1
        validation = self.subset("validation") if self.validation else None
        test = self.subset("test")
        made = {c.pruner: c for c in candidates}
        for pruner in pruners:
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
                test_acc = training.accuracy(c.model, test)
                costs = tflite_files.measure_costs(c.model, runs=self.cfg.latency_runs)
                macs = multiply_accumulates(c.model)
                # Latency is timed again, side by side with the teacher
                # (``costs.latency_ms`` is the candidate timed alone).
                cost = self.measure.cost(c.model, self.measure_context, costs, macs)
            rows.append({"iteration": iteration, "pruner": c.pruner, "skipped": "",
                         **costs.__dict__, "macs": macs,
                         "cost": cost, "predicted_cost": c.predicted_cost,
                         "target_cost": target, "train_sample_accuracy": train_acc,
                         "validation_accuracy": val_acc, "test_accuracy": test_acc})
        column = selection.selection_column(self.validation)
        table = selection.rank_candidates(pd.DataFrame(rows), self.cfg.rank_weights, column)
        for row in table.sort_values("rank").itertuples():
            if row.skipped:
                continue
            log.info("Iteration %d candidate #%d %-14s %s (target %s), train sample %.4f, "
                     "%s %.4f, score %.4f", iteration, row.rank, row.pruner,
                     self.measure.format(row.cost), self.measure.format(target),
                     row.train_sample_accuracy, selection.split_name(self.validation),
                     getattr(row, column), row.weighted_score)
        return table

    def test_and_validation_accuracy(self, model, iteration: int, known=np.nan):
        """``model``'s test and validation accuracies (NaN without a validation split);
        ``known``, its accuracy on the selection split when already measured (NaN: not),
        is reused instead of evaluating that split again."""
        reuse = not np.isnan(known)
        with self.clock.phase("student_evaluation", iteration):
            if self.validation:
                val_acc = known if reuse else training.accuracy(model, self.data.validation())
                return training.accuracy(model, self.data.test()), val_acc
            return (known if reuse else training.accuracy(model, self.data.test()), np.nan)

    def measured_row(self, model, iteration: int, tflite: Optional[bytes],
                     test_acc: float, val_acc: float) -> dict:
        """What teacher.csv and students.csv record of a model: sizes, MACs, its cost in the
        budget's measure, its accuracies (whole training split; the validation split's
        ``val_acc``, NaN without one; the test split's ``test_acc``) and whether it meets
        every --target_* goal. ``tflite``: its float TFLite file when already converted."""
        with self.clock.phase("student_evaluation", iteration):
            train_acc = training.accuracy(model, self.data.train_eval())
            costs = tflite_files.measure_costs(model, runs=self.cfg.latency_runs, tflite=tflite)
            macs = multiply_accumulates(model)
            measured = {self.measure.name: self.measure.cost(model, self.measure_context,
                                                             costs, macs)}
            goal_met = self.rules.goals_met(measured, lambda name: make_measure(name).cost(
                model, self.measure_context, costs, macs))
        return {"iteration": iteration, **costs.__dict__, "macs": int(macs),
                "cost": measured[self.measure.name], "train_accuracy": train_acc,
                "validation_accuracy": val_acc, "test_accuracy": test_acc,
                "goal_met": goal_met}
