"""Oracle pruning: the measured loss change when each group alone is removed."""
import dataclasses
import logging
import time
from typing import Optional

import numpy as np

from epkd_tf.pruning.base import StructuredPruner
from epkd_tf.activations import chunk_examples
from epkd_tf.pruning.registry import register_pruner
from epkd_tf.settings import at_least, default_of, setting



def _loss_sums(logits, y: np.ndarray, copies: int) -> np.ndarray:
    """Per copy, the summed cross-entropy of its ``len(y)`` examples (copy-major logits)."""
    import tensorflow as tf
    import tf_keras
    per_example = tf_keras.losses.sparse_categorical_crossentropy(
        np.tile(y, copies), logits, from_logits=True)
    return tf.reduce_sum(tf.reshape(per_example, [copies, len(y)]), axis=1).numpy()


# Oracle scoring of a large network takes minutes: a progress line this often (seconds).
PROGRESS_EVERY = 15.0


def oracle_scores(graph, x: np.ndarray, y: np.ndarray, progress: str = None,
                  memory_bytes: Optional[int] = None) -> np.ndarray:
    """Loss on (x, y) with group g removed, minus the loss of the intact model, for every g.

    The intact forward pass is computed once per chunk of examples; for each group only
    the layers downstream of its consumers are re-run, many groups at a time (stacked
    along the batch axis), so there is no Python loop calling ``evaluate`` per unit.

    Args:
        graph: the analysed network (``epkd_tf.graph.analyze``).
        x, y: the examples and their integer labels.
        progress: prefix of the progress lines logged every ``PROGRESS_EVERY`` seconds
            (None: silent).
        memory_bytes: what the layer outputs may take at once, split between the intact
            outputs of a chunk of examples and the stacked re-evaluations; losses are
            summed per example, so the scores do not depend on it. None: the
            ``--scoring_memory_mb`` default.

    Returns:
        One signed loss change per group (``graph.num_groups``).
    """
    from epkd_tf.graph.executor import GraphExecutor, group_masks, mixing_input_positions
    if memory_bytes is None:
        from epkd_tf.config import PruningConfig      # loads after the pruners register
        memory_bytes = default_of(PruningConfig, "scoring_memory_mb") * 2 ** 20
    executor = GraphExecutor(graph)
    positions = mixing_input_positions(graph)
    # Half the memory for a chunk's intact outputs, half for its stacked re-evaluations,
    # each copy of which holds at most one more set of the chunk's layer outputs.
    fit = chunk_examples(graph.model, memory_bytes / 2)     # examples' outputs per half
    examples = min(len(x), fit)
    copies = max(1, min(graph.num_groups, fit // examples))
    changes = np.zeros(graph.num_groups)
    started = last = time.perf_counter()
    steps = -(-len(x) // examples) * -(-graph.num_groups // copies)
    step = 0
    for first in range(0, len(x), examples):
        xb, yb = x[first:first + examples], y[first:first + examples]
        values = executor.forward(xb)
        base = _loss_sums(executor.output(values), yb, 1)[0]
        for start in range(0, graph.num_groups, copies):
            ids = np.arange(start, min(start + copies, graph.num_groups))
            masks = group_masks(graph, ids, positions)
            logits = executor.rerun(values, masks, copies=len(ids))
            changes[ids] += _loss_sums(logits, yb, len(ids)) - base
            step += 1
            now = time.perf_counter()
            if progress and now - last > PROGRESS_EVERY and step < steps:
                logging.getLogger("epkd_tf").info(
                    "%s oracle scoring: %d/%d passes, ETA %.0f s", progress, step, steps,
                    (now - started) / step * (steps - step))
                last = now
        del values
    return changes / max(len(x), 1)


@register_pruner("oracle")
@dataclasses.dataclass(frozen=True)
class OraclePruner(StructuredPruner):
    """Removes the groups whose removal changes the loss least: score = |ΔL| ("oracle-abs").

    Molchanov et al. define a signed oracle (ΔL) and an absolute one (|ΔL|) and use the
    absolute one as their reference. Measured here, the signed ranking is much worse for
    pruning many units at once: it first removes units whose *individual* removal lowers
    the loss, and together those changes add up to a large loss increase (LeNet-300-100,
    70% kept in one shot: 0.79 test accuracy signed, 0.92 absolute, 0.95 Taylor). It is also
    the reference the Spearman correlations of the other criteria are computed against.
    """

    reference = True
    examples: int = setting(1024, "Training examples the oracle criterion measures each "
                            "loss change on.", flag="oracle_examples", checks=[at_least(1)])

    def score(self, graph, ctx):
        x, y = ctx.sample(self.examples)
        return np.abs(oracle_scores(graph, x, y, ctx.progress,
                                    memory_bytes=ctx.config.scoring_memory_mb * 2 ** 20))
