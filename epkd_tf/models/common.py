"""Building blocks shared by the teacher zoo: width scaling and Conv-BN-activation units."""
import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)

# Below this many pixels (on the shorter side) a model uses its CIFAR-size stem; at or
# above it the strided ImageNet stem, which would shrink a 32x32 image to almost nothing.
SMALL_INPUT_PX = 100


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1: the size of a hidden layer at ``width``."""
    return max(1, int(round(channels * width)))


def min_side(input_shape) -> int:
    """Shorter spatial side of an (H, W, C) input (the only side for 1-D inputs)."""
    spatial = [int(d) for d in tuple(input_shape)[:-1]]
    return min(spatial) if spatial else 0


def conv_bn(x, filters, kernel_size, name, strides=1, activation="relu"):
    """Conv (no bias: the BN shift replaces it) -> BatchNorm -> activation (None: linear).

    Layers are named ``name``, ``name_bn`` and ``name_relu`` so pruning reports and tests
    can refer to them independently of Keras' global name counters.
    """
    from tf_keras import layers
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                      name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if activation == "relu6":
        x = layers.ReLU(6.0, name=f"{name}_relu6")(x)
    elif activation is not None:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x
