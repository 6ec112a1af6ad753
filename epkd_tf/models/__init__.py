"""Teacher architectures. Importing this package registers every built-in model."""
# Each module registers its models on import.
from epkd_tf.models import (alexnet, inception, lenet, mobilenet, plain,  # noqa: F401
                            resnet, vgg)
from epkd_tf.models.registry import (application_names, build_model, model_names,
                                     register_model)

__all__ = ["application_names", "build_model", "model_names", "register_model"]
