"""Polynomial-decay magnitude pruning with TF-MOT (Zhu & Gupta 2017, arXiv 1710.01878)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from epkd_tf import compat, precision
from epkd_tf.pruning.base import Candidate, Pruner
from epkd_tf.pruning.registry import register_pruner
from epkd_tf.settings import at_least, setting

# How many times the mask is recomputed while sparsity ramps up.
_MASK_UPDATES = 10


def _sparsity():
    """TF-MOT's Keras sparsity API (imported when a magnitude pruner first runs: it is a
    slow import that flag parsing should not pay for)."""
    import tensorflow_model_optimization as tfmot
    return tfmot.sparsity.keras


def _prunable_kernels(model):
    """(layer name, weight index) of every weight TF-MOT prunes (Dense/Conv kernels ...)."""
    result = []
    for layer in model.layers:
        if not compat.tfmot_supports(layer):
            continue
        prunable = compat.tfmot_prunable_weights(layer)
        for i, weight in enumerate(layer.weights):
            if any(weight is p for p in prunable):
                result.append((layer.name, i))
    return result


def schedule_steps(total_steps: int):
    """(end_step, frequency) such that the last mask update lands on ``end_step``.

    TF-MOT updates masks when (step - begin) % frequency == 0 and step <= end_step; with
    its default frequency of 100 a short fine-tune never updates the mask at all.
    """
    span = max(1, total_steps - 2)
    updates = min(_MASK_UPDATES, span)
    frequency = max(1, span // updates)
    return frequency * updates, frequency


def zero_smallest(model, target_nonzero: int, variables) -> int:
    """Zeros the smallest-magnitude nonzero entries of ``variables`` (weights of ``model``,
    ranked together) until ``model`` has ``target_nonzero`` nonzero parameters (every
    weight counted, as ``nonzero_params`` does); returns how many were zeroed (0 if it is
    already at or below the target). Ties at the threshold are broken by position, so the
    count is exact; ValueError if ``variables`` hold too few nonzero entries."""
    from epkd_tf.graph import nonzero_params
    excess = nonzero_params(model) - int(target_nonzero)
    if excess <= 0:
        return 0
    values = [v.numpy() for v in variables]
    magnitudes = np.concatenate([np.abs(w).ravel() for w in values])
    candidates = np.flatnonzero(magnitudes)
    if excess > len(candidates):
        raise ValueError(f"cannot reach {target_nonzero} nonzero parameters: only "
                         f"{len(candidates)} kernel weights are left to prune.")
    order = candidates[np.argsort(magnitudes[candidates], kind="stable")[:excess]]
    keep = np.ones(len(magnitudes), dtype=bool)
    keep[order] = False
    start = 0
    for var, w in zip(variables, values):
        mask = keep[start:start + w.size].reshape(w.shape)
        var.assign(np.where(mask, w, 0).astype(w.dtype))
        start += w.size
    return excess


def trim_to(model, kernels, target_nonzero: int) -> None:
    """Zeroes the smallest nonzero kernel weights until at most ``target_nonzero`` remain.

    TF-MOT keeps round(size × density) weights per layer, and a weight at mask 1 that was
    already zero may grow back; this removes that last handful so every candidate of an
    iteration has the same size.
    """
    zero_smallest(model, target_nonzero,
                  [model.get_layer(name).weights[index] for name, index in kernels])


@register_pruner("poly_magnitude")
@dataclasses.dataclass(frozen=True)
class PolyMagnitudePruner(Pruner):
    """Zeroes the smallest-magnitude weights of every layer while fine-tuning briefly.

    Sparsity rises from the current level to the target along TF-MOT's PolynomialDecay
    schedule over ``--magnitude_epochs`` of training on hard labels; ``strip_pruning``
    then removes the wrappers. The network keeps its shape (zeros are stored), so its
    dense and nonzero parameter counts differ; only the nonzero count meets the target.
    """

    epochs: int = setting(1, "Epochs of the poly_magnitude pruning fine-tune.",
                          flag="magnitude_epochs", checks=[at_least(1)])

    def make_candidate(self, model, target_nonzero, ctx):
        sparsity = _sparsity()
        # Wrapping and stripping are this method's surgery; the fine-tune its own phase.
        with ctx.phase("surgery", self.name):
            wrapped, kernels = self._wrap(model, target_nonzero, ctx)
        with ctx.phase("magnitude_finetune", self.name):
            wrapped.fit(ctx.data.train(), epochs=self.epochs, verbose=0,
                        callbacks=[sparsity.UpdatePruningStep(),
                                   *ctx.callbacks(f"{self.name} fine-tune", self.epochs)])
        with ctx.phase("surgery", self.name):
            pruned = sparsity.strip_pruning(wrapped)
            trim_to(pruned, kernels, target_nonzero)
            # Back under the student's mixed precision (the fine-tune ran in float32).
            pruned = precision.with_policy(pruned, precision.model_precision(model))
        return Candidate(self.name, pruned, structured=False, epochs=self.epochs,
                         predicted_cost=float(target_nonzero))

    def _wrap(self, model, target_nonzero, ctx):
        """A copy of ``model`` wrapped by TF-MOT with the schedule to ``target_nonzero``,
        compiled; and its prunable kernels."""
        import tf_keras
        from epkd_tf import optimizers
        from epkd_tf.graph import nonzero_params
        sparsity = _sparsity()
        # prune_low_magnitude wraps the model's own layer objects: work on a copy so the
        # current student, which the other pruners also start from, stays untouched.
        # TF-MOT's wrapper calls the wrapped layer's `call` directly, past Keras' casting
        # of float32 variables to a mixed policy's float16: the fine-tune runs on a
        # float32 copy (float32_copy is already a copy when the model is mixed).
        original = model
        model = precision.float32_copy(original)
        if model is original:
            model = tf_keras.models.clone_model(original)
            model.set_weights(original.get_weights())
        kernels = _prunable_kernels(model)
        kernel_sizes = {(n, i): model.get_layer(n).get_weights()[i].size for n, i in kernels}
        kernel_total = sum(kernel_sizes.values())
        kernel_nonzero = sum(int(np.count_nonzero(model.get_layer(n).get_weights()[i]))
                             for n, i in kernels)
        other_nonzero = nonzero_params(model) - kernel_nonzero
        initial = 1.0 - kernel_nonzero / kernel_total
        final = 1.0 - (target_nonzero - other_nonzero) / kernel_total
        final = min(max(final, initial), 0.999)

        steps_per_epoch = math.ceil(ctx.data.spec.num_train / ctx.batch_size)
        end_step, frequency = schedule_steps(steps_per_epoch * self.epochs)
        schedule = sparsity.PolynomialDecay(initial_sparsity=initial, final_sparsity=final,
                                            begin_step=0, end_step=end_step,
                                            frequency=frequency)
        # Only the layers TF-MOT knows are wrapped: prune_low_magnitude on the whole
        # model refuses any other (Rescaling, a converted model's LayerScale...), though
        # they hold no kernel it would prune. `model` is a private copy: its other layers
        # are reused as they are.
        def wrap(layer):
            if compat.tfmot_supports(layer):
                return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)
            return layer

        wrapped = tf_keras.models.clone_model(model, clone_function=wrap)
        wrapped.compile(optimizer=optimizers.adam(ctx.learning_rate, wrapped),
                        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return wrapped, kernels
