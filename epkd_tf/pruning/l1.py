"""L1-norm filter pruning (Li et al. 2016, arXiv 1608.08710), ranked globally."""
import dataclasses

import numpy as np

from epkd_tf import compat
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

    A producer followed directly by a per-channel scale (BatchNormalization, whose
    ``gamma / sqrt(moving_variance + eps)`` TFLite folds into the kernel) is scored by its
    folded kernel. The raw kernel of a convolution before BatchNormalization says nothing
    about its output's size, since the normalisation undoes any scale: ranked raw across
    the layers of a MobileNetV2, whole expansions go first and the candidate collapses.

    Args:
      graph: the analysed model (``epkd_tf.graph.analyze``).

    Returns:
      One score per unit of ``graph`` (float64).
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
    folded = set()
    for info in graph.layers:
        scale = info.rule.channel_scale(model.get_layer(info.name))
        if scale is None:
            continue
        producer, _ = compat.tensor_origin(compat.node_inputs(info.node)[0])
        # Fold only into the producer right before, once (a scale after an Add or a
        # depthwise convolution multiplies a sum or a nonlinearity of units' outputs).
        if producer.name not in graph.producer_names or producer.name in folded:
            continue
        made = graph.layer(producer.name)
        if not np.array_equal(info.in_positions[0], made.out_positions):
            continue
        live = made.out_positions >= 0
        scores[made.out_positions[live]] *= np.abs(scale[live])
        folded.add(producer.name)
    return scores


@register_pruner("l1_filter")
@dataclasses.dataclass(frozen=True)
class L1FilterPruner(StructuredPruner):
    """Removes the units (filters / neurons) with the smallest mean absolute weight."""

    needs_data = False

    def score(self, graph, ctx):
        return unit_to_group_mean(graph, mean_abs_weight_per_unit(graph))
