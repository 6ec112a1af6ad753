"""tf_keras equivalents of the few Keras 3 computations that tf_keras lacks.

``keras.applications`` models use them: the ``hard_silu`` activation (MobileNetV3), the
``LayerScale`` layer of ``keras.src.applications.convnext`` and the ``CustomScaleLayer``
of ``keras.src.applications.inception_resnet_v2``. They are epkd_tf's own code, written
to compute exactly what Keras 3's TensorFlow backend computes (the same operations in the
same order), and registered in tf_keras' global custom objects under Keras 3's names, so
that converted models save, reload, clone and prune like any other. The conversion
(:mod:`epkd_tf.models.keras3`) maps them to the Keras 3 originals by exact class name and
module; nothing here is ever looked up from a file.
"""
from __future__ import annotations

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras


def hard_silu(x):
    """Keras 3's ``hard_silu`` (alias ``hard_swish``): ``x * relu6(x + 3) / 6``.

    tf_keras' own ``hard_sigmoid`` is ``clip(0.2 x + 0.5, 0, 1)``, a different function,
    so it cannot stand in. The operations are those of Keras 3's TensorFlow backend
    (``relu6(x + 3) / 6``, then ``x *``), so the results are the same to the bit."""
    x = tf.convert_to_tensor(x)
    return x * (tf.nn.relu6(x + tf.constant(3.0, x.dtype)) / tf.constant(6.0, x.dtype))


class LayerScale(tf_keras.layers.Layer):
    """ConvNeXt's LayerScale: multiplies each channel by its learned ``gamma``
    (``projection_dim`` of them). Same config keys as Keras 3's."""

    def __init__(self, init_values, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.init_values = init_values
        self.projection_dim = projection_dim

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(self.projection_dim,),
            initializer=tf_keras.initializers.Constant(self.init_values), trainable=True)
        super().build(input_shape)

    def call(self, x):
        return x * self.gamma

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values,
                "projection_dim": self.projection_dim}


class CustomScaleLayer(tf_keras.layers.Layer):
    """InceptionResNetV2's residual merge: ``inputs[0] + inputs[1] * scale``."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return inputs[0] + inputs[1] * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


#: The tf_keras classes above, by the Keras 3 class name they stand for.
LAYER_CLASSES = {"LayerScale": LayerScale, "CustomScaleLayer": CustomScaleLayer}

# Registered under Keras 3's plain names (not "epkd_tf>..."): the tf_keras config then
# names them as the Keras 3 file does, and any process that imports epkd_tf reloads them.
tf_keras.utils.get_custom_objects().update({"hard_silu": hard_silu, **LAYER_CLASSES})
