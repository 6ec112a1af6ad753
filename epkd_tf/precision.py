"""Mixed precision: models that compute in float16 / bfloat16, and their float32 copies.

``--precision`` puts every layer of the run's teacher under a Keras mixed-precision policy
(``mixed_float16`` for GPUs with tensor cores, ``mixed_bfloat16`` for TPUs and recent
CPUs): layers compute in the half type and keep float32 variables. The policy lives in
each layer's config, not in Keras' global policy, so nothing outside the run changes,
pruning surgery (which rebuilds a model from its config) keeps it, and a checkpoint
reloads with it. The output layer stays float32, as Keras' guide advises: the logits,
the losses and the softened distillation targets are computed in float32.

Two consequences handled here:

* ``float16`` gradients underflow without loss scaling: :func:`optimizer_for` wraps the
  optimizer of a float16 model in a ``LossScaleOptimizer`` (bfloat16 has float32's range
  and needs none);
* deployment formats want float32 graphs (LiteRT cannot convert a float16 Conv2D, Keras 3
  and TF Serving users expect float32 signatures): every export works on
  :func:`float32_copy`, the same weights under the float32 policy.
"""
from __future__ import annotations

from typing import Tuple

#: The values of ``--precision``: float32, or a Keras mixed-precision policy.
PRECISIONS: Tuple[str, ...] = ("float32", "mixed_float16", "mixed_bfloat16")


def model_precision(model) -> str:
    """The policy ``model``'s hidden layers compute under: ``float32``, or the mixed policy
    of its first layer that computes in a half type."""
    for layer in model.layers:
        policy = getattr(layer, "dtype_policy", None)
        name = getattr(policy, "name", "float32")
        if name in PRECISIONS[1:]:
            return name
    return "float32"


def _output_layer_names(model) -> set:
    from epkd_tf import compat
    return {compat.tensor_origin(tensor)[0].name for tensor in model.outputs}


def with_policy(model, precision: str):
    """``model`` with every layer under ``precision`` (its output layers under float32),
    the same weights; ``model`` itself when nothing changes.

    Args:
        model: a functional or sequential ``tf_keras`` model.
        precision: one of :data:`PRECISIONS`.

    Returns:
        A new model (a clone with the weights copied), or ``model``.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    import tf_keras
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{precision!r}")
    outputs = _output_layer_names(model)

    def wanted(layer) -> str:
        return "float32" if layer.name in outputs else precision

    def current(layer) -> str:
        return getattr(getattr(layer, "dtype_policy", None), "name", "float32")

    layers = [layer for layer in model.layers
              if not isinstance(layer, tf_keras.layers.InputLayer)]
    if all(current(layer) == wanted(layer) for layer in layers):
        return model

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = wanted(layer)
        return layer.__class__.from_config(config)

    # The model's own layer classes, so that user layers rebuild without being
    # registered as Keras serialisables (as pruning surgery does).
    classes = {type(layer).__name__: type(layer) for layer in model.layers
               if not type(layer).__module__.startswith("tf_keras.")}
    with tf_keras.utils.custom_object_scope(classes):
        copy = tf_keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def float32_copy(model):
    """``model`` computing in float32 (the same weights): what every export converts;
    ``model`` itself when it already does."""
    if model_precision(model) == "float32":
        return model
    return with_policy(model, "float32")


def optimizer_for(model, optimizer):
    """``optimizer``, wrapped in a dynamic ``LossScaleOptimizer`` when ``model`` computes
    in float16 (whose small gradients underflow unscaled)."""
    import tf_keras
    if model_precision(model) != "mixed_float16" or isinstance(
            optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
        return optimizer
    return tf_keras.mixed_precision.LossScaleOptimizer(optimizer)


def _scaling(optimizer) -> bool:
    import tf_keras
    return isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)


def scale_loss(optimizer, loss):
    """``loss`` as ``optimizer`` wants it differentiated: multiplied by its loss scale when
    it is a ``LossScaleOptimizer`` (call inside the gradient tape), else unchanged."""
    return optimizer.get_scaled_loss(loss) if _scaling(optimizer) else loss


def unscale_gradients(optimizer, gradients):
    """The gradients of :func:`scale_loss`'s loss divided by the loss scale again."""
    return optimizer.get_unscaled_gradients(gradients) if _scaling(optimizer) else gradients
