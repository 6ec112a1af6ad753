"""The LeNet teachers used throughout the pruning literature on MNIST."""
import epkd_tf  # noqa: F401

from epkd_tf.models.common import scaled
from epkd_tf.models.registry import register_model


@register_model("lenet300_100")
def lenet300_100(input_shape, num_classes, width=1.0):
    """LeNet-300-100 (LeCun et al. 1998): fully connected 300-100; 266,610 params on MNIST."""
    import tf_keras
    from tf_keras import layers
    inputs = tf_keras.Input(shape=input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(scaled(300, width), activation="relu", name="fc1")(x)
    x = layers.Dense(scaled(100, width), activation="relu", name="fc2")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="lenet300_100")


@register_model("lenet5")
def lenet5(input_shape, num_classes, width=1.0):
    """LeNet-5 as used by Han et al. 2015 and Frankle & Carbin 2018 (Caffe's variant).

    conv 20@5x5 - maxpool - conv 50@5x5 - maxpool - fc 500 - fc classes, ReLU; 431,080
    params on MNIST. It is the LeNet-5 that the compression results we compare with
    report, wider than LeCun's 6-16-120-84 original.
    """
    import tf_keras
    from tf_keras import layers
    inputs = tf_keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(scaled(20, width), 5, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(scaled(50, width), 5, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(scaled(500, width), activation="relu", name="fc1")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="lenet5")
