"""How a structured plan orders groups for removal: by importance, or by importance per
unit of the budget's cost (``--allocation``).

A criterion scores groups; the plan removes them in an order, least valuable first, until
the budget's measure reaches its target. Ranking by importance alone lets the budget only
decide how far down that order to go: a filter of an early, high-resolution convolution
costs many multiply-accumulates (and milliseconds) and few parameters, so it is kept while
cheap units go. Latency-aware methods (HALP, NetAdapt, AMC) allocate channels by
importance per unit of measured cost instead, a greedy knapsack: keep the most importance
for the cost the target allows.

An allocation is a small class in the :data:`ALLOCATIONS` registry; its ``key`` gives each
group a number (lower = removed earlier). A ``dynamic`` allocation is asked again after
each chunk of removals, because what a group costs depends on what is left: once a
layer's inputs are thinned, each of its filters costs less.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from epkd_tf.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from epkd_tf.graph import ChannelGraph

ALLOCATIONS: Registry = Registry("allocation")

#: A dynamic allocation's costs are recomputed after every removed fraction of this many
#: of the graph's groups (at least one group): 50 rounds at most, each a few milliseconds.
CHUNK = 0.02


def allocation_names():
    """The registered allocations (``--allocation``'s choices)."""
    return ALLOCATIONS.names()


def register_allocation(name: str):
    """Class decorator registering an allocation under ``name``."""
    def decorate(cls):
        cls.name = name
        return ALLOCATIONS.register(name, cls)
    return decorate


class Allocation:
    """Orders groups for removal; ``flops_weight`` is the FLOPs regularisation some
    allocations apply (``--flops_weight``)."""

    name = "unregistered"
    #: Whether ``key`` depends on the groups already removed (asked again per chunk).
    dynamic = False

    def __init__(self, flops_weight: float = 0.0):
        self.flops_weight = float(flops_weight)

    def key(self, graph: "ChannelGraph", scores: np.ndarray, unit_keep: np.ndarray,
            cost: Optional[Callable]) -> np.ndarray:
        """One number per group, lower = removed earlier (ties: lower group id first).

        Args:
          graph: the analysed model.
          scores: the criterion's importance per group (higher = keep).
          unit_keep: the units still kept (boolean per unit).
          cost: the budget's ``cost(unit_keep)`` (with ``group_costs(unit_keep)`` when it
            has it), or None when the plan has no cost.

        Returns:
          A float array of shape (num_groups,).
        """
        raise NotImplementedError


@register_allocation("importance")
class ByImportance(Allocation):
    """Importance alone (the criterion's scores), or with ``flops_weight`` λ > 0 the
    FLOPs-regularised key of Molchanov et al. (2016, section 2.3): rank(score) / #groups −
    λ · MACs(group) / max MACs."""

    def key(self, graph, scores, unit_keep, cost):
        if self.flops_weight == 0:
            return np.asarray(scores, dtype=np.float64)
        from epkd_tf.graph import group_macs
        macs = group_macs(graph)
        return importance_ranks(scores) - self.flops_weight * macs / max(macs.max(), 1.0)


@register_allocation("cost")
class PerCost(Allocation):
    """Importance per unit of the budget's cost, a greedy knapsack: the criterion's score
    of a group divided by what removing it saves now; the lowest ratio goes first. A group
    whose removal saves nothing goes last.

    The scores enter as they are, not as ranks: the ratio order does not depend on their
    scale (nor the saving's), and ranks flatten the differences the knapsack weighs. On
    LeNet-5 (Fashion-MNIST, 25% of the MACs, Taylor) ranks emptied conv1 down to 2 of 20
    filters and scored 1.8 points below raw scores after one fine-tune epoch
    (docs/benchmarks/allocation.md)."""

    dynamic = True

    def key(self, graph, scores, unit_keep, cost):
        if cost is None:
            raise ValueError("The cost allocation needs the budget's cost.")
        saving = np.maximum(marginal_costs(graph, cost, unit_keep), 0.0)
        key = np.full(graph.num_groups, np.inf)
        np.divide(np.asarray(scores, dtype=np.float64), saving, out=key, where=saving > 0)
        return key


def importance_ranks(scores: np.ndarray) -> np.ndarray:
    """Scores as ranks in (0, 1] (ties share their mean rank)."""
    from scipy import stats
    return stats.rankdata(scores) / len(scores)


def marginal_costs(graph: "ChannelGraph", cost: Callable, unit_keep: np.ndarray
                   ) -> np.ndarray:
    """What removing each group alone saves from the model that keeps ``unit_keep``:
    ``cost.group_costs(unit_keep)`` when the cost knows it, else measured by removing each
    kept group in turn (exact, one cost evaluation per group). Removed groups save 0."""
    if hasattr(cost, "group_costs"):
        return np.asarray(cost.group_costs(unit_keep), dtype=np.float64)
    unit_keep = np.asarray(unit_keep, dtype=bool)
    here = cost(unit_keep)
    saving = np.zeros(graph.num_groups)
    for g, units in enumerate(graph.group_units):
        if unit_keep[units].any():
            without = unit_keep.copy()
            without[units] = False
            saving[g] = here - cost(without)
    return saving


def chunk_size(num_groups: int, dynamic: bool) -> int:
    """Groups removed between two calls of an allocation's ``key``."""
    return max(1, math.ceil(CHUNK * num_groups)) if dynamic else max(1, num_groups)


def make_allocation(name: str, flops_weight: float = 0.0) -> Allocation:
    """The allocation registered as ``name``; UnknownNameError (one line) otherwise."""
    return ALLOCATIONS.get(name)(flops_weight)
