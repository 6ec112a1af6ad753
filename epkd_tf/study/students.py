"""Small student architectures sized to a parameter budget (the ``distill`` and
``scratch`` methods of the study).

Each teacher maps to a student family: a registered model built at a width multiplier.
LeNet-300-100 and LeNet-5 students are the same nets made narrower; ResNets get plain
convnets (4 conv + 2 dense). Any other teacher's family is its own architecture.
"""
from __future__ import annotations

from typing import Tuple

import epkd_tf  # noqa: F401
import tf_keras

from epkd_tf.models import build_model
from epkd_tf.registry import Registry

#: Teacher name -> the registered model its students are narrower versions of (teachers
#: not listed are their own family).
STUDENT_FAMILIES: Registry[str] = Registry("student family")


def register_student_family(teacher: str, family: str) -> None:
    """Students of ``teacher`` in the study are ``family`` (a registered model) at a width.
    ValueError if ``teacher`` already has a family."""
    STUDENT_FAMILIES.register(teacher, family)


for _teacher in ("resnet18", "resnet34", "resnet50"):
    register_student_family(_teacher, "plain_convnet")


def student_family(teacher: str) -> str:
    """The registered model whose narrower versions are ``teacher``'s students."""
    return STUDENT_FAMILIES.get(teacher) if teacher in STUDENT_FAMILIES else teacher


def sized_student(teacher: str, input_shape, num_classes: int,
                  budget: int) -> Tuple[tf_keras.Model, float]:
    """The widest student of ``teacher``'s family with at most ``budget`` parameters, and
    its width multiplier (bisection on the width; counts grow with the width).

    Raises ValueError if even the narrowest (one unit per hidden layer) is over budget.
    """
    family = student_family(teacher)

    def count(width: float) -> int:
        return build_model(family, input_shape, num_classes, width=width).count_params()

    low, high = 1e-3, 1.0
    if count(low) > budget:
        raise ValueError(f"no {family} student fits in {budget} parameters: the narrowest "
                         f"has {count(low)}.")
    while count(high) <= budget:
        low, high = high, high * 2
    for _ in range(40):
        middle = (low + high) / 2
        if count(middle) <= budget:
            low = middle
        else:
            high = middle
    return build_model(family, input_shape, num_classes, width=low), low
