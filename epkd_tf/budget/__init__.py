"""Budgets: the measure in which EPKD shrinks a network (``measures.py``), whether its
targets are reachable before a run starts (``feasibility.py``), and when a run stops and
which student is final (``stop.py``)."""
from epkd_tf.budget.measures import (MEASURES, Measure, MeasureContext,  # noqa: F401
                                     make_measure, multiply_accumulates, register_measure)
from epkd_tf.budget.stop import Goal, StopRules  # noqa: F401
