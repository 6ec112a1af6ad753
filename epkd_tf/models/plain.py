"""Plain (non-residual) convolutional students for the compression study."""
import epkd_tf  # noqa: F401

from epkd_tf.models.common import conv_bn, scaled
from epkd_tf.models.registry import register_model


@register_model("plain_convnet")
def plain_convnet(input_shape, num_classes, width=1.0):
    """4 conv + 2 dense: conv c, conv c, pool, conv 2c, conv 2c, pool, fc 4c, fc classes.

    ``c = 32 * width`` (3x3 convolutions with BatchNorm and ReLU). The distillation
    student of the CIFAR-10 study (Polino et al. 2018 use such plain nets): at 32x32x3
    inputs, width 0.58 / 1.3 / 2.1 give 0.21M / 1.02M / 2.59M parameters.
    """
    import tf_keras
    from tf_keras import layers
    c = scaled(32, width)
    inputs = tf_keras.Input(shape=input_shape, name="image")
    x = conv_bn(inputs, c, 3, "conv1")
    x = conv_bn(x, c, 3, "conv2")
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = conv_bn(x, 2 * c, 3, "conv3")
    x = conv_bn(x, 2 * c, 3, "conv4")
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4 * c, activation="relu", name="fc1")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="plain_convnet")
