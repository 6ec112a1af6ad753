"""Parameter counts of a model and of any pruned version of it, without rebuilding it."""
from __future__ import annotations

from typing import Optional

import numpy as np

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf.graph.analysis import ChannelGraph, keep_of_positions


def dense_params(model: tf_keras.Model) -> int:
    """Every weight of the model (trainable or not), zeros included."""
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def nonzero_params(model: tf_keras.Model) -> int:
    """Weights that are not exactly zero: the size a sparse format has to store."""
    return int(sum(int(np.count_nonzero(w)) for w in model.get_weights()))


class ParamCounter:
    """Counts the nonzero parameters a pruned version of the model would have.

    The count of a structured-pruned model is a sum over layers of two dot products of
    keep vectors with tables built once from the weights (see ``rules.CountTables``), so a
    pruning plan can try many removal sets cheaply. Zeros already in the weights (from
    magnitude pruning) are not counted, so the count is a *nonzero* count.
    """

    def __init__(self, graph: ChannelGraph, dense: bool = False):
        """``dense``: count every stored weight (zeros included), the parameters a plain
        file holds, instead of the nonzero ones."""
        self.graph = graph
        self._entries = []
        weights_by_layer = {layer.name: layer.get_weights() for layer in graph.model.layers}
        if dense:
            weights_by_layer = {name: [np.ones_like(w) for w in weights]
                                for name, weights in weights_by_layer.items()}
        counted = set()
        for info in graph.layers:
            weights = weights_by_layer[info.name]
            counted.add(info.name)
            if not weights:
                continue
            tables = info.rule.count_tables(graph.model.get_layer(info.name), weights)
            in_pos = info.in_positions[0] if info.in_positions else np.zeros(0, np.int64)
            self._entries.append((in_pos, info.units, tables))

    def count(self, unit_keep: np.ndarray) -> int:
        """Nonzero parameters left when only units with ``unit_keep[u]`` survive."""
        unit_keep = np.asarray(unit_keep, dtype=np.int64)
        total = 0
        for in_pos, units, t in self._entries:
            in_keep = keep_of_positions(in_pos, unit_keep).astype(np.int64)
            out_keep = unit_keep[units] if len(units) else None
            if t.pair is not None:
                total += int(in_keep @ t.pair @ out_keep)
            if t.out_vec is not None:
                total += int(t.out_vec @ out_keep)
            if t.in_vec is not None:
                total += int(t.in_vec @ in_keep)
            total += t.const
        return total

    def __call__(self, unit_keep: np.ndarray) -> int:
        return self.count(unit_keep)

    def group_costs(self, unit_keep: Optional[np.ndarray] = None) -> np.ndarray:
        """Nonzero parameters that removing each group alone saves from the model that
        keeps ``unit_keep`` (default: every unit): its rows and columns in every layer that
        produces or reads it (exact for one group; removed groups save 0)."""
        keep = _full_keep(self.graph, unit_keep)
        unit_cost = np.zeros(self.graph.num_units)
        for in_pos, units, t in self._entries:
            in_keep = keep_of_positions(in_pos, keep).astype(np.float64)
            out_keep = keep[units].astype(np.float64) if len(units) else None
            per_input = np.zeros(len(in_pos))
            if t.pair is not None:
                unit_cost[units] += in_keep @ t.pair
                per_input += t.pair @ out_keep
            if t.out_vec is not None:
                unit_cost[units] += t.out_vec
            if t.in_vec is not None:
                per_input += t.in_vec
            live = in_pos >= 0
            np.add.at(unit_cost, in_pos[live], per_input[live])
        return units_to_groups(self.graph, unit_cost * keep)

    def count_all(self) -> int:
        """Nonzero parameters of the unpruned model."""
        return self.count(np.ones(self.graph.num_units, dtype=np.int64))


class LayerCounts:
    """How many input positions and output units each costed layer keeps under a unit
    keep mask: the shape information every cost measure (MACs, dense size, a latency
    model) is a function of. Layers whose rule produces units are costed with
    (kept inputs, kept units); other weighted layers (depthwise, normalisation) with
    (kept inputs, kept inputs)."""

    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self.entries = []            # (layer, rule, input positions, units)
        for info in graph.layers:
            if not info.in_positions:
                continue
            layer = graph.model.get_layer(info.name)
            if not layer.weights:
                continue
            self.entries.append((layer, info.rule, info.in_positions[0], info.units))

    def counts(self, unit_keep: np.ndarray):
        """[(layer, rule, kept inputs, kept outputs)] for ``unit_keep``."""
        unit_keep = np.asarray(unit_keep, dtype=bool)
        result = []
        for layer, rule, in_pos, units in self.entries:
            kept_in = int(keep_of_positions(in_pos, unit_keep).sum())
            kept_out = int(unit_keep[units].sum()) if len(units) else kept_in
            result.append((layer, rule, kept_in, kept_out))
        return result

    def full(self):
        return self.counts(np.ones(self.graph.num_units, dtype=bool))


class LayerwiseCost:
    """A cost that is a sum over layers of ``per_layer(layer, rule, kept_in, kept_out)``
    plus ``offset``: MACs, the dense size of a file, a latency model. ``__call__(unit_keep)``
    is what the pruning plan searches over.

    ``step``: the runtime computes a layer's output channels in tiles of this many, so one
    removed channel saves nothing until its tile empties; the marginal costs spread a
    tile's saving over its channels instead (1: every channel saves its own share, as
    parameters and MACs do). ``exact_cost``: a cost of the same model that may rise when
    a unit is removed (a latency model's measured sawtooth), which the plan picks its
    prefix by, or None.
    """

    def __init__(self, graph: ChannelGraph, per_layer, offset: float = 0.0, step: int = 1):
        self.graph, self.per_layer, self.offset = graph, per_layer, float(offset)
        self.step = max(1, int(step))
        self.exact_cost: Optional["LayerwiseCost"] = None
        self.layers = LayerCounts(graph)

    def __call__(self, unit_keep: np.ndarray) -> float:
        return self.offset + float(sum(self.per_layer(layer, rule, kin, kout)
                                       for layer, rule, kin, kout in self.layers.counts(unit_keep)))

    def full(self) -> float:
        return self(np.ones(self.graph.num_units, dtype=bool))

    def group_costs(self, unit_keep: Optional[np.ndarray] = None) -> np.ndarray:
        """What removing each group alone saves from the model that keeps ``unit_keep``
        (default: every unit): its units' share of every layer that produces or reads them
        — the marginal cost the cost-aware and FLOPs-regularised rankings weigh (exact for
        one group with ``step`` 1; two groups removed from one layer interact). With a
        ``step`` > 1 a layer's channels each save the mean saving of removing them down to
        the tile boundary below (a multiple of ``step``). Removed groups cost 0."""
        graph = self.graph
        keep = _full_keep(graph, unit_keep)
        unit_cost = np.zeros(graph.num_units)
        for layer, rule, in_pos, units in self.layers.entries:
            in_keep = keep_of_positions(in_pos, keep)
            kin = int(in_keep.sum())
            kout = int(keep[units].sum()) if len(units) else kin
            here = self.per_layer(layer, rule, kin, kout)
            if len(units):                                     # producing its units
                s = self._to_tile(kout)
                unit_cost[units] += (here - self.per_layer(layer, rule, kin, kout - s)) / s
                per_input = here - self.per_layer(layer, rule, kin - 1, kout)
            else:                                              # per-channel layers
                s = self._to_tile(kin)
                per_input = (here - self.per_layer(layer, rule, kin - s, kin - s)) / s
            live = in_pos >= 0                                 # reading prunable units
            np.add.at(unit_cost, in_pos[live], per_input)
        return units_to_groups(graph, unit_cost * keep)

    def _to_tile(self, width: int) -> int:
        """How many channels a layer of ``width`` loses down to the tile boundary below
        (1..step; 1 for an empty layer)."""
        return max(1, width - (width - 1) // self.step * self.step)


class AffineCost:
    """``scale`` × another cost + ``offset`` (e.g. four bytes per stored weight plus a
    file's overhead), with the marginal group costs of the one it scales."""

    def __init__(self, inner, scale: float = 1.0, offset: float = 0.0):
        self.inner, self.scale, self.offset = inner, float(scale), float(offset)

    def __call__(self, unit_keep: np.ndarray) -> float:
        return self.scale * self.inner(unit_keep) + self.offset

    def group_costs(self, unit_keep: Optional[np.ndarray] = None) -> np.ndarray:
        return self.scale * self.inner.group_costs(unit_keep)


def _full_keep(graph: ChannelGraph, unit_keep: Optional[np.ndarray]) -> np.ndarray:
    if unit_keep is None:
        return np.ones(graph.num_units, dtype=bool)
    return np.asarray(unit_keep, dtype=bool)


def units_to_groups(graph: ChannelGraph, unit_values: np.ndarray) -> np.ndarray:
    """Per-group sums of a per-unit array (fixed units belong to no group)."""
    live = graph.group_of_unit >= 0
    return np.bincount(graph.group_of_unit[live], weights=unit_values[live],
                       minlength=graph.num_groups)


def layer_macs(layer, rule, kept_in: int, kept_out: int) -> int:
    """One layer's multiply-accumulates per example (its rule knows how)."""
    return rule.macs(layer, kept_in, kept_out)


def macs_cost(graph: ChannelGraph) -> LayerwiseCost:
    """Multiply-accumulates per example of any pruned version of ``graph.model``."""
    return LayerwiseCost(graph, layer_macs)


def group_macs(graph: ChannelGraph) -> np.ndarray:
    """Multiply-accumulates per example that each group costs in the current model: what
    its producer spends computing it plus what every Dense/Conv reading it spends on it
    (per position it occupies); depthwise layers add their per-channel work."""
    return macs_cost(graph).group_costs()


def model_macs(model: tf_keras.Model) -> int:
    """Multiply-accumulates of one forward pass on one example (FLOPs ≈ 2 × MACs) of any
    model: every layer with a rule counts what its rule says (Dense, convolutions,
    depthwise and separable convolutions); other layers count 0."""
    from epkd_tf.graph.rules import find_rule
    total = 0
    for layer in model.layers:
        rule = find_rule(layer)
        if rule is None or not layer.weights:
            continue
        kept_in = int(layer.input_shape[-1])
        kept_out = int(layer.output_shape[-1])
        total += rule.macs(layer, kept_in, kept_out)
    return int(total)
