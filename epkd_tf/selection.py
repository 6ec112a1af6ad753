"""Which split selects, and how candidates are ranked on it: the one home of both.

The selection split is ``--validation_split``'s held-out examples when the data has them,
else the test split (the seed's protocol). Every decision that compares models (the
candidates' ranking, the kept-candidate rule, the teacher's BatchNorm check, the stop
rules and the final choice) reads its accuracy through this module, so they cannot
disagree about which column counts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def has_validation(data) -> bool:
    """Whether ``data`` holds a validation split (then it selects)."""
    return bool(getattr(data, "has_validation", False))


def split_name(validation: bool) -> str:
    """``validation`` or ``test``: the split that selects."""
    return "validation" if validation else "test"


def selection_column(validation: bool) -> str:
    """The table column of the selection split's accuracy."""
    return f"{split_name(validation)}_accuracy"


def selection_accuracy(row, validation: bool) -> float:
    """A teacher.csv / students.csv / candidates.csv row's accuracy on the selection split."""
    return float(row[selection_column(validation)])


def table_selection(table: pd.DataFrame) -> str:
    """The column of a candidates table that holds the selection split's accuracy (the
    table says which: a run without a validation split leaves that column empty)."""
    return selection_column(bool(table["validation_accuracy"].notna().any()))


def winner_selection_accuracy(table: pd.DataFrame) -> float:
    """The winning (rank 1) candidate's selection-split accuracy, as ranked."""
    return float(table.loc[table["rank"] == 1, table_selection(table)].iloc[0])


def weighted_score(train_accuracy: float, test_accuracy: float, weights) -> float:
    """(w_train · train + w_test · test) / (w_train + w_test); the candidates' ranking key."""
    w_train, w_test = weights
    return (w_train * train_accuracy + w_test * test_accuracy) / (w_train + w_test)


def rank_candidates(table: pd.DataFrame, weights,
                    selection: str = "test_accuracy") -> pd.DataFrame:
    """Adds ``weighted_score`` and ``rank`` (1 = best) to a candidates table:
    ``(w_train · train_sample_accuracy + w_sel · selection) / (w_train + w_sel)``, where
    ``selection`` names the column of the selection split (``validation_accuracy`` or
    ``test_accuracy``). Ties keep the order of --pruners, so the ranking is deterministic.
    Candidates a pruner could not make (``skipped`` not empty) get no rank.
    """
    table = table.copy()
    train = table["train_sample_accuracy" if "train_sample_accuracy" in table
                  else "train_accuracy"]
    table["weighted_score"] = [weighted_score(tr, se, weights)
                               for tr, se in zip(train, table[selection])]
    ranked = (table["skipped"].isna() | (table["skipped"] == "")).to_numpy() \
        if "skipped" in table else np.ones(len(table), dtype=bool)
    scores = np.where(ranked, table["weighted_score"].to_numpy(dtype=float), -np.inf)
    order = np.lexsort((np.arange(len(table)), -scores))
    ranks = np.full(len(table), np.nan)
    ranks[order[:int(ranked.sum())]] = np.arange(1, int(ranked.sum()) + 1)
    table["rank"] = ranks if not ranked.all() else ranks.astype(int)
    return table
