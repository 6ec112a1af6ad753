"""Tiny models, weight randomisation and an in-memory fake dataset shared by the graph and
pruning tests. Import it as ``from helpers_models import ...`` after putting ``tests/`` on
``sys.path`` (each test module does that itself)."""
import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras
from tf_keras import layers

from epkd_tf.models import build_model


def lenet300_100(input_shape=(28, 28, 1), num_classes=10, seed=0):
    tf_keras.utils.set_random_seed(seed)
    return build_model("lenet300_100", input_shape, num_classes)


def lenet5(input_shape=(28, 28, 1), num_classes=10, seed=0):
    tf_keras.utils.set_random_seed(seed)
    return build_model("lenet5", input_shape, num_classes)


def residual_model(seed=0, width=4, num_classes=3):
    """stem Conv -> ReLU -> [conv_a -> bn_a -> ReLU -> conv_b] + stem output -> GAP -> Dense.

    The Add couples channel i of ``stem`` with channel i of ``conv_b``.
    """
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((8, 8, 2), name="image")
    stem = layers.Conv2D(width, 3, padding="same", name="stem")(inputs)
    h = layers.ReLU(name="stem_relu")(stem)
    a = layers.Conv2D(5, 3, padding="same", name="conv_a")(h)
    a = layers.BatchNormalization(name="bn_a")(a)
    a = layers.ReLU(name="relu_a")(a)
    b = layers.Conv2D(width, 3, padding="same", name="conv_b")(a)
    x = layers.Add(name="add")([h, b])
    x = layers.ReLU(name="add_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="tiny_residual")


def depthwise_model(seed=0, num_classes=3):
    """Conv -> BN -> ReLU -> DepthwiseConv2D(multiplier 2) -> BN -> ReLU -> Conv -> GAP -> Dense."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((8, 8, 2), name="image")
    x = layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.Conv2D(5, 1, name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="tiny_depthwise")


def concat_model(seed=0, num_classes=3):
    """Two Conv branches concatenated on channels -> Conv -> pool -> Flatten -> Dense -> Dense."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((8, 8, 2), name="image")
    left = layers.Conv2D(3, 3, padding="same", activation="relu", name="left")(inputs)
    right = layers.Conv2D(4, 1, activation="relu", name="right")(inputs)
    x = layers.Concatenate(name="concat")([left, right])
    x = layers.Conv2D(5, 3, activation="relu", name="mix")(x)          # 6x6x5
    x = layers.MaxPooling2D(2, name="pool")(x)                          # 3x3x5
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(6, activation="relu", name="fc")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="tiny_concat")


def mlp_model(seed=0, sizes=(6, 5), num_inputs=4, num_classes=3, separate_relu=True):
    """Dense -> ReLU -> Dense -> ReLU -> Dense (logits)."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((num_inputs,), name="x")
    x = inputs
    for i, n in enumerate(sizes):
        if separate_relu:
            x = layers.Dense(n, name=f"h{i + 1}")(x)
            x = layers.ReLU(name=f"relu{i + 1}")(x)
        else:
            x = layers.Dense(n, activation="relu", name=f"h{i + 1}")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="tiny_mlp")


def randomize(model, seed=0, sparsity=0.0, bias_scale=0.1):
    """Random non-zero biases and BatchNorm statistics (kernels keep their initialiser).

    With ``sparsity`` > 0, that fraction of every kernel is set to exact zero (a
    magnitude-pruned network).
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        new = []
        for var, value in zip(layer.weights, layer.get_weights()):
            name = var.name.split("/")[-1]
            if "moving_variance" in name or "gamma" in name:
                value = rng.uniform(0.5, 1.5, size=value.shape)
            elif "kernel" in name:
                if sparsity:
                    value = np.where(rng.random(value.shape) < sparsity, 0.0, value)
            else:  # bias, beta, moving_mean
                value = rng.normal(0.0, bias_scale, size=value.shape)
            new.append(np.asarray(value, dtype=np.float32))
        if new:
            layer.set_weights(new)
    return model


def random_inputs(model, n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size=(n,) + tuple(model.input_shape[1:])).astype(np.float32)


def random_groups(graph, seed=0, min_keep=1):
    """A seeded random removal set: from every block, between 1 and len-min_keep groups."""
    rng = np.random.default_rng(seed)
    removed = []
    for block in graph.blocks:
        n = len(block.groups)
        if n <= min_keep:
            continue
        k = int(rng.integers(1, n - min_keep + 1))
        removed.extend(rng.choice(block.groups, size=k, replace=False).tolist())
    return np.array(sorted(removed), dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class FakeSpec:
    num_train: int
    num_classes: int


class FakeData:
    """In-memory stand-in for ``epkd_tf.data.Data``: sample(), train() and spec.num_train."""

    def __init__(self, input_shape, num_classes, num_train=64, batch_size=32, seed=0):
        rng = np.random.default_rng(seed)
        self.x = rng.uniform(0.0, 1.0, size=(num_train,) + tuple(input_shape)).astype(np.float32)
        self.y = rng.integers(0, num_classes, size=num_train).astype(np.int32)
        self.batch_size = batch_size
        self.spec = FakeSpec(num_train=num_train, num_classes=num_classes)

    def sample(self, n, seed=None):
        idx = np.random.default_rng(seed).choice(self.spec.num_train, size=n, replace=False)
        return self.x[idx], self.y[idx]

    def train(self, shuffle=True):
        return tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(self.batch_size)


def weights_snapshot(model):
    return [(v.name, np.array(v.numpy(), copy=True)) for v in model.weights]
