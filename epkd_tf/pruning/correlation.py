"""Spearman rank correlation of each criterion's scores with the reference (oracle) scores."""
from __future__ import annotations

from typing import Dict

import numpy as np
import pandas as pd
from scipy import stats

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from epkd_tf.graph import ChannelGraph

COLUMNS = ["criterion", "scope", "spearman"]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")   # undefined for fewer than 2 units or constant scores
    return float(stats.spearmanr(a, b).statistic)


def criteria_correlation(graph: ChannelGraph, scores: Dict[str, np.ndarray],
                         reference: str) -> pd.DataFrame:
    """One row per (criterion, scope): scope ``global`` ranks all groups together (what a
    global pruning order uses); ``layer:<block>`` ranks within one layer."""
    ref = scores[reference]
    rows = []
    for name, values in scores.items():
        if name == reference:
            continue
        rows.append((name, "global", _spearman(values, ref)))
        for block in graph.blocks:
            rows.append((name, f"layer:{block.name}",
                         _spearman(values[block.groups], ref[block.groups])))
    return pd.DataFrame(rows, columns=COLUMNS)
