"""Parameter counts of a model and of any pruned version of it, without rebuilding it."""
from __future__ import annotations

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

    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self._entries = []
        weights_by_layer = {layer.name: layer.get_weights() for layer in graph.model.layers}
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

    def count_all(self) -> int:
        """Nonzero parameters of the unpruned model."""
        return self.count(np.ones(self.graph.num_units, dtype=np.int64))


def group_macs(graph: ChannelGraph) -> np.ndarray:
    """Multiply-accumulates per example that each group costs in the current model.

    A unit costs what its producer spends computing it (output positions × kernel size ×
    input channels) plus what every Dense/Conv reading it spends on it (that layer's output
    positions × kernel size × output channels, per position the unit occupies); depthwise
    layers add their per-channel work. Removing the group saves about this much (exactly,
    up to the interaction of two removed groups in one layer).
    """
    model = graph.model
    unit_cost = np.zeros(graph.num_units)
    for info in graph.layers:
        layer = model.get_layer(info.name)
        kernel = getattr(layer, "kernel", None)
        kind = type(layer).__name__
        if kernel is None and kind not in ("DepthwiseConv2D", "SeparableConv2D"):
            continue
        positions = int(np.prod(layer.output_shape[1:-1], dtype=np.int64))
        in_pos = info.in_positions[0]
        if kind == "DepthwiseConv2D" or kind == "SeparableConv2D":
            depthwise = layer.depthwise_kernel.shape          # (kh, kw, C, m)
            per_channel = positions * int(np.prod(depthwise[:2])) * int(depthwise[3])
            live = in_pos >= 0
            np.add.at(unit_cost, in_pos[live], per_channel)
            if kind == "DepthwiseConv2D":
                continue
            kernel = layer.pointwise_kernel                    # (1, 1, C·m, out)
            in_pos = np.repeat(in_pos, int(depthwise[3]))
        spatial = int(np.prod(kernel.shape[:-2]))
        n_in, n_out = int(kernel.shape[-2]), int(kernel.shape[-1])
        if len(info.units):                                    # producing its units
            unit_cost[info.units] += positions * spatial * n_in
        live = in_pos >= 0                                     # reading prunable units
        np.add.at(unit_cost, in_pos[live], positions * spatial * n_out)
    return np.array([unit_cost[units].sum() for units in graph.group_units])
