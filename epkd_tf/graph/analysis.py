"""Dependency analysis: which output channels of a functional model can be removed together.

Vocabulary used across epkd_tf:

* **unit** — one output channel of a producing layer (a Conv filter, a Dense neuron).
* **group** — units that must be removed together because an ``Add`` (or another
  element-wise merge) lines up their channels; in a plain chain every group is one unit.
  Groups are what criteria score and what pruning removes.
* **block** — the producing layers linked by such couplings (one layer in a plain chain).
  Per-layer floors and per-layer score normalisation work on blocks.

Units that reach a model output (the logits) are *fixed* and never belong to a group.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf import compat
from epkd_tf.graph.rules import Rule, UnsupportedLayerError, rule_for, unsupported


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One layer of the analysed model, in topological order."""

    name: str
    rule: Rule
    node: object                      # the tf_keras Node through which the model calls it
    in_positions: Tuple[np.ndarray, ...]  # unit id per last-axis position of each input
    out_positions: np.ndarray
    units: np.ndarray                 # unit ids this layer produces (empty if none)


@dataclasses.dataclass(frozen=True)
class Block:
    """Producing layers whose channels are coupled, and the groups they hold."""

    name: str
    layers: Tuple[str, ...]
    groups: np.ndarray


@dataclasses.dataclass
class ChannelGraph:
    """The result of :func:`analyze`: units, groups and blocks of a model."""

    model: tf_keras.Model
    layers: List[LayerInfo]
    unit_layer: np.ndarray      # producing layer name index per unit (into producer_names)
    unit_channel: np.ndarray    # channel index of the unit in its layer's output
    producer_names: List[str]
    group_of_unit: np.ndarray   # group id per unit, -1 for fixed units
    group_units: List[np.ndarray]
    group_block: np.ndarray     # block id per group
    blocks: List[Block]

    @property
    def num_units(self) -> int:
        return len(self.unit_layer)

    @property
    def num_groups(self) -> int:
        return len(self.group_units)

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise KeyError(f"No layer named {name!r} in the analysed model.")

    def mixing_layers(self) -> List[LayerInfo]:
        """Layers that read channels through weights: where removed units stop being read."""
        return [info for info in self.layers if info.rule.mixes]

    def group_positions(self, positions: np.ndarray) -> np.ndarray:
        """Maps an array of unit ids (``-1`` = fixed) to group ids (``-1`` = fixed)."""
        out = np.full(positions.shape, -1, dtype=np.int64)
        live = positions >= 0
        out[live] = self.group_of_unit[positions[live]]
        return out

    def unit_keep(self, removed_groups) -> np.ndarray:
        """Boolean keep mask over units once ``removed_groups`` are gone."""
        removed = np.zeros(self.num_groups + 1, dtype=bool)
        removed[np.asarray(list(removed_groups), dtype=np.int64)] = True
        # Fixed units have group -1, which indexes the always-False sentinel at the end.
        return ~removed[self.group_of_unit]


def keep_of_positions(positions: np.ndarray, unit_keep: np.ndarray) -> np.ndarray:
    """Boolean keep mask over tensor positions: fixed positions (-1) are always kept."""
    keep = np.ones(len(positions), dtype=bool)
    live = positions >= 0
    keep[live] = unit_keep[positions[live]]
    return keep


class _UnionFind:
    def __init__(self):
        self.parent: List[int] = []
        self.fixed: List[bool] = []

    def add(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.fixed.extend([False] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.fixed[ra] = self.fixed[ra] or self.fixed[rb]

    def fix(self, a: int) -> None:
        self.fixed[self.find(a)] = True


def _tensor_key(tensor) -> Tuple[str, int]:
    layer, index = compat.tensor_origin(tensor)
    return layer.name, index


def model_nodes(model: tf_keras.Model):
    """(layer, node) pairs of a functional model in topological order.

    Raises UnsupportedLayerError for subclassed models and for layers called more than
    once (shared layers), whose channels could not be pruned independently.
    """
    if not compat.is_functional(model):
        raise UnsupportedLayerError(
            f"Model {model.name!r} ({type(model).__name__}) is not a functional tf_keras "
            "model; only functional (or Sequential) models can be pruned structurally.")
    pairs = []
    for layer in model.layers:
        nodes = compat.layer_nodes(model, layer)
        if len(nodes) != 1:
            raise unsupported(layer, f"it is called {len(nodes)} times in the model "
                              "(shared layers cannot be pruned)")
        pairs.append((layer, nodes[0]))
    return pairs


def analyze(model: tf_keras.Model) -> ChannelGraph:
    """Traces channels through ``model`` and returns its units, groups and blocks."""
    uf = _UnionFind()
    positions: Dict[Tuple[str, int], np.ndarray] = {}
    shapes: Dict[Tuple[str, int], tuple] = {}
    producer_names: List[str] = []
    unit_layer: List[np.ndarray] = []
    infos: List[LayerInfo] = []
    nodes = model_nodes(model)
    # Model inputs hold no units. (Sequential.layers omits its InputLayer, so seed them here.)
    for tensor in model.inputs:
        positions[_tensor_key(tensor)] = np.full(int(tensor.shape[-1]), -1, dtype=np.int64)
        shapes[_tensor_key(tensor)] = tuple(tensor.shape)

    for layer, node in nodes:
        rule = rule_for(layer)
        outputs = compat.node_outputs(node)
        if len(outputs) != 1:
            raise unsupported(layer, "it has several outputs")
        outputs = outputs[0]
        if compat.node_is_input(node):
            in_pos, in_shapes = [], []
            out_pos = np.full(int(outputs.shape[-1]), -1, dtype=np.int64)
            units = np.zeros(0, dtype=np.int64)
        else:
            in_keys = [_tensor_key(t) for t in compat.node_inputs(node)]
            in_pos = [positions[k] for k in in_keys]
            in_shapes = [shapes[k] for k in in_keys]
            created: List[np.ndarray] = []

            def new_units(n: int) -> np.ndarray:
                ids = uf.add(n)
                created.append(ids)
                return ids

            if rule.couples_inputs(layer, in_shapes):
                _couple(uf, layer, in_pos)
            out_pos = rule.propagate(layer, in_pos, in_shapes, new_units)
            units = created[0] if created else np.zeros(0, dtype=np.int64)
            if len(units):
                producer_names.append(layer.name)
                unit_layer.append(np.full(len(units), len(producer_names) - 1))
        key = (layer.name, 0)
        positions[key] = out_pos
        shapes[key] = tuple(outputs.shape)
        if len(out_pos) != outputs.shape[-1]:
            raise unsupported(layer, f"epkd_tf traced {len(out_pos)} channels but the layer "
                              f"outputs {outputs.shape[-1]}")
        infos.append(LayerInfo(layer.name, rule, node, tuple(in_pos), out_pos, units))

    for output in model.outputs:
        for unit in positions[_tensor_key(output)]:
            if unit >= 0:
                uf.fix(int(unit))
    # Channels some layer must keep whole (a LayerNorm over them) are fixed like outputs.
    for info in infos:
        if info.rule.fixes_inputs(compat.node_layer(info.node)):
            for pos in info.in_positions:
                for unit in pos[pos >= 0]:
                    uf.fix(int(unit))
    # Checked only now: a Softmax / LayerNorm on the logits reads units that are prunable
    # while tracing and fixed only once the outputs are known.
    for info in infos:
        reason = info.rule.needs_fixed_inputs(compat.node_layer(info.node))
        if reason and any(not uf.fixed[uf.find(int(u))]
                          for pos in info.in_positions for u in pos[pos >= 0]):
            raise unsupported(compat.node_layer(info.node), reason)

    n_units = len(uf.parent)
    roots = np.array([uf.find(u) for u in range(n_units)], dtype=np.int64)
    fixed = np.array([uf.fixed[r] for r in roots], dtype=bool)
    group_of_unit = np.full(n_units, -1, dtype=np.int64)
    live_roots = np.unique(roots[~fixed])
    group_of_unit[~fixed] = np.searchsorted(live_roots, roots[~fixed])
    group_units = [np.flatnonzero(group_of_unit == g) for g in range(len(live_roots))]

    unit_layer_arr = (np.concatenate(unit_layer) if unit_layer
                      else np.zeros(0, dtype=np.int64))
    unit_channel = np.concatenate(
        [np.arange(len(u)) for u in unit_layer]) if unit_layer else np.zeros(0, np.int64)
    group_block, blocks = _blocks(group_units, unit_layer_arr, producer_names)
    return ChannelGraph(model, infos, unit_layer_arr, unit_channel, producer_names,
                        group_of_unit, group_units, group_block, blocks)


def _couple(uf: _UnionFind, layer, in_pos: List[np.ndarray]) -> None:
    width = len(in_pos[0])
    if any(len(p) != width for p in in_pos):
        raise unsupported(layer, "its inputs have different channel counts")
    for other in in_pos[1:]:
        for a, b in zip(in_pos[0], other):
            if a >= 0 and b >= 0:
                uf.union(int(a), int(b))
            elif a >= 0 or b >= 0:
                # A prunable channel added to a fixed one (e.g. the input image) can't go.
                uf.fix(int(max(a, b)))


def _blocks(group_units, unit_layer, producer_names):
    """Blocks = connected components of producing layers linked by shared groups."""
    parent = list(range(len(producer_names)))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for units in group_units:
        layers = np.unique(unit_layer[units])
        for other in layers[1:]:
            parent[find(int(other))] = find(int(layers[0]))
    group_block_root = np.array([find(int(unit_layer[u[0]])) for u in group_units],
                                dtype=np.int64)
    roots = sorted(set(group_block_root.tolist()), key=lambda r: r)
    block_id = {root: i for i, root in enumerate(roots)}
    group_block = np.array([block_id[r] for r in group_block_root], dtype=np.int64)
    blocks = []
    for root in roots:
        members = tuple(producer_names[i] for i in range(len(producer_names)) if find(i) == root)
        blocks.append(Block("+".join(members), members,
                            np.flatnonzero(group_block == block_id[root])))
    return group_block, blocks
