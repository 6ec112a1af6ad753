"""Registry of teacher architectures, built by name for a dataset's input shape and classes."""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tf_keras

ModelBuilder = Callable[[Sequence[int], int], tf_keras.Model]
_MODELS: Dict[str, ModelBuilder] = {}


def register_model(name: str):
    """Decorator: registers ``builder(input_shape, num_classes) -> tf_keras.Model`` as ``name``."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"Model {name!r} is registered twice.")
        _MODELS[name] = builder
        return builder

    return decorate


def model_names() -> list:
    """Names of every registered teacher, sorted."""
    return sorted(_MODELS)


def build_model(name: str, input_shape: Sequence[int], num_classes: int) -> tf_keras.Model:
    """Builds the registered model ``name`` for inputs of ``input_shape`` (H, W, C).

    Every model is a functional ``tf_keras`` model that outputs logits (no softmax), so
    distillation can soften them with a temperature.
    """
    if name not in _MODELS:
        raise ValueError(f"Unknown teacher {name!r}; choose one of: {', '.join(model_names())}.")
    if num_classes < 2:
        raise ValueError(f"A classifier needs at least 2 classes, got {num_classes}.")
    return _MODELS[name](tuple(int(d) for d in input_shape), int(num_classes))
