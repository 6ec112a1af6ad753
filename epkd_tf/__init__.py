"""epkd_tf: Evolutionary Pruning and Knowledge Distillation for TensorFlow / Keras 2.

Importing the package selects Keras 2 (``tf_keras``) for TensorFlow before TensorFlow is
imported anywhere: TF-MOT only works with Keras 2, and TF 2.21 otherwise binds
``tf.keras`` to Keras 3.
"""
import os

# Must run before the first `import tensorflow` in the process.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
