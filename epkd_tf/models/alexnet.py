"""AlexNet (Krizhevsky et al. 2012) and its common CIFAR-size adaptation."""
import epkd_tf  # noqa: F401

from epkd_tf.models.common import min_side, scaled
from epkd_tf.models.registry import register_model

# The ImageNet layout's 11x11/4 stem and three 3x3/2 pools need large images.
IMAGENET_PX = 128


@register_model("alexnet")
def alexnet(input_shape, num_classes, width=1.0):
    """AlexNet with ReLU, without LRN or the two-GPU split.

    Inputs of at least 128 px get the ImageNet layout (conv 11x11/4 96, 5x5 256, 3x3
    384-384-256 with 3x3/2 max-pools, dense 4096-4096); smaller ones the usual CIFAR
    layout (3x3 convs 64-192-384-256-256, 2x2 pools, dense 1024-1024). The classifier
    has Dropout(0.5) before each hidden dense layer.
    """
    import tf_keras
    from tf_keras import layers
    s = lambda n: scaled(n, width)  # noqa: E731
    inputs = tf_keras.Input(shape=input_shape, name="image")
    if min_side(input_shape) >= IMAGENET_PX:
        convs = [(s(96), 11, 4, True), (s(256), 5, 1, True), (s(384), 3, 1, False),
                 (s(384), 3, 1, False), (s(256), 3, 1, True)]
        pool = dict(pool_size=3, strides=2)
        hidden = s(4096)
    else:
        convs = [(s(64), 3, 1, True), (s(192), 3, 1, True), (s(384), 3, 1, False),
                 (s(256), 3, 1, False), (s(256), 3, 1, True)]
        # "same" pools keep 28x28 (MNIST) inputs above 1x1 after three pools.
        pool = dict(pool_size=2, strides=2, padding="same")
        hidden = s(1024)
    x = inputs
    for i, (filters, kernel, stride, pooled) in enumerate(convs, start=1):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu",
                          name=f"conv{i}")(x)
        if pooled:
            x = layers.MaxPooling2D(name=f"pool{i}", **pool)(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dropout(0.5, name=f"drop{i}")(x)
        x = layers.Dense(hidden, activation="relu", name=f"fc{i}")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="alexnet")
