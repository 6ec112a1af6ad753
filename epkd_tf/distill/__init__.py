"""Knowledge distillation: the :class:`Distiller` model and temperature schedules.

The schedules are light (settings are validated with them before TensorFlow loads); the
Distiller is imported on first use.
"""
import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# The distillation modes are settings' choices, declared with the settings.
from epkd_tf.config import BATCHNORM_MODES
from epkd_tf.distill.temperature import (SCHEDULES, ConstantTemperature, LinearTemperature,
                                         make_schedule, register_schedule)

__all__ = ["Distiller", "BATCHNORM_MODES", "LinearTemperature", "ConstantTemperature",
           "make_schedule", "register_schedule", "SCHEDULES"]


def __getattr__(name):
    if name == "Distiller":
        from epkd_tf.distill.distiller import Distiller
        return Distiller
    raise AttributeError(f"module 'epkd_tf.distill' has no attribute {name!r}")
