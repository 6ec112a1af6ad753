"""Pruning methods. Importing this package registers every built-in pruner.

The pruner modules import TensorFlow only when they run, so the registry (and the flags
derived from each pruner's settings) is available before TensorFlow loads; the shared
machinery (plan, correlation) is imported on first use.
"""
from epkd_tf.pruning import l1, magnitude, oracle, taylor  # noqa: F401  (registration)
from epkd_tf.pruning.base import (Candidate, Pruner, PruningContext, StructuredPruner,
                                  normalise_per_block, unit_to_group_mean)
from epkd_tf.pruning.registry import PRUNERS, make_pruner, pruner_names, register_pruner

_LAZY = {"criteria_correlation": "epkd_tf.pruning.correlation",
         "Plan": "epkd_tf.pruning.plan", "PruningError": "epkd_tf.pruning.plan",
         "plan_removal": "epkd_tf.pruning.plan", "removal_order": "epkd_tf.pruning.plan"}

__all__ = ["Candidate", "Pruner", "PruningContext", "StructuredPruner", "PRUNERS",
           "make_pruner", "pruner_names", "register_pruner", "normalise_per_block",
           "unit_to_group_mean", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'epkd_tf.pruning' has no attribute {name!r}")
