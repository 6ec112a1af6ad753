"""GoogLeNet-style Inception network (Szegedy et al. 2014) with batch normalisation."""
import epkd_tf  # noqa: F401

from epkd_tf.models.common import SMALL_INPUT_PX, conv_bn, min_side, scaled
from epkd_tf.models.registry import register_model

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) of GoogLeNet's nine modules.
MODULES = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def inception_module(x, sizes, width, name):
    """Four Conv-BN-ReLU branches concatenated on channels.

    1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 (the 5x5 factorised into two 3x3, as in
    Inception-v2, cheaper with the same receptive field); 3x3 max-pool -> 1x1.
    """
    from tf_keras import layers
    c1, r3, c3, r5, c5, cp = (scaled(n, width) for n in sizes)
    b1 = conv_bn(x, c1, 1, name=f"{name}_1x1")
    b2 = conv_bn(x, r3, 1, name=f"{name}_3x3_reduce")
    b2 = conv_bn(b2, c3, 3, name=f"{name}_3x3")
    b3 = conv_bn(x, r5, 1, name=f"{name}_5x5_reduce")
    b3 = conv_bn(b3, c5, 3, name=f"{name}_5x5a")
    b3 = conv_bn(b3, c5, 3, name=f"{name}_5x5b")
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    b4 = conv_bn(b4, cp, 1, name=f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([b1, b2, b3, b4])


@register_model("inception")
def inception(input_shape, num_classes, width=1.0):
    """GoogLeNet without the auxiliary classifiers: modules 3a-3b, pool, 4a-4e, pool, 5a-5b.

    Below 100 px the CIFAR stem (one 3x3 Conv-BN-ReLU with 192 filters, full resolution);
    otherwise GoogLeNet's strided stem (7x7/2 conv 64, 3x3/2 pool, 1x1 conv 64, 3x3 conv
    192, 3x3/2 pool). Then global average pooling, Dropout(0.4) and the logits.
    """
    import tf_keras
    from tf_keras import layers
    inputs = tf_keras.Input(shape=input_shape, name="image")
    if min_side(input_shape) < SMALL_INPUT_PX:
        x = conv_bn(inputs, scaled(192, width), 3, name="stem_conv")
    else:
        x = conv_bn(inputs, scaled(64, width), 7, name="stem_conv1", strides=2)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool1")(x)
        x = conv_bn(x, scaled(64, width), 1, name="stem_conv2")
        x = conv_bn(x, scaled(192, width), 3, name="stem_conv3")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool2")(x)
    for key, sizes in MODULES.items():
        if key in ("4a", "5a"):
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{key[0]}")(x)
        x = inception_module(x, sizes, width, name=f"inception{key}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.4, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="inception")
