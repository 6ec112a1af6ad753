"""Layer outputs per example: how many examples a pass may push through a network at once.

Taylor keeps every layer's output and its gradient for the examples of one pass, the
oracle keeps the intact outputs and re-evaluates stacked copies of them, and LiteRT's
int8 calibration keeps every intermediate tensor of its batch to log its range: at
ImageNet's 224 px a batch of 32 holds gigabytes (76 MB of layer outputs per example for
MobileNetV2, 144 MB for ResNet-50), and TensorFlow's oneDNN allocator keeps what a phase
reached for the rest of the process. These passes therefore split their examples into
chunks whose layer outputs fit a memory bound (``--scoring_memory_mb`` for the criteria);
each sums or takes extremes over examples, so the result does not depend on the chunk
size (up to float rounding).
"""
from __future__ import annotations

BYTES_PER_VALUE = 4          # float32 layer outputs


def activation_values(model) -> int:
    """Float values of every layer's output for one example.

    Args:
        model: a built ``tf_keras`` model (its layers' output shapes are read).

    Returns:
        The sum over layers and outputs of the product of each output's non-batch
        dimensions (an unknown dimension counts as 1).
    """
    total = 0
    for layer in model.layers:
        shapes = layer.output_shape
        for shape in shapes if isinstance(shapes, list) else [shapes]:
            count = 1
            for dim in tuple(shape)[1:]:
                count *= int(dim or 1)
            total += count
    return total


def chunk_examples(model, memory_bytes: int, copies: float = 1.0) -> int:
    """Examples whose layer outputs, ``copies`` times over, fit in ``memory_bytes``.

    Args:
        model: the network the criterion runs (its layers' output shapes are used).
        memory_bytes: what the chunk's layer outputs may take at once.
        copies: how many values each layer output value costs (e.g. 2 for an output and
            its gradient).

    Returns:
        At least 1 (a single example is always processed, whatever it costs).
    """
    per_example = BYTES_PER_VALUE * copies * max(1, activation_values(model))
    return max(1, int(memory_bytes // per_example))
