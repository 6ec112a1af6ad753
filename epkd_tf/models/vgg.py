"""VGG-16 with batch normalisation (Simonyan & Zisserman 2014; Ioffe & Szegedy 2015)."""
import epkd_tf  # noqa: F401

from epkd_tf.models.common import conv_bn, min_side, scaled
from epkd_tf.models.registry import register_model

IMAGENET_PX = 128
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M"]


@register_model("vgg16")
def vgg16(input_shape, num_classes, width=1.0):
    """VGG-16-BN: 13 Conv3x3-BN-ReLU layers in five stages, each ended by a 2x2 max-pool.

    Below 128 px the CIFAR classifier (flatten -> dense 512 -> logits); from 128 px the
    ImageNet one (flatten -> dense 4096 -> dropout -> dense 4096 -> dropout -> logits).
    Pools use "same" padding so 28x28 inputs still leave a 1x1 map after five of them.
    """
    import tf_keras
    from tf_keras import layers
    inputs = tf_keras.Input(shape=input_shape, name="image")
    x = inputs
    stage, index = 1, 1
    for item in VGG16_LAYOUT:
        if item == "M":
            x = layers.MaxPooling2D(2, padding="same", name=f"pool{stage}")(x)
            stage, index = stage + 1, 1
        else:
            x = conv_bn(x, scaled(item, width), 3, name=f"conv{stage}_{index}")
            index += 1
    x = layers.Flatten(name="flatten")(x)
    if min_side(input_shape) >= IMAGENET_PX:
        for i in (1, 2):
            x = layers.Dense(scaled(4096, width), activation="relu", name=f"fc{i}")(x)
            x = layers.Dropout(0.5, name=f"drop{i}")(x)
    else:
        x = layers.Dense(scaled(512, width), activation="relu", name="fc1")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="vgg16")
