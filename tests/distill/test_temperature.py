"""Tests for epkd_tf.distill.temperature."""
import epkd_tf  # noqa: F401

import pytest

from epkd_tf.distill.temperature import (SCHEDULES, ConstantTemperature, LinearTemperature,
                                         make_schedule, register_schedule)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("iteration,expected", [(1, 50.0), (2, 45.0), (10, 5.0), (11, 1.0),
                                                (20, 1.0), (1000, 1.0)])
def test_linear_defaults(iteration, expected):
    assert LinearTemperature()(iteration) == expected


def test_linear_custom_and_clamp():
    sched = LinearTemperature(start=10.0, step=3.0, minimum=2.0)
    assert [sched(i) for i in range(1, 6)] == [10.0, 7.0, 4.0, 2.0, 2.0]
    assert LinearTemperature(start=4.0, step=0.0, minimum=1.0)(99) == 4.0


def test_constant():
    sched = ConstantTemperature(3.5)
    assert sched(1) == 3.5 and sched(50) == 3.5


@pytest.mark.parametrize("kwargs,arg", [
    ({"start": 0.0}, "start"), ({"start": -1.0}, "start"), ({"step": -1.0}, "step"),
    ({"minimum": 0.0}, "minimum"), ({"start": 5.0, "minimum": 6.0}, "minimum"),
    ({"start": "50"}, "start"), ({"step": float("nan")}, "step"),
])
def test_linear_invalid_arguments_name_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        LinearTemperature(**kwargs)


@pytest.mark.parametrize("value", [0.0, -2.0, True, "3"])
def test_constant_invalid(value):
    with pytest.raises(ValueError, match="value"):
        ConstantTemperature(value)


@pytest.mark.parametrize("iteration", [0, -1, 1.5, True])
def test_invalid_iteration(iteration):
    with pytest.raises(ValueError, match="iteration"):
        LinearTemperature()(iteration)
    with pytest.raises(ValueError, match="iteration"):
        ConstantTemperature(2.0)(iteration)


def test_schedules_are_frozen():
    sched = LinearTemperature()
    with pytest.raises(Exception):
        sched.start = 3.0  # type: ignore[misc]


def test_make_schedule():
    assert make_schedule("linear", start=20.0, step=2.0, minimum=1.0)(3) == 16.0
    assert make_schedule("linear") == LinearTemperature()
    assert make_schedule("constant", value=4.0)(7) == 4.0
    assert set(SCHEDULES) >= {"linear", "constant"}


def test_make_schedule_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match="cosine") as info:
        make_schedule("cosine")
    assert "constant" in str(info.value) and "linear" in str(info.value)


def test_make_schedule_bad_params():
    with pytest.raises(ValueError, match="linear"):
        make_schedule("linear", begin=3.0)
    with pytest.raises(ValueError, match="start"):
        make_schedule("linear", start=-3.0)


def test_register_duplicate_name_rejected():
    with pytest.raises(ValueError, match="linear"):
        register_schedule("linear")(type("Other", (), {}))
