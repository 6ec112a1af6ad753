"""L1-norm filter pruning (Li et al. 2016, arXiv 1608.08710), ranked globally."""
import dataclasses

import numpy as np

from epkd_tf.pruning.base import StructuredPruner, unit_to_group_mean
from epkd_tf.pruning.registry import register_pruner


def mean_abs_weight_per_unit(graph) -> np.ndarray:
    """Mean absolute incoming weight of every unit (its kernel slice, bias excluded).

    Li et al. rank filters by the *sum* of absolute kernel weights within a layer. Across
    layers that favours wide fan-ins: ranked raw, LeNet-300-100 loses almost its whole
    100-unit layer first (its units have 3x smaller fan-in than the 300-unit layer) and
    collapses to about 13% accuracy. Dividing by the fan-in (the mean) makes the score a
    per-weight magnitude that is comparable between layers, which is what a global ranking
    needs; within a layer the ranking is unchanged.
    """
    model = graph.model
    scores = np.zeros(graph.num_units)
    for info in graph.layers:
        if not len(info.units):
            continue
        layer = model.get_layer(info.name)
        kernel = info.rule.scored_kernel(layer).numpy()   # last axis: the layer's units
        per_unit = np.abs(kernel.reshape(-1, kernel.shape[-1])).mean(axis=0)
        scores[info.units] = per_unit
    return scores


@register_pruner("l1_filter")
@dataclasses.dataclass(frozen=True)
class L1FilterPruner(StructuredPruner):
    """Removes the units (filters / neurons) with the smallest mean absolute weight."""

    needs_data = False

    def score(self, graph, ctx):
        return unit_to_group_mean(graph, mean_abs_weight_per_unit(graph))
