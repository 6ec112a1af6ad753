"""How many examples a data-driven criterion may push through the network at once.

Taylor keeps every layer's output and its gradient for the examples of one pass, the
oracle keeps the intact outputs and re-evaluates stacked copies of them: at ImageNet's
224 px a batch of 32 holds gigabytes (76 MB of layer outputs per example for MobileNetV2,
144 MB for ResNet-50), and TensorFlow's oneDNN allocator keeps what a phase reached for
the rest of the process. Criteria therefore split their examples into chunks whose layer
outputs fit ``--scoring_memory_mb``; every criterion sums per-example quantities, so the
scores do not depend on the chunk size (up to float rounding).
"""
from __future__ import annotations

BYTES_PER_VALUE = 4          # float32 layer outputs


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
    # Imported here: pruners register before the budget package (which imports them) loads.
    from epkd_tf.budget.feasibility import activation_values
    per_example = BYTES_PER_VALUE * copies * max(1, activation_values(model))
    return max(1, int(memory_bytes // per_example))
