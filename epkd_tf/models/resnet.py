"""ResNet-18/34/50 (He et al. 2016) with CIFAR- and ImageNet-size stems."""
import epkd_tf  # noqa: F401

from epkd_tf.models.common import SMALL_INPUT_PX, conv_bn, min_side, scaled
from epkd_tf.models.registry import register_model


def _shortcut(x, filters, stride, name):
    """Identity, or a 1x1 projection + BN when the stride or the channel count changes."""
    if stride == 1 and int(x.shape[-1]) == filters:
        return x
    return conv_bn(x, filters, 1, name=f"{name}_proj", strides=stride, activation=None)


def _basic_block(x, planes, stride, name):
    from tf_keras import layers
    shortcut = _shortcut(x, planes, stride, name)
    y = conv_bn(x, planes, 3, name=f"{name}_conv1", strides=stride)
    y = conv_bn(y, planes, 3, name=f"{name}_conv2", activation=None)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _bottleneck(x, planes, stride, name, expansion=4):
    # The stride sits on the 3x3 conv (torchvision's "ResNet v1.5"), not the first 1x1.
    from tf_keras import layers
    shortcut = _shortcut(x, planes * expansion, stride, name)
    y = conv_bn(x, planes, 1, name=f"{name}_conv1")
    y = conv_bn(y, planes, 3, name=f"{name}_conv2", strides=stride)
    y = conv_bn(y, planes * expansion, 1, name=f"{name}_conv3", activation=None)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _resnet(input_shape, num_classes, width, blocks, block_fn, name):
    import tf_keras
    from tf_keras import layers
    inputs = tf_keras.Input(shape=input_shape, name="image")
    stem = scaled(64, width)
    if min_side(input_shape) < SMALL_INPUT_PX:
        x = conv_bn(inputs, stem, 3, name="stem_conv")
    else:
        x = conv_bn(inputs, stem, 7, name="stem_conv", strides=2)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for index in range(count):
            stride = 2 if stage > 1 and index == 0 else 1
            x = block_fn(x, scaled(planes, width), stride, f"stage{stage}_block{index + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name=name)


@register_model("resnet18")
def resnet18(input_shape, num_classes, width=1.0):
    """ResNet-18: basic blocks [2, 2, 2, 2]; CIFAR stem (3x3/1, no pool) below 100 px."""
    return _resnet(input_shape, num_classes, width, [2, 2, 2, 2], _basic_block, "resnet18")


@register_model("resnet34")
def resnet34(input_shape, num_classes, width=1.0):
    """ResNet-34: basic blocks [3, 4, 6, 3]; CIFAR stem (3x3/1, no pool) below 100 px."""
    return _resnet(input_shape, num_classes, width, [3, 4, 6, 3], _basic_block, "resnet34")


@register_model("resnet50")
def resnet50(input_shape, num_classes, width=1.0):
    """ResNet-50: bottleneck blocks [3, 4, 6, 3], expansion 4; CIFAR stem below 100 px."""
    return _resnet(input_shape, num_classes, width, [3, 4, 6, 3], _bottleneck, "resnet50")
