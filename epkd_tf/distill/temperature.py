"""Temperature schedules for knowledge distillation.

A schedule maps a 1-based iteration number (one EPKD prune-and-distill round) to the
softmax temperature used for that round. Schedules are small frozen objects registered
by name so that configuration code can build them from a string plus keyword
parameters via :func:`make_schedule`.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable, Type

from epkd_tf.registry import Registry

#: Registered schedule classes by name.
SCHEDULES: Registry = Registry("temperature schedule")


def register_schedule(name: str) -> Callable[[Type], Type]:
    """Class decorator registering a temperature schedule under ``name`` in :data:`SCHEDULES`.

    Raises:
      ValueError: ``name`` is empty or already registered.
    """
    return SCHEDULES.register(name)


def make_schedule(name: str, **params):
    """Builds the schedule registered as ``name`` with keyword ``params``.

    Example: ``make_schedule("linear", start=50.0, step=5.0, minimum=1.0)`` or
    ``make_schedule("constant", value=4.0)``.

    Raises:
      ValueError: ``name`` is not registered (the message lists the allowed names), or a
        parameter is invalid.
    """
    cls = SCHEDULES.get(name)
    try:
        return cls(**params)
    except TypeError as err:
        # Unknown/missing keyword arguments surface as TypeError; re-raise as a clear
        # configuration error naming the schedule.
        raise ValueError(f"Bad parameters {sorted(params)} for temperature schedule "
                         f"name={name!r}: {err}.") from err


def schedule_from_settings(name: str, start: float, step: float, minimum: float):
    """Builds schedule ``name`` from the run's --temperature_* settings.

    Every registered schedule provides ``from_settings(start, step, minimum)`` and uses
    what applies to it, so callers need not know which schedule they hold.
    """
    return SCHEDULES.get(name).from_settings(start=start, step=step, minimum=minimum)


def _check_number(name: str, value) -> float:
    # bool is an Integral subclass; True as a temperature is almost certainly a bug.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} is invalid: must be a real number.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is invalid: must be finite.")
    return value


def _check_iteration(iteration) -> int:
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral):
        raise ValueError(f"iteration={iteration!r} is invalid: must be an integer >= 1.")
    if iteration < 1:
        raise ValueError(f"iteration={iteration!r} is invalid: iterations are numbered "
                         f"from 1.")
    return int(iteration)


@register_schedule("linear")
@dataclasses.dataclass(frozen=True)
class LinearTemperature:
    """Linearly decaying temperature: ``max(minimum, start - step * (iteration - 1))``.

    With the defaults, iteration 1 -> 50, 2 -> 45, ..., 10 -> 5, and from iteration 11
    on the value is clamped at 1.

    Args:
      start: temperature at iteration 1 (> 0).
      step: decrease per iteration (>= 0).
      minimum: lower clamp (> 0 and <= start).
    """

    start: float = 50.0
    step: float = 5.0
    minimum: float = 1.0

    def __post_init__(self):
        start = _check_number("start", self.start)
        step = _check_number("step", self.step)
        minimum = _check_number("minimum", self.minimum)
        if start <= 0:
            raise ValueError(f"start={self.start!r} is invalid: temperatures must be > 0.")
        if step < 0:
            raise ValueError(f"step={self.step!r} is invalid: must be >= 0.")
        if minimum <= 0:
            raise ValueError(f"minimum={self.minimum!r} is invalid: temperatures must be > 0.")
        if minimum > start:
            raise ValueError(f"minimum={self.minimum!r} is invalid: must be <= "
                             f"start={self.start!r}.")
        # Normalise to float so equality/hash do not depend on int-vs-float inputs.
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "minimum", minimum)

    @classmethod
    def from_settings(cls, start: float, step: float, minimum: float) -> "LinearTemperature":
        """Built from the --temperature_start/_step/_min flags."""
        return cls(start=start, step=step, minimum=minimum)

    def __call__(self, iteration: int) -> float:
        """Temperature for the 1-based ``iteration``; raises ValueError if iteration < 1."""
        iteration = _check_iteration(iteration)
        return max(self.minimum, self.start - self.step * (iteration - 1))


@register_schedule("constant")
@dataclasses.dataclass(frozen=True)
class ConstantTemperature:
    """The same temperature ``value`` (> 0) at every iteration."""

    value: float

    def __post_init__(self):
        value = _check_number("value", self.value)
        if value <= 0:
            raise ValueError(f"value={self.value!r} is invalid: temperatures must be > 0.")
        object.__setattr__(self, "value", value)

    @classmethod
    def from_settings(cls, start: float, step: float, minimum: float) -> "ConstantTemperature":
        """Built from the flags: the constant is --temperature_start."""
        return cls(value=start)

    def __call__(self, iteration: int) -> float:
        """Returns ``value``; raises ValueError if ``iteration`` < 1 (for consistency)."""
        _check_iteration(iteration)
        return self.value
