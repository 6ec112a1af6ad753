"""From scores and a parameter budget to the groups to remove — shared by every criterion."""
from __future__ import annotations

import dataclasses
import math

from typing import TYPE_CHECKING, Callable, Dict, Optional

import numpy as np
from epkd_tf.errors import PruningError  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    from epkd_tf.graph import ChannelGraph, ParamCounter


@dataclasses.dataclass(frozen=True)
class Plan:
    removed_groups: np.ndarray
    cost: float                     # the plan's cost in the budget's measure
    target: float

    @property
    def nonzero_params(self) -> float:
        """The cost of a plan made against the default measure (nonzero parameters)."""
        return self.cost


def block_floors(graph: "ChannelGraph", layer_floor: float,
                 reference_widths: Optional[Dict[str, int]] = None) -> np.ndarray:
    """Minimum groups every block keeps: ceil(layer_floor × its width), at least one (and
    never more than it has). The width is the block's current number of groups, or with
    ``reference_widths`` (layer name -> units, e.g. the teacher's) that of its layers in
    the reference model, so that repeated pruning does not compound the floor (10% of 10%
    of a layer after two iterations)."""
    floors = []
    for block in graph.blocks:
        width = len(block.groups)
        if reference_widths:
            known = [reference_widths[name] for name in block.layers if name in reference_widths]
            width = max(known) if known else width
        floors.append(min(len(block.groups), max(1, math.ceil(layer_floor * width))))
    return np.array(floors)


def removal_order(graph: "ChannelGraph", scores: np.ndarray, layer_floor: float,
                  flops_weight: float = 0.0,
                  reference_widths: Optional[Dict[str, int]] = None,
                  allocation: str = "importance", cost: Optional[Callable] = None
                  ) -> np.ndarray:
    """Groups from least to most valuable by ``allocation``'s key (global ranking),
    skipping those a floor protects.

    A dynamic allocation (``cost``: importance per unit of the budget's ``cost``) is keyed
    again after every chunk of removals, on the model that is left. Ties are broken by
    group id so the order is deterministic.
    """
    from epkd_tf.pruning.allocation import chunk_size, make_allocation
    rule = make_allocation(allocation, flops_weight)
    removable = np.array([len(b.groups) for b in graph.blocks]) - block_floors(
        graph, layer_floor, reference_widths)
    taken = np.zeros(len(graph.blocks), dtype=np.int64)
    layer_left = _layer_removable(graph, layer_floor, reference_widths)
    unit_keep = np.ones(graph.num_units, dtype=bool)
    gone = np.zeros(graph.num_groups, dtype=bool)
    chunk = chunk_size(graph.num_groups, rule.dynamic)
    result = []
    while True:
        key = rule.key(graph, scores, unit_keep, cost)
        added = 0
        for g in np.lexsort((np.arange(len(key)), key)):
            if gone[g]:
                continue
            b = graph.group_block[g]
            layers = graph.unit_layer[graph.group_units[g]]
            if taken[b] < removable[b] and np.all(layer_left[layers] > 0):
                taken[b] += 1
                layer_left[layers] -= 1
                gone[g] = True
                unit_keep[graph.group_units[g]] = False
                result.append(g)
                added += 1
                if added == chunk:
                    break
        if added < chunk:              # no group left that a floor does not protect
            break
    return np.array(result, dtype=np.int64)


def _layer_removable(graph: "ChannelGraph", layer_floor: float,
                     reference_widths: Optional[Dict[str, int]] = None) -> np.ndarray:
    """Units each producing layer may lose under its own floor (like the block's). A
    block's groups can fall unevenly on its layers (the branches of a Concatenate all
    added to one residual, as in InceptionResNetV2): without it, one branch could be
    emptied while the block as a whole keeps its floor."""
    widths = np.bincount(graph.unit_layer, minlength=len(graph.producer_names))
    left = np.zeros(len(widths), dtype=np.int64)
    for i, name in enumerate(graph.producer_names):
        reference = (reference_widths or {}).get(name, widths[i])
        floor = min(widths[i], max(1, math.ceil(layer_floor * reference)))
        left[i] = widths[i] - floor
    return left


def round_to_multiple(graph: "ChannelGraph", removed: np.ndarray,
                      multiple: int) -> np.ndarray:
    """``removed`` (a prefix of the removal order) with just enough of each block's removed
    groups put back, most important first (the last removed), that every block keeps a
    multiple of ``multiple`` groups, or all of them: with ``--channel_multiple`` every
    pruned layer's width stays a multiple the runtime's kernels like."""
    if multiple <= 1 or len(removed) == 0:
        return removed
    sizes = np.array([len(b.groups) for b in graph.blocks])
    blocks = graph.group_block[removed]
    keep_back = np.zeros(len(removed), dtype=bool)
    for b in np.unique(blocks):
        positions = np.flatnonzero(blocks == b)           # in removal order
        kept = sizes[b] - len(positions)
        rounded = min(sizes[b], -(-kept // multiple) * multiple)
        restore = rounded - kept
        if restore:
            keep_back[positions[len(positions) - restore:]] = True
    return removed[~keep_back]


def floor_groups(graph: "ChannelGraph", layer_floor: float, channel_multiple: int = 1,
                 reference_widths: Optional[Dict[str, int]] = None) -> np.ndarray:
    """Every group of ``graph`` its per-layer floors allow removed, rounded as plans round
    (``channel_multiple``): what leaves the floor network, about the least any plan
    reaches and what ``--keep_of=removable`` steps above. The floors fix each layer's
    width there, so the groups are taken in id order (the parameters, MACs and latency of
    a width do not depend on which units make it up).

    Args:
        graph: the channel graph of the model to be pruned.
        layer_floor: ``--layer_floor``, the fraction of each layer's width kept.
        channel_multiple: ``--channel_multiple``.
        reference_widths: the widths the floors are fractions of (None: the model's own).

    Returns:
        The ids of the groups to remove.
    """
    order = removal_order(graph, np.zeros(graph.num_groups), layer_floor,
                          reference_widths=reference_widths)
    return round_to_multiple(graph, order, channel_multiple)


def plan_removal(graph: "ChannelGraph", scores: np.ndarray, target: float,
                 layer_floor: float, counter: "ParamCounter" = None,
                 flops_weight: float = 0.0, cost: Optional[Callable] = None,
                 channel_multiple: int = 1,
                 reference_widths: Optional[Dict[str, int]] = None,
                 allocation: str = "importance") -> Plan:
    """The prefix of the removal order whose cost is closest to ``target``.

    The order is ``allocation``'s (:mod:`epkd_tf.pruning.allocation`): by importance, or
    by importance per unit of ``cost``.

    ``cost(unit_keep)`` is the budget's measure of the model that keeps those units
    (default: its nonzero parameters, ``counter``). Every measure falls monotonically
    along the order (removing a unit never adds parameters, MACs, bytes or - in the
    latency model's envelope - time), so a binary search finds the first prefix at or
    below the target; that prefix or the one before it (whichever is closer, but never the
    empty one: a target below the model's cost always removes something) is the plan. Any
    two criteria therefore land within one group's cost of the target, and so of each
    other. ``channel_multiple`` > 1 rounds every block's kept groups up to a multiple of
    it (see :func:`round_to_multiple`) before costing a prefix.

    A cost with an ``exact_cost`` (the latency model: LiteRT runs an odd number of 16-wide
    tiles slower than the next even one, so removing a unit can make a layer slower) is
    searched on that instead: the shortest prefix whose exact cost is at or below the
    target (or the one before it, if closer), found by a scan, since the exact cost does
    not fall monotonically. Its plan often removes less than the envelope's would (it
    stops at a width where the sawtooth is fast) and reports the exact prediction.
    """
    if cost is None:
        from epkd_tf.graph import ParamCounter
        cost = counter or ParamCounter(graph)
    order = removal_order(graph, scores, layer_floor, flops_weight, reference_widths,
                          allocation, cost)

    def removed(k: int) -> np.ndarray:
        return round_to_multiple(graph, order[:k], channel_multiple)

    def count(k: int) -> float:
        return cost(graph.unit_keep(removed(k)))

    exact = getattr(cost, "exact_cost", None)
    measure = count if exact is None else (lambda k: exact(graph.unit_keep(removed(k))))
    full = measure(0)
    if target >= full:
        return Plan(removed(0), full, target)
    if count(len(order)) > target:
        raise PruningError(
            f"Cannot reach {target:g} (the budget's measure): removing every unit the "
            f"per-layer floor allows leaves {count(len(order)):g}. Lower --layer_floor or "
            "use fewer iterations / a larger --keep_ratio.")

    def first_at_or_below() -> int:
        """The first prefix whose cost is at or below the target: a binary search on the
        monotone cost; with an exact one, a scan up from the first removal (it is not
        monotone, and its offset is calibrated apart from the envelope's, so the
        envelope's answer bounds nothing), the envelope's answer if none gets there."""
        if exact is not None:
            found = next((k for k in range(1, len(order) + 1) if measure(k) <= target), None)
            if found is not None:
                return found
        lo, hi = 0, len(order)          # count(lo) > target >= count(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count(mid) > target:
                lo = mid
            else:
                hi = mid
        return hi

    hi = first_at_or_below()
    lo = hi - 1
    k = hi if abs(measure(hi) - target) <= abs(measure(lo) - target) else lo
    if len(removed(k)) == 0:
        # Removing nothing is no candidate for a smaller target: it would hand the
        # iteration the student unchanged (seen with --channel_multiple=8: rounding up to
        # multiples of 8 gave the first prefixes back, the first chunk that stayed removed
        # overshot the target further than the whole model missed it, and the unchanged
        # "candidate" won iteration after iteration).
        k = hi
    return Plan(removed(k), measure(k), target)


def minimum_nonzero(graph: "ChannelGraph", layer_floor: float,
                    counter: "ParamCounter" = None) -> int:
    """The fewest nonzero parameters structured pruning can leave in one plan: every
    group removed that the per-block floor of ``layer_floor`` allows (``layer_floor=0``:
    one group left per block, the least any number of iterations can reach)."""
    from epkd_tf.graph import ParamCounter
    counter = counter or ParamCounter(graph)
    order = removal_order(graph, np.zeros(len(graph.group_block)), layer_floor)
    return counter.count(graph.unit_keep(order))
