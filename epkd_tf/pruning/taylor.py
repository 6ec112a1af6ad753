"""First-order Taylor pruning (Molchanov et al. 2016, arXiv 1611.06440)."""
import dataclasses
from typing import Optional

import numpy as np

from epkd_tf.pruning.base import StructuredPruner, normalise_per_block
from epkd_tf.activations import chunk_examples
from epkd_tf.pruning.registry import register_pruner
from epkd_tf.settings import at_least, one_of, setting


def taylor_scores(graph, x: np.ndarray, y: np.ndarray, batch_size: int,
                  memory_bytes: Optional[int] = None) -> np.ndarray:
    """Raw Taylor criterion per group, before per-layer normalisation.

    For each batch: Θ(g) = | mean over examples and positions of z · ∂ℓ/∂z |, where z is
    the activation at every position where a consumer (Dense/Conv) reads group g and ℓ is
    the per-example cross-entropy — the first-order estimate of the loss change when g's
    activations become zero, i.e. when g is removed. Θ is averaged over the batches.

    Args:
        graph: the analysed network (``epkd_tf.graph.analyze``).
        x, y: the examples and their integer labels.
        batch_size: examples per batch (the unit the absolute value is taken over).
        memory_bytes: what one pass's layer outputs and gradients may take; a batch that
            needs more is processed in chunks of examples whose sums are added (the
            network runs in inference mode, so each example's gradient is its own and
            the result does not change). None: whole batches.

    Returns:
        One score per group (``graph.num_groups``).
    """
    import tensorflow as tf
    import tf_keras
    from epkd_tf.graph.executor import GraphExecutor, mixing_input_positions
    executor = GraphExecutor(graph)
    positions = mixing_input_positions(graph)
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=tf_keras.losses.Reduction.SUM)
    # An output and its gradient per value: two copies of the layer outputs.
    chunk = batch_size if memory_bytes is None else min(
        batch_size, chunk_examples(graph.model, memory_bytes, copies=2))
    total = np.zeros(graph.num_groups)
    batches = 0
    for start in range(0, len(x), batch_size):
        sums = np.zeros(graph.num_groups)
        counts = np.zeros(graph.num_groups)
        for first in range(start, min(start + batch_size, len(x)), chunk):
            last = min(first + chunk, start + batch_size, len(x))
            xb, yb = x[first:last], y[first:last]
            with tf.GradientTape() as tape:
                values = executor.forward(xb)
                inputs = {name: values[executor.input_id(name)] for name in positions}
                tape.watch(list(inputs.values()))
                loss = loss_fn(yb, executor.output(values))
            grads = tape.gradient(loss, inputs)
            del values, tape
            for name, groups in positions.items():
                zg = (inputs[name] * grads[name]).numpy()
                per_position = zg.reshape(-1, zg.shape[-1])       # (examples × spatial, C)
                live = groups >= 0
                np.add.at(sums, groups[live], per_position.sum(axis=0)[live])
                np.add.at(counts, groups[live], per_position.shape[0])
            del inputs, grads
        total += np.abs(sums / np.maximum(counts, 1))
        batches += 1
    return total / max(batches, 1)


@register_pruner("taylor")
@dataclasses.dataclass(frozen=True)
class TaylorPruner(StructuredPruner):
    """Removes the groups whose removal the first-order Taylor expansion says costs least.

    Scores are normalised within each layer (block) so that they can be ranked across
    layers: by their L2 norm as Molchanov et al. do (``l2``), or by their mean (``mean``,
    Torch-Pruning's normaliser), which does not penalise wide layers: after L2
    normalisation a layer of n equally important units scores 1/sqrt(n) each, so global
    ranking strips the widest layers first.
    """

    batches: int = setting(8, "Batches of --batch_size the Taylor criterion averages over.",
                           flag="taylor_batches", checks=[at_least(1)])
    # Default "mean": at 10x on LeNet-5 it kept the accuracy of L2 normalisation (99.20 vs
    # 99.22%, two seeds) with balanced widths and 35% fewer MACs
    # (docs/benchmarks/quality.md).
    normalization: str = setting("mean", "How Taylor scores are made comparable across "
                                 "layers: mean (each layer's scores divided by their mean, "
                                 "Torch-Pruning's normaliser), l2 (by their L2 norm, "
                                 "Molchanov et al.) or none.",
                                 flag="taylor_normalization",
                                 checks=[one_of(lambda: ("l2", "mean", "none"),
                                                "normalisation")])

    def score(self, graph, ctx):
        x, y = ctx.sample(self.batches * ctx.batch_size)
        raw = taylor_scores(graph, x, y, ctx.batch_size,
                            memory_bytes=ctx.config.scoring_memory_mb * 2 ** 20)
        return normalise_per_block(graph, raw, self.normalization)
