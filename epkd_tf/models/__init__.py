"""Teacher architectures. Importing this package registers every built-in model."""
from epkd_tf.models import lenet  # noqa: F401  (registers the LeNets)
from epkd_tf.models.registry import build_model, model_names, register_model

__all__ = ["build_model", "model_names", "register_model"]
