"""MobileNetV2 (Sandler et al. 2018), written flat for channel analysis."""
import epkd_tf  # noqa: F401

from epkd_tf.models.common import SMALL_INPUT_PX, conv_bn, min_side, scaled
from epkd_tf.models.registry import register_model

# (expansion t, output channels c, repeats n, first stride s) per stage, from the paper.
STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1)]


def inverted_residual(x, expansion, out_channels, stride, name):
    """1x1 expand (Conv-BN-ReLU6) -> 3x3 depthwise (BN-ReLU6) -> 1x1 linear projection (BN).

    The input is added back when the block keeps the resolution and the channel count.
    """
    from tf_keras import layers
    in_channels = int(x.shape[-1])
    y = x
    if expansion != 1:
        y = conv_bn(y, in_channels * expansion, 1, name=f"{name}_expand", activation="relu6")
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                               name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    # Linear bottleneck: no activation after the projection (the paper's key point).
    y = conv_bn(y, out_channels, 1, name=f"{name}_project", activation=None)
    if stride == 1 and in_channels == out_channels:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


@register_model("mobilenet_v2")
def mobilenet_v2(input_shape, num_classes, width=1.0):
    """MobileNetV2: 3x3 stem 32, 17 inverted residual blocks, 1x1 conv 1280, GAP, logits.

    ``width`` multiplies every channel count (the paper's width multiplier). For inputs
    below 100 px (CIFAR) the stem and the first strided stage use stride 1, so a 32x32
    image ends at 4x4 instead of 1x1.
    """
    import tf_keras
    from tf_keras import layers
    small = min_side(input_shape) < SMALL_INPUT_PX
    inputs = tf_keras.Input(shape=input_shape, name="image")
    x = conv_bn(inputs, scaled(32, width), 3, name="stem_conv", strides=1 if small else 2,
                activation="relu6")
    block = 0
    for stage, (t, c, n, s) in enumerate(STAGES):
        if small and stage == 1:
            s = 1
        for index in range(n):
            x = inverted_residual(x, t, scaled(c, width), s if index == 0 else 1,
                                  name=f"block{block}")
            block += 1
    x = conv_bn(x, scaled(1280, width), 1, name="head_conv", activation="relu6")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="mobilenet_v2")
