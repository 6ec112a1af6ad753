"""From scores and a parameter budget to the groups to remove — shared by every criterion."""
from __future__ import annotations

import dataclasses
import math

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from epkd_tf.graph import ChannelGraph, ParamCounter


class PruningError(ValueError):
    """A parameter target cannot be met; the message says which limit stops it."""


@dataclasses.dataclass(frozen=True)
class Plan:
    removed_groups: np.ndarray
    nonzero_params: int
    target: int


def block_floors(graph: ChannelGraph, layer_floor: float) -> np.ndarray:
    """Minimum groups every block keeps: ceil(layer_floor × its groups), at least one."""
    return np.array([max(1, math.ceil(layer_floor * len(b.groups))) for b in graph.blocks])


def ranking_key(graph: ChannelGraph, scores: np.ndarray, flops_weight: float) -> np.ndarray:
    """What the global ranking sorts by: the scores, or with ``flops_weight`` λ > 0,
    rank(score) / #groups − λ · MACs(group) / max MACs.

    This is the FLOPs regularisation of Molchanov et al. (2016, section 2.3): importance
    alone keeps the cheap-per-parameter convolutions and strips the dense layers, which
    shrinks parameters far more than latency. Scores enter as normalised ranks so the
    trade-off means the same for every criterion, whatever the scale of its scores.
    """
    if flops_weight == 0:
        return scores
    from scipy import stats
    from epkd_tf.graph import group_macs
    ranks = stats.rankdata(scores) / len(scores)
    macs = group_macs(graph)
    return ranks - flops_weight * macs / max(macs.max(), 1.0)


def removal_order(graph: ChannelGraph, scores: np.ndarray, layer_floor: float,
                  flops_weight: float = 0.0) -> np.ndarray:
    """Groups from least to most important (global ranking), skipping those a floor protects.

    Ties are broken by group id so the order is deterministic.
    """
    key = ranking_key(graph, scores, flops_weight)
    order = np.lexsort((np.arange(len(key)), key))
    removable = np.array([len(b.groups) for b in graph.blocks]) - block_floors(graph, layer_floor)
    taken = np.zeros(len(graph.blocks), dtype=np.int64)
    result = []
    for g in order:
        b = graph.group_block[g]
        if taken[b] < removable[b]:
            taken[b] += 1
            result.append(g)
    return np.array(result, dtype=np.int64)


def plan_removal(graph: ChannelGraph, scores: np.ndarray, target_nonzero: int,
                 layer_floor: float, counter: ParamCounter = None,
                 flops_weight: float = 0.0) -> Plan:
    """The prefix of the removal order whose nonzero count is closest to ``target_nonzero``.

    The count falls monotonically along the order, so a binary search finds the first
    prefix at or below the target; that prefix or the one before it (whichever is closer)
    is the plan. Any two criteria therefore land within one group's parameters of the
    target, and so of each other.
    """
    from epkd_tf.graph import ParamCounter
    counter = counter or ParamCounter(graph)
    order = removal_order(graph, scores, layer_floor, flops_weight)

    def count(k: int) -> int:
        return counter.count(graph.unit_keep(order[:k]))

    full = count(0)
    if target_nonzero >= full:
        return Plan(order[:0], full, target_nonzero)
    if count(len(order)) > target_nonzero:
        raise PruningError(
            f"Cannot reach {target_nonzero} nonzero parameters: removing every unit the "
            f"per-layer floor allows leaves {count(len(order))}. Lower --layer_floor or "
            "use fewer iterations / a larger --keep_ratio.")
    lo, hi = 0, len(order)          # count(lo) > target >= count(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) > target_nonzero:
            lo = mid
        else:
            hi = mid
    k = hi if abs(count(hi) - target_nonzero) <= abs(count(lo) - target_nonzero) else lo
    return Plan(order[:k], count(k), target_nonzero)


def minimum_nonzero(graph: ChannelGraph, layer_floor: float,
                    counter: ParamCounter = None) -> int:
    """The fewest nonzero parameters structured pruning can leave in one plan: every
    group removed that the per-block floor of ``layer_floor`` allows (``layer_floor=0``:
    one group left per block, the least any number of iterations can reach)."""
    from epkd_tf.graph import ParamCounter
    counter = counter or ParamCounter(graph)
    order = removal_order(graph, np.zeros(len(graph.group_block)), layer_floor)
    return counter.count(graph.unit_keep(order))
