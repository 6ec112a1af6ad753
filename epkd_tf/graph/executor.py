"""Runs a functional model layer by layer, exposing the inputs of its channel-mixing layers.

Criteria need what ``model(x)`` hides: the tensors entering each Dense/Conv layer (Taylor
multiplies them by their gradients) and cheap re-evaluation of the network when some
channels stop being read (oracle). Masking an input of a mixing layer is exactly what
removing those units means (see ``surgery.zero_groups``), so the oracle's loss change
is the loss change of the pruned model.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from epkd_tf import compat
from epkd_tf.graph.analysis import ChannelGraph


def _call(info, values: Dict[str, tf.Tensor]):
    """Calls one layer the way the functional model does, with ``values`` for its inputs."""
    args, kwargs = compat.node_call_arguments(info.node, values)
    kwargs.pop("training", None)
    layer = compat.node_layer(info.node)
    return layer(*args, training=False, **kwargs) if compat.expects_training_arg(layer) \
        else layer(*args, **kwargs)


class GraphExecutor:
    """Evaluates ``graph.model`` in inference mode, one layer at a time."""

    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self.infos = [info for info in graph.layers if not compat.node_is_input(info.node)]
        model = graph.model
        self._input_ids = [str(id(t)) for t in model.inputs]
        self._output_ids = [str(id(t)) for t in model.outputs]
        self._mixing = {info.name for info in graph.mixing_layers()}
        self._consumers: Dict[str, List[str]] = {}
        for info in self.infos:
            for kt_id in compat.node_input_ids(info.node):
                self._consumers.setdefault(kt_id, []).append(info.name)

    def input_id(self, layer_name: str) -> str:
        """Id of the tensor entering ``layer_name`` (single-input layers)."""
        return compat.node_input_ids(self.graph.layer(layer_name).node)[0]

    def forward(self, x) -> Dict[str, tf.Tensor]:
        """All tensors of the model for input ``x``, keyed by Keras tensor id."""
        values = {self._input_ids[0]: tf.convert_to_tensor(x)}
        for info in self.infos:
            out = _call(info, values)
            values[compat.node_output_ids(info.node)[0]] = out
        return values

    def output(self, values: Dict[str, tf.Tensor]) -> tf.Tensor:
        return values[self._output_ids[0]]

    def rerun(self, values: Dict[str, tf.Tensor], input_masks: Dict[str, np.ndarray],
              copies: int) -> tf.Tensor:
        """Model output with masked inputs of some mixing layers, for ``copies`` masks at once.

        ``input_masks[layer]`` has shape (copies, channels): copy k multiplies the last axis
        of that layer's input by ``input_masks[layer][k]``. The batch of the result is
        ``copies * batch`` (copy-major). Only layers downstream of a masked layer are
        recomputed; everything else comes from ``values`` (a ``forward`` result).
        """
        dirty: Dict[str, tf.Tensor] = {}
        batch = None
        for info in self.infos:
            ids = compat.node_input_ids(info.node)
            masked = info.name in input_masks
            if not masked and not any(i in dirty for i in ids):
                continue
            inputs = {}
            for kt_id in ids:
                if kt_id in dirty:
                    inputs[kt_id] = dirty[kt_id]
                else:
                    clean = values[kt_id]
                    batch = int(clean.shape[0])
                    inputs[kt_id] = tf.tile(clean, [copies] + [1] * (clean.shape.rank - 1))
            if masked:
                kt_id = ids[0]
                t = inputs[kt_id]
                mask = tf.constant(input_masks[info.name], dtype=t.dtype)   # (copies, C)
                n = int(values[kt_id].shape[0]) if kt_id in values else batch
                shaped = tf.reshape(t, [copies, n] + t.shape[1:].as_list())
                mask = tf.reshape(mask, [copies, 1] + [1] * (t.shape.rank - 2) + [-1])
                inputs[kt_id] = tf.reshape(shaped * mask, tf.shape(t))
            dirty[compat.node_output_ids(info.node)[0]] = _call(info, inputs)
        out_id = self._output_ids[0]
        if out_id in dirty:
            return dirty[out_id]
        clean = values[out_id]
        return tf.tile(clean, [copies] + [1] * (clean.shape.rank - 1))


def mixing_input_positions(graph: ChannelGraph) -> Dict[str, np.ndarray]:
    """Group id per input position of every mixing layer that reads prunable channels."""
    result = {}
    for info in graph.mixing_layers():
        groups = graph.group_positions(info.in_positions[0])
        if np.any(groups >= 0):
            result[info.name] = groups
    return result


def group_masks(graph: ChannelGraph, group_ids: np.ndarray,
                positions: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """Input masks that remove each of ``group_ids`` alone: {layer: (len(group_ids), C)}."""
    positions = mixing_input_positions(graph) if positions is None else positions
    group_ids = np.asarray(group_ids)
    masks = {}
    for name, groups in positions.items():
        hit = groups[None, :] == group_ids[:, None]
        if hit.any():
            masks[name] = (~hit).astype(np.float32)
    return masks
