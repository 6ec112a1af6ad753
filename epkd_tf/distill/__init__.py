"""Knowledge distillation: the :class:`Distiller` model and temperature schedules."""
import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

from epkd_tf.distill.distiller import Distiller
from epkd_tf.distill.temperature import (SCHEDULES, ConstantTemperature, LinearTemperature,
                                         make_schedule, register_schedule)

__all__ = ["Distiller", "LinearTemperature", "ConstantTemperature", "make_schedule",
           "register_schedule", "SCHEDULES"]
