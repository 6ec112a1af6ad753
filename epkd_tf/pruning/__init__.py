"""Pruning methods. Importing this package registers every built-in pruner."""
from epkd_tf.pruning import l1, magnitude, oracle, taylor  # noqa: F401  (registration)
from epkd_tf.pruning.base import (Candidate, Pruner, PruningContext, StructuredPruner,
                                  normalise_per_block, unit_to_group_mean)
from epkd_tf.pruning.correlation import criteria_correlation
from epkd_tf.pruning.plan import Plan, PruningError, plan_removal, removal_order
from epkd_tf.pruning.registry import make_pruner, pruner_names, register_pruner

__all__ = ["Candidate", "Pruner", "PruningContext", "StructuredPruner", "criteria_correlation",
           "Plan", "PruningError", "plan_removal", "removal_order", "make_pruner",
           "pruner_names", "register_pruner", "normalise_per_block", "unit_to_group_mean"]
